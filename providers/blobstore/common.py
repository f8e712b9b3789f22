"""``wasi:blobstore@0.2.0-draft`` over a pluggable backend: the part every blobstore shares.

One ``BlobstoreService`` serves the three interfaces a guest imports — ``blobstore``
(containers by name, copy, move), ``container`` (the ``container`` and ``stream-object-names``
resources) and ``types`` (``outgoing-value``, ``incoming-value``) — so it is registered once
per interface. A backend (``FsBackend``, ``NatsBackend``) only moves bytes; names, ranges,
timeouts and error strings are handled here, identically for every backend.

Limits, on purpose:

- ``wasi:io`` streams belong to the host's native WASI, which Python cannot hand a stream it
  made. ``incoming-value-consume-async`` therefore returns ``Err("streams not supported; …")``
  and ``outgoing-value-write-body`` returns its payload-less ``Err``. Reads use
  ``incoming-value-consume-sync``; writes use the Trellis extension
  ``[method]outgoing-value.outgoing-value-write-body-sync(data: list<u8>) -> result<_, error>``
  (a guest declares it in its own WIT) or, from Python, ``OutgoingValue.write``.
- ``write-data`` binds an outgoing value to an object; the bytes are stored when the guest calls
  ``finish`` (the order wasi:blobstore guests use: new, write-data, write body, finish).
- ``get-data`` offsets are inclusive (as the WIT documents them) and clamped to the object, so
  ``get-data(name, 0, u64::MAX)`` reads it whole. Timestamps are seconds since the Unix epoch.
- The WIT shape was written from wasmCloud's use of the draft, without a copy at hand: every
  method tolerates being called as a plain function or a method, and errors are plain strings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, Protocol, TypeVar

from ...lattice.wit.values import Err, Ok

T = TypeVar("T")
log = logging.getLogger("trellis.provider.blobstore")

STREAMS_UNSUPPORTED = "streams not supported; use incoming-value-consume-sync"
DEFAULT_TIMEOUT = 10.0
"""Seconds a single backend operation may take before the guest gets an error."""
U64_MAX = 2**64 - 1


class BlobError(Exception):
    """A failure the guest sees as the interface's ``error`` string (the message, verbatim)."""


class Backend(Protocol):
    """Where the bytes live. Raise ``BlobError`` for expected failures (missing object...)."""

    async def create_container(self, name: str) -> None: ...
    async def container_created_at(self, name: str) -> int: ...
    async def delete_container(self, name: str) -> None: ...
    async def container_exists(self, name: str) -> bool: ...
    async def read(self, container: str, name: str, start: int, stop: int) -> bytes: ...
    async def write(self, container: str, name: str, data: bytes) -> None: ...
    async def list_objects(self, container: str) -> list[str]: ...
    async def delete_object(self, container: str, name: str) -> None: ...
    async def has_object(self, container: str, name: str) -> bool: ...
    async def object_info(self, container: str, name: str) -> tuple[int, int]:
        """``(created_at, size)``."""
        ...
    async def clear(self, container: str) -> None: ...
    async def copy_object(self, src: tuple[str, str], dest: tuple[str, str]) -> None: ...
    async def move_object(self, src: tuple[str, str], dest: tuple[str, str]) -> None: ...


def parse_timeout(config: dict[str, str]) -> float:
    from ..sdk import ProviderError

    raw = config.get("timeout", str(DEFAULT_TIMEOUT))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ProviderError(f"timeout must be a positive number of seconds, got {raw!r}")
    return value


def _object_id(value: Any) -> tuple[str, str]:
    """An ``object-id`` record (``{"container", "object"}``); a 2-tuple is accepted too."""
    if isinstance(value, dict):
        return str(value["container"]), str(value["object"])
    container, name = value
    return str(container), str(name)


class IncomingValue:
    """Bytes read by ``get-data``; held by the value, whatever happens to the object later."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @staticmethod
    def incoming_value_consume_sync(this: IncomingValue) -> Ok:
        return Ok(this.data)

    @staticmethod
    def incoming_value_consume_async(this: IncomingValue) -> Err:
        return Err(STREAMS_UNSUPPORTED)

    def size(self) -> int:
        return len(self.data)


class OutgoingValue:
    """Bytes on their way into one or more objects (``write-data``), stored by ``finish``."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.targets: list[Container] = []
        self.names: list[str] = []
        self.finished = False

    @staticmethod
    def new_outgoing_value() -> OutgoingValue:
        return OutgoingValue()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append to the body (Python callers; guests use ``…-write-body-sync``)."""
        if self.finished:
            raise BlobError("outgoing value is already finished")
        self.buffer += data

    def outgoing_value_write_body_sync(self, data: bytes) -> Ok | Err:
        """Trellis extension: the body in one call, since ``output-stream`` is unavailable."""
        try:
            self.write(data)
        except BlobError as exc:
            return Err(str(exc))
        return Ok(None)

    def outgoing_value_write_body(self) -> Err:
        log.warning("outgoing-value-write-body: %s (write with outgoing-value-write-body-sync)",
                    STREAMS_UNSUPPORTED)
        return Err(None)  # the WIT error side has no payload

    @staticmethod
    async def finish(this: OutgoingValue) -> Ok | Err:
        if this.finished:
            return Err("outgoing value is already finished")
        this.finished = True
        data = bytes(this.buffer)
        for container, name in zip(this.targets, this.names, strict=True):
            done = await container.service.guard(
                "write-data", container.service.backend.write(container.container_name, name, data))
            if isinstance(done, Err):
                return done
        return Ok(None)


class StreamObjectNames:
    """The names ``list-objects`` found, handed out in pieces."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = list(names)
        self.pos = 0

    def read_stream_object_names(self, length: int) -> Ok:
        chunk = self.names[self.pos:self.pos + length]
        self.pos += len(chunk)
        return Ok((chunk, self.pos >= len(self.names)))

    def skip_stream_object_names(self, num: int) -> Ok:
        skipped = min(num, len(self.names) - self.pos)
        self.pos += skipped
        return Ok((skipped, self.pos >= len(self.names)))


class Container:
    """An existing container; its methods check nothing up front (the backend does)."""

    def __init__(self, service: BlobstoreService, name: str) -> None:
        self.service = service
        self.container_name = name

    def name(self) -> Ok:
        return Ok(self.container_name)

    async def info(self) -> Ok | Err:
        svc = self.service
        got = await svc.guard("info", svc.backend.container_created_at(self.container_name))
        if isinstance(got, Err):
            return got
        return Ok({"name": self.container_name, "created-at": got.value})

    async def get_data(self, name: str, start: int, end: int) -> Ok | Err:
        if end < start:
            return Err(f"get-data: end ({end}) is before start ({start})")
        stop = end + 1 if end < U64_MAX else end
        got = await self.service.guard(
            "get-data", self.service.backend.read(self.container_name, name, start, stop))
        return Ok(IncomingValue(got.value)) if isinstance(got, Ok) else got

    async def write_data(self, name: str, data: OutgoingValue) -> Ok | Err:
        if data.finished:
            return Err("write-data: the outgoing value is already finished")
        data.targets.append(self)
        data.names.append(name)
        return Ok(None)

    async def write(self, name: str, data: bytes) -> Ok | Err:
        """Store ``data`` as ``name`` at once (Python callers)."""
        backend = self.service.backend
        return await self.service.guard("write", backend.write(self.container_name, name,
                                                               bytes(data)))

    async def list_objects(self) -> Ok | Err:
        got = await self.service.guard("list-objects", self.service.backend.list_objects(
            self.container_name))
        return Ok(StreamObjectNames(got.value)) if isinstance(got, Ok) else got

    async def delete_object(self, name: str) -> Ok | Err:
        return await self.service.guard(
            "delete-object", self.service.backend.delete_object(self.container_name, name))

    async def delete_objects(self, names: list[str]) -> Ok | Err:
        for name in names:
            done = await self.delete_object(name)
            if isinstance(done, Err):
                return done
        return Ok(None)

    async def has_object(self, name: str) -> Ok | Err:
        return await self.service.guard(
            "has-object", self.service.backend.has_object(self.container_name, name))

    async def object_info(self, name: str) -> Ok | Err:
        got = await self.service.guard(
            "object-info", self.service.backend.object_info(self.container_name, name))
        if isinstance(got, Err):
            return got
        created, size = got.value
        return Ok({"name": name, "container": self.container_name, "created-at": created,
                   "size": size})

    async def clear(self) -> Ok | Err:
        return await self.service.guard("clear", self.service.backend.clear(self.container_name))


class BlobstoreService:
    """The implementation object of ``wasi:blobstore/{blobstore,container,types}``."""

    resources = {
        "container": Container,
        "stream-object-names": StreamObjectNames,
        "outgoing-value": OutgoingValue,
        "incoming-value": IncomingValue,
    }

    def __init__(self, backend: Backend, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.backend = backend
        self.timeout = timeout

    async def guard(self, op: str, work: Awaitable[T]) -> Ok | Err:
        """``Ok(result)``, or ``Err(message)`` for a backend failure or timeout: a blobstore
        call never raises into the guest and never waits forever."""
        try:
            return Ok(await asyncio.wait_for(work, self.timeout))
        except BlobError as exc:
            return Err(str(exc))
        except TimeoutError:
            return Err(f"{op} timed out after {self.timeout:g}s")
        except Exception as exc:  # a backend bug or outage: the guest gets the message
            log.warning("blobstore %s failed", op, exc_info=True)
            return Err(f"{op} failed: {type(exc).__name__}: {exc}")

    def container(self, name: str) -> Container:
        return Container(self, name)

    async def create_container(self, name: str) -> Ok | Err:
        done = await self.guard("create-container", self.backend.create_container(name))
        return Ok(self.container(name)) if isinstance(done, Ok) else done

    async def get_container(self, name: str) -> Ok | Err:
        found = await self.guard("get-container", self.backend.container_exists(name))
        if isinstance(found, Err):
            return found
        if not found.value:
            return Err(f"container {name!r} does not exist")
        return Ok(self.container(name))

    async def delete_container(self, name: str) -> Ok | Err:
        return await self.guard("delete-container", self.backend.delete_container(name))

    async def container_exists(self, name: str) -> Ok | Err:
        return await self.guard("container-exists", self.backend.container_exists(name))

    async def copy_object(self, src: Any, dest: Any) -> Ok | Err:
        return await self.guard("copy-object", self.backend.copy_object(_object_id(src),
                                                                        _object_id(dest)))

    async def move_object(self, src: Any, dest: Any) -> Ok | Err:
        return await self.guard("move-object", self.backend.move_object(_object_id(src),
                                                                        _object_id(dest)))
