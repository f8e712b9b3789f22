"""``blobstore-nats``: one JetStream object store per container.

The bucket of container ``c`` is ``{prefix}{escape(c)}``; ``prefix`` defaults to
``trellis-blob-{escape(lattice)}-`` so lattices sharing a NATS deployment never share
containers. ``escape`` keeps ASCII letters and digits and writes every other UTF-8 byte as
``_xx`` (hex), so any container name maps to a valid bucket name and back, unambiguously.

Config: ``prefix``, ``timeout`` (seconds per operation), ``replicas``, and ``url`` — used only
when the provider runs without a host's NATS connection (``context.nc``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import nats
from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from ..sdk import Link, Provider, ProviderContext, ProviderError
from .common import BlobError, BlobstoreService, parse_timeout

_PLAIN = re.compile(rb"[A-Za-z0-9]")
MAX_BUCKET = 200
"""JetStream keeps a stream per bucket in a directory named after it: stay under 255 bytes."""


def escape(name: str) -> str:
    """``my.container`` → ``my_2econtainer``: a valid, reversible bucket-name fragment."""
    return "".join(chr(b) if _PLAIN.match(bytes([b])) else f"_{b:02x}"
                   for b in name.encode("utf-8"))


def unescape(fragment: str) -> str:
    """The inverse of ``escape``."""
    out = bytearray()
    i = 0
    while i < len(fragment):
        if fragment[i] == "_":
            out.append(int(fragment[i + 1:i + 3], 16))
            i += 3
        else:
            out += fragment[i].encode()
            i += 1
    return out.decode("utf-8")


def _epoch(value: Any) -> int:
    """Seconds since the epoch from a datetime or an RFC 3339 string (0 when unknown)."""
    if isinstance(value, dt.datetime):
        return int(value.timestamp())
    if isinstance(value, str) and value:
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
        try:
            return int(dt.datetime.fromisoformat(text).timestamp())
        except ValueError:
            return 0
    return 0


class NatsBackend:
    """Containers and objects in JetStream object stores."""

    def __init__(self, js: JetStreamContext, prefix: str, replicas: int = 1) -> None:
        self.js = js
        self.prefix = prefix
        self.replicas = replicas

    def bucket(self, container: str) -> str:
        if not container:
            raise BlobError("container name is empty")
        bucket = self.prefix + escape(container)
        if len(bucket) > MAX_BUCKET:
            raise BlobError(f"container name {container[:40]!r}… is too long for NATS "
                            f"({len(bucket)} > {MAX_BUCKET} characters once escaped)")
        return bucket

    async def _store(self, container: str) -> ObjectStore:
        try:
            return await self.js.object_store(self.bucket(container))
        except BucketNotFoundError:
            raise BlobError(f"container {container!r} does not exist") from None

    def _missing(self, container: str, name: str) -> BlobError:
        return BlobError(f"object {name!r} not found in container {container!r}")

    async def create_container(self, name: str) -> None:
        if await self.container_exists(name):
            raise BlobError(f"container {name!r} already exists")
        await self.js.create_object_store(self.bucket(name), ObjectStoreConfig(
            description=f"trellis blobstore container {name}", replicas=self.replicas))

    async def container_created_at(self, name: str) -> int:
        try:
            info = await self.js.stream_info(f"OBJ_{self.bucket(name)}")
        except NotFoundError:
            raise BlobError(f"container {name!r} does not exist") from None
        return _epoch(info.created)

    async def delete_container(self, name: str) -> None:
        try:
            await self.js.delete_object_store(self.bucket(name))
        except NotFoundError:
            raise BlobError(f"container {name!r} does not exist") from None

    async def container_exists(self, name: str) -> bool:
        try:
            await self.js.stream_info(f"OBJ_{self.bucket(name)}")
        except NotFoundError:
            return False
        return True

    async def read(self, container: str, name: str, start: int, stop: int) -> bytes:
        store = await self._store(container)
        try:
            result = await store.get(name)
        except (ObjectNotFoundError, NotFoundError):
            raise self._missing(container, name) from None
        return bytes(result.data or b"")[start:stop]

    async def write(self, container: str, name: str, data: bytes) -> None:
        await (await self._store(container)).put(name, data)

    async def list_objects(self, container: str) -> list[str]:
        store = await self._store(container)
        try:
            infos = await store.list(ignore_deletes=True)
        except NotFoundError:
            return []
        return sorted(i.name for i in infos if not i.deleted)

    async def delete_object(self, container: str, name: str) -> None:
        store = await self._store(container)
        try:
            await store.delete(name)
        except (ObjectNotFoundError, NotFoundError):
            return  # deleting what is not there is not an error

    async def has_object(self, container: str, name: str) -> bool:
        store = await self._store(container)
        try:
            await store.get_info(name)
        except (ObjectNotFoundError, NotFoundError):
            return False
        return True

    async def object_info(self, container: str, name: str) -> tuple[int, int]:
        store = await self._store(container)
        try:
            info = await store.get_info(name)
        except (ObjectNotFoundError, NotFoundError):
            raise self._missing(container, name) from None
        return _epoch(info.mtime), int(info.size or 0)

    async def clear(self, container: str) -> None:
        await self._store(container)
        await self.js.purge_stream(f"OBJ_{self.bucket(container)}")

    async def copy_object(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        data = await self.read(*src, 0, 2**64)
        await self._store(dest[0])  # the destination container must exist
        await self.write(*dest, data)

    async def move_object(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        if src == dest:
            await self.read(*src, 0, 0)  # only check that it exists
            return
        await self.copy_object(src, dest)
        await self.delete_object(*src)


class NatsBlobstore(Provider):
    """``wasi:blobstore`` on JetStream object stores of the lattice's NATS."""

    name = "blobstore-nats"
    interfaces = ("wasi:blobstore/blobstore", "wasi:blobstore/container", "wasi:blobstore/types")

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.service: BlobstoreService | None = None
        self._own_nc: Any = None

    async def start(self, context: ProviderContext) -> None:
        await super().start(context)
        timeout = parse_timeout(self.config)
        try:
            replicas = int(self.config.get("replicas", "1"))
        except ValueError:
            replicas = 0
        if replicas < 1:
            raise ProviderError(f"replicas must be an integer >= 1, got "
                                f"{self.config.get('replicas')!r}")
        nc = context.nc
        if nc is None:
            url = self.config.get("url")
            if not url:
                raise ProviderError("blobstore-nats needs a NATS connection: run it in a host on "
                                    "a lattice, or set url=nats://host:4222 in its config")
            try:
                nc = self._own_nc = await nats.connect(url, connect_timeout=timeout,
                                                       max_reconnect_attempts=1)
            except Exception as exc:
                raise ProviderError(f"blobstore-nats cannot connect to url={url!r}: {exc}") \
                    from exc
        prefix = self.config.get("prefix") or f"trellis-blob-{escape(context.lattice)}-"
        if not re.fullmatch(r"[A-Za-z0-9_-]*", prefix):
            raise ProviderError(f"prefix={prefix!r} is not valid in a bucket name: use letters, "
                                "digits, '-' and '_'")
        backend = NatsBackend(nc.jetstream(timeout=timeout), prefix, replicas)
        self.service = BlobstoreService(backend, timeout)

    async def stop(self) -> None:
        if self._own_nc is not None:
            await self._own_nc.close()
            self._own_nc = None

    def implementation(self, interface: str, link: Link) -> BlobstoreService:
        if self.service is None:
            raise ProviderError("blobstore-nats is not started: call start() first")
        return self.service
