"""``keyvalue-nats``: ``wasi:keyvalue`` on NATS JetStream key-value buckets (nats-py).

Each ``open(identifier)`` is the JetStream KV bucket ``{bucket_prefix}{identifier}``, created
on first use unless ``create_buckets=false`` (then a missing bucket is ``no-such-store``).
The connection is the host's (``ProviderContext.nc``) unless the provider config has
``url=nats://…``, in which case the provider makes (and closes) its own. Config (provider,
overridden per link by its target config, except ``url``):

- ``bucket_prefix=`` — prepended to identifiers, e.g. ``app1_`` (bucket names allow only
  ``[A-Za-z0-9_-]``; an identifier outside that is ``error::other``).
- ``create_buckets=true``, ``history=1``, ``replicas=1`` — how missing buckets are made.
- ``timeout=5`` — seconds any operation may take before the guest gets ``error::other``.
- ``page_size=1000`` — keys per ``list-keys`` page (the cursor is an offset in sorted keys).

Opened buckets are kept per name, so ``open`` costs no NATS round trip after the first. A bucket
deleted behind the provider's back is noticed by the next call on it (the stream is gone), which
fails with ``error::other`` saying so and forgets the kept bucket: the next ``open`` looks it up
again (and makes it anew, or answers ``no-such-store``, as ``create_buckets`` says).

``increment`` and ``cas``/``swap`` use KV revisions: an update is accepted only if the key is
still at the revision read (``Nats-Expected-Last-Subject-Sequence``); ``increment`` retries
that read-modify-write a bounded number of times under contention. See ``common.py`` for the
two WIT versions.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import nats
import nats.errors
import nats.js.errors as jse
from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from ..sdk import Link, Provider, ProviderContext, ProviderError
from .common import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TIMEOUT,
    INTERFACES,
    Bucket,
    KvError,
    bool_setting,
    float_setting,
    implementation_for,
    int_setting,
    no_such_store,
    other,
    parse_counter,
    settings,
)

INCREMENT_ATTEMPTS = 100
"""Read-modify-write rounds ``increment`` tries before reporting contention."""

LIST_QUIET = 2.0
"""Seconds without a message after which listing keys stops waiting for the stream's last."""
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_STREAM_NOT_FOUND = 10059
"""JetStream API error code: the bucket's stream does not exist."""
T = TypeVar("T")


def _stream_gone(exc: BaseException | None) -> bool:
    """Whether a JetStream error says the bucket's stream no longer exists."""
    if isinstance(exc, jse.NoStreamResponseError | nats.errors.NoRespondersError):
        return True  # a write (or a direct get) that no stream answered
    return isinstance(exc, jse.NotFoundError) and \
        getattr(exc, "err_code", None) == _STREAM_NOT_FOUND


class NatsBucket(Bucket):
    backend_errors: ClassVar[tuple[type[BaseException], ...]] = (nats.errors.Error,)

    def __init__(self, identifier: str, kv: KeyValue, *,
                 forget: Callable[[], None] = lambda: None, **kwargs: Any) -> None:
        super().__init__(identifier, **kwargs)
        self._kv = kv
        self._forget = forget
        """Drops the provider's kept bucket (it was deleted)."""

    def _gone(self) -> KvError:
        self._forget()
        return KvError(other(
            f"store {self.identifier!r} is gone: its JetStream bucket was deleted (or "
            "JetStream did not answer); open the store again"))

    async def _checked(self, work: Awaitable[T]) -> T:
        try:
            return await work
        except (jse.Error, nats.errors.NoRespondersError) as exc:
            if _stream_gone(exc):
                raise self._gone() from exc
            raise

    async def _entry(self, key: str) -> tuple[bytes | None, int]:
        """The value and revision; a missing key is ``None`` at the revision of its delete
        marker (0 if it never existed), which is what an update must name to recreate it."""
        try:
            entry = await self._checked(self._kv.get(key))
        except jse.KeyNotFoundError as exc:
            if _stream_gone(exc.__context__):  # nats-py reports a missing stream as this too
                raise self._gone() from exc
            marker = getattr(exc, "entry", None)
            return None, (marker.revision or 0) if marker is not None else 0
        return entry.value or b"", entry.revision or 0

    async def _get(self, key: str) -> bytes | None:
        return (await self._entry(key))[0]

    async def _set(self, key: str, value: bytes) -> None:
        await self._checked(self._kv.put(key, value))

    async def _delete(self, key: str) -> None:
        await self._checked(self._kv.delete(key))

    async def _list(self, cursor: int) -> tuple[list[str], int | None]:
        keys = sorted(await self._checked(self._keys()))
        end = cursor + self.page_size
        return keys[cursor:end], (end if end < len(keys) else None)

    async def _keys(self) -> list[str]:
        """Every live key. nats-py's ``KeyValue.keys()`` stops at the first message whose
        metadata says nothing more is pending, which its ordered consumer can report early
        (seen under load: 3 keys of 10). This reads up to the stream's last message instead:
        that one always comes (it is the last of its subject); the caller's deadline bounds it,
        and a quiet spell of ``LIST_QUIET`` seconds ends it too (the last message expired)."""
        state = (await self._kv.status()).stream_info.state
        if not state.messages:
            return []
        last = state.last_seq
        live: set[str] = set()
        watcher = await self._kv.watchall(meta_only=True)
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=LIST_QUIET)  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    break
                if entry is None:  # nats-py's own end marker: not trusted (see above)
                    continue
                if entry.operation in (KV_DEL, KV_PURGE):
                    live.discard(entry.key)
                else:
                    live.add(entry.key)
                if (entry.revision or 0) >= last:
                    break
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return list(live)

    async def _increment(self, key: str, delta: int) -> int:
        for _ in range(INCREMENT_ATTEMPTS):
            current, revision = await self._entry(key)
            value = parse_counter(current, f"key {key!r}") + delta
            if await self._cas_write(key, revision, str(value).encode()):
                return value
            await asyncio.sleep(random.uniform(0, 0.005))
        raise KvError(other(f"increment of key {key!r} lost {INCREMENT_ATTEMPTS} races; "
                            "too many concurrent writers"))

    async def _cas_read(self, key: str) -> tuple[bytes | None, int]:
        return await self._entry(key)

    async def _cas_write(self, key: str, token: int, value: bytes) -> bool:
        try:
            await self._checked(self._kv.update(key, value, last=token))
        except jse.KeyWrongLastSequenceError:
            return False
        return True


class NatsKeyValue(Provider):
    name = "keyvalue-nats"
    interfaces = INTERFACES

    def __init__(self, config: dict[str, str] | None = None) -> None:
        super().__init__(config)
        self._own_nc: Client | None = None
        self._nc: Client | None = None
        self._buckets: dict[str, KeyValue] = {}
        self._lock = asyncio.Lock()

    async def start(self, context: ProviderContext) -> None:
        await super().start(context)
        url = self.config.get("url")
        timeout = float_setting(self.config, "timeout", DEFAULT_TIMEOUT)
        if url:
            try:
                # One attempt at start (nats-py would retry an unreachable server forever),
                # then reconnect without limit: the provider outlives NATS restarts.
                nc = await nats.connect(
                    url, connect_timeout=timeout, max_reconnect_attempts=1,
                    reconnect_time_wait=0.1, error_cb=self._on_error,
                    name=f"trellis-{self.name}",
                )
                nc.options.update(max_reconnect_attempts=-1, reconnect_time_wait=2)
                self._own_nc = nc
            except Exception as exc:
                raise ProviderError(
                    f"keyvalue-nats cannot connect to url={url!r}: {exc}; check the address "
                    "and that nats-server runs with JetStream (-js)"
                ) from exc
            self._nc = self._own_nc
        elif context.nc is not None:
            self._nc = context.nc
        else:
            raise ProviderError(
                "keyvalue-nats needs NATS: run it in a host on a lattice or set url=nats://…"
            )

    async def _on_error(self, exc: Exception) -> None:
        self.log.warning("keyvalue-nats connection: %s", exc)

    async def stop(self) -> None:
        self._buckets.clear()
        own, self._own_nc, self._nc = self._own_nc, None, None
        if own is not None:
            await own.close()

    async def _bucket(self, name: str, config: dict[str, str], timeout: float) -> KeyValue:
        kv = self._buckets.get(name)
        if kv is not None:
            return kv
        if self._nc is None:
            raise KvError(other("keyvalue-nats is not started"))
        js = self._nc.jetstream(timeout=timeout)
        async with self._lock:  # one creation per bucket, even with concurrent opens
            kv = self._buckets.get(name)
            if kv is not None:
                return kv
            try:
                kv = await js.key_value(name)
            except jse.BucketNotFoundError:
                if not bool_setting(config, "create_buckets", True):
                    raise no_such_store() from None
                kv = await js.create_key_value(
                    bucket=name,
                    history=int_setting(config, "history", 1),
                    replicas=int_setting(config, "replicas", 1),
                )
            self._buckets[name] = kv
            return kv

    def implementation(self, interface: str, link: Link | None = None) -> Any:
        config = settings(self.config, link)
        timeout = float_setting(config, "timeout", DEFAULT_TIMEOUT)
        page_size = int_setting(config, "page_size", DEFAULT_PAGE_SIZE)
        prefix = config.get("bucket_prefix", "")
        bool_setting(config, "create_buckets", True)  # bad values fail at link time

        async def opener(identifier: str, version: str) -> NatsBucket:
            name = prefix + identifier
            if not _BUCKET_NAME.match(name):
                raise KvError(other(
                    f"store {identifier!r} maps to JetStream bucket {name!r}, which is not a "
                    "valid bucket name (letters, digits, '-' and '_' only)"))
            kv = await self._bucket(name, config, timeout)

            def forget() -> None:
                if self._buckets.get(name) is kv:
                    del self._buckets[name]

            return NatsBucket(identifier, kv, forget=forget, version=version, timeout=timeout,
                              page_size=page_size)

        return implementation_for(interface, opener, NatsBucket, timeout)
