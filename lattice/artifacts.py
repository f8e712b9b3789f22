"""The lattice's component artifact store: component binaries by digest, shared by every host.

::

    store = ArtifactStore(nc.jetstream(), "default")
    ref = await store.put(wasm, name="calc.wasm")     # "sha256:<64 hex>"; same bytes, same ref
    wasm = await store.get(ref)                       # verified against the digest
    path = await store.fetch_to_cache(ref, cache_dir) # <cache_dir>/artifacts/<hex>.wasm

Artifacts live in the JetStream object store ``artifacts_bucket(lattice)`` (created by the first
``put``), under the hex digest as object name, with the original file name as the object's
description. The layout is the standard NATS object store one (128 KiB chunks on
``$O.<bucket>.C.<nuid>``, a JSON entry on ``$O.<bucket>.M.<name>``), so ``nats object get`` and
other clients read these objects too. Reads and writes are done here rather than by nats-py's
``ObjectStore.get``/``put`` because those build the object by repeated ``bytes`` concatenation
(quadratic: ~1.8 s for 20 MB), wait for chunks with no deadline, and leave orphan chunks behind
when cancelled.

Resource handling: a failed or cancelled ``put`` purges the chunks it sent, after waiting
(briefly) for the ack of the one in flight, which JetStream could otherwise store behind the
purge. Two hosts putting the same new bytes at the same moment both upload; the later entry wins
and the other copy's chunks stay behind as dead weight (never as wrong data).

Error handling: every operation has a deadline (``timeout``). The object store's own digest only
proves the chunks match the entry; ``get`` also checks the bytes against the *reference*, so an
entry replaced under the same name is caught::

    TrellisError
    ├── ArtifactError
    │   ├── ArtifactRefError (ValueError)     not "sha256:" + 64 lowercase hex digits
    │   ├── ArtifactNotFound (LookupError)    no such artifact in this lattice
    │   ├── ArtifactCorrupt                   stored bytes or entry do not match the reference
    │   └── ArtifactCacheError (OSError)      the on-disk cache cannot be written
    └── LatticeError
        └── LatticeUnavailableError                  (lattice/errors.py)
            └── ArtifactStoreUnavailable             NATS/JetStream failed; cause in __cause__
                └── ArtifactStoreTimeout (TimeoutError)   not done before the deadline
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import MSG_ROLLUP_SUBJECT
from nats.js.object_store import (
    OBJ_ALL_META_PRE_TEMPLATE,
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_DIGEST_TEMPLATE,
    OBJ_META_PRE_TEMPLATE,
    OBJ_STREAM_TEMPLATE,
    ObjectStore,
)
from nats.nuid import NUID

from .errors import LatticeError, LatticeUnavailableError, TrellisError
from .subjects import artifacts_bucket, check_token

__all__ = [
    "CHUNK_SIZE",
    "REF_PREFIX",
    "ArtifactCacheError",
    "ArtifactCorrupt",
    "ArtifactError",
    "ArtifactInfo",
    "ArtifactNotFound",
    "ArtifactRefError",
    "ArtifactStore",
    "ArtifactStoreTimeout",
    "ArtifactStoreUnavailable",
    "artifact_ref",
    "parse_ref",
]

REF_PREFIX = "sha256:"
CHUNK_SIZE = 128 * 1024
"""Every NATS client's object store default; far below the 1 MiB default max_payload."""

_LOG = logging.getLogger(__name__)
_REF = re.compile(r"sha256:[0-9a-f]{64}")
_HASH_OFF_LOOP = 1 << 20  # hash bigger inputs on a thread: 20 MB takes ~15 ms
_CLEANUP_TIMEOUT = 2.0


# -- errors --------------------------------------------------------------------------------------


class ArtifactError(TrellisError):
    """Something about a component artifact: its reference, presence or bytes."""


class ArtifactRefError(ArtifactError, ValueError):
    def __init__(self, ref: object) -> None:
        self.ref = ref
        hint = ""
        if isinstance(ref, str):
            if re.fullmatch(r"[0-9a-fA-F]{64}", ref):
                hint = f"; did you mean '{REF_PREFIX}{ref.lower()}'?"
            elif re.fullmatch(r"sha256:[0-9a-fA-F]{64}", ref):
                hint = f"; write the digest in lowercase: {ref.lower()!r}"
        super().__init__(
            f"{ref!r} is not an artifact reference: expected 'sha256:' followed by 64 lowercase"
            f" hex digits{hint}"
        )


class ArtifactNotFound(ArtifactError, LookupError):
    def __init__(self, ref: str, lattice: str) -> None:
        self.ref, self.lattice = ref, lattice
        super().__init__(
            f"artifact {ref} is not in lattice {lattice!r}"
            " (put it into this lattice's artifact store first)"
        )


class ArtifactCorrupt(ArtifactError):
    """The stored artifact does not match its reference. ``actual`` is the reference of the bytes
    that were read, when they could be read at all."""

    def __init__(self, ref: str, lattice: str, detail: str, actual: str | None = None) -> None:
        self.ref, self.lattice, self.detail, self.actual = ref, lattice, detail, actual
        super().__init__(
            f"artifact {ref} in lattice {lattice!r} is corrupt: {detail}"
            " (put the original bytes again to repair it)"
        )


class ArtifactCacheError(ArtifactError, OSError):
    def __init__(self, path: Path, cause: OSError) -> None:
        self.path = path
        super().__init__(
            f"cannot write artifact cache file {path}: {cause.strerror or cause}"
            " (check that the cache directory is writable and has space)"
        )


class ArtifactStoreUnavailable(LatticeUnavailableError):
    """NATS or JetStream failed while doing ``action``; the NATS error is ``__cause__``.
    (``url`` is empty: a JetStream context does not say where it is connected.)"""

    def __init__(self, action: str, lattice: str, detail: str) -> None:
        self.action, self.lattice, self.detail, self.url = action, lattice, detail, ""
        LatticeError.__init__(self, f"cannot {action} in lattice {lattice!r}: {detail}")


class ArtifactStoreTimeout(ArtifactStoreUnavailable, TimeoutError):
    def __init__(self, action: str, lattice: str, timeout: float, ours: bool) -> None:
        self.timeout = timeout
        detail = (
            f"not done within its {timeout:g}s deadline" if ours
            else "a JetStream request got no answer in time"
        )
        super().__init__(action, lattice, f"{detail} (check the NATS connection, or raise the"
                         " timeout for large artifacts)")


def _explain(exc: nats.errors.Error) -> str:
    if isinstance(exc, (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError,
                        nats.js.errors.NoStreamResponseError)):
        return ("no JetStream answered (is JetStream enabled on the NATS server? start it with"
                " -js)")
    if isinstance(exc, nats.errors.ConnectionClosedError):
        return "the NATS connection is closed"
    return str(exc) or type(exc).__name__


# -- references ----------------------------------------------------------------------------------


def parse_ref(ref: object) -> str:
    """The hex digest of an artifact reference.

    Raises:
        ArtifactRefError: ``ref`` is not ``sha256:`` followed by 64 lowercase hex digits.
    """
    if not isinstance(ref, str) or not _REF.fullmatch(ref):
        raise ArtifactRefError(ref)
    return ref[len(REF_PREFIX):]


def artifact_ref(data: bytes | bytearray | memoryview) -> str:
    """The reference ``put`` gives these bytes."""
    return REF_PREFIX + hashlib.sha256(data).hexdigest()


async def _sha256(data: bytes) -> bytes:
    if len(data) < _HASH_OFF_LOOP:
        return hashlib.sha256(data).digest()
    return await asyncio.to_thread(lambda: hashlib.sha256(data).digest())


def _left(deadline: asyncio.Timeout) -> float:
    """Seconds left before ``deadline``, for waits on messages. Python 3.11's ``asyncio.wait_for``
    (which nats-py uses) can swallow the cancellation by which the deadline fires, so each wait
    is bounded by what is left as well."""
    when = deadline.when()
    left = 1e9 if when is None else when - asyncio.get_running_loop().time()
    if left <= 0:
        raise TimeoutError
    return left


def _spawn(publish: Coroutine[Any, Any, api.PubAck]) -> asyncio.Task[api.PubAck]:
    task = asyncio.ensure_future(publish)
    # An abandoned publish may fail later; its error is expected, not "never retrieved".
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


async def _finish_anyway(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run a (self-bounded) cleanup to its end even if cancelled meanwhile: a deadline that fires
    during the cleanup must not cut it short. The cancellation is passed on afterwards."""
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


async def _unsubscribe(sub: JetStreamContext.PushSubscription) -> None:
    with contextlib.suppress(nats.errors.Error):
        await sub.unsubscribe()


async def _unsubscribe_when_made(
        subscribing: asyncio.Future[JetStreamContext.PushSubscription]) -> None:
    done, _ = await asyncio.wait({subscribing}, timeout=_CLEANUP_TIMEOUT)
    if done and not subscribing.cancelled() and subscribing.exception() is None:
        await _unsubscribe(subscribing.result())


async def _settled(publish: asyncio.Task[api.PubAck]) -> bool:
    """Wait briefly for an interrupted publish; whether JetStream acknowledged it."""
    done, _ = await asyncio.wait({publish}, timeout=_CLEANUP_TIMEOUT)
    return bool(done) and not publish.cancelled() and publish.exception() is None


def _object_digest(sha: bytes) -> str:
    """The object store's own digest field for these bytes (``SHA-256=<base64url>``)."""
    return OBJ_DIGEST_TEMPLATE.format(digest=base64.urlsafe_b64encode(sha).decode())


def _parse_time(text: str | None) -> datetime | None:
    """Object store times are RFC 3339, from Go with nanoseconds: Python takes microseconds."""
    if not text:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class ArtifactInfo:
    """One stored artifact, as ``ArtifactStore.list`` reports it."""

    ref: str
    size: int
    name: str | None
    """The file name given to the ``put`` that stored it, if any."""
    modified: datetime | None

    @property
    def digest(self) -> str:
        return self.ref[len(REF_PREFIX):]


# -- the store -----------------------------------------------------------------------------------


class ArtifactStore:
    """Component artifacts of one lattice, content-addressed in the JetStream object store.

    Args:
        js: a JetStream context of a connected client.
        lattice: the lattice name (a NATS token).
        replicas: JetStream replicas for the bucket when this store creates it (clusters).

    Raises:
        SubjectError: ``lattice`` cannot be part of a bucket name.
    """

    def __init__(self, js: JetStreamContext, lattice: str, *, replicas: int = 1) -> None:
        self.lattice = check_token(lattice, "lattice name")
        self.bucket = artifacts_bucket(lattice)
        self._stream = OBJ_STREAM_TEMPLATE.format(bucket=self.bucket)
        self._js = js
        self._replicas = replicas
        self._store: ObjectStore | None = None
        self._nuid = NUID()

    # -- public API --------------------------------------------------------------------------

    async def put(self, data: bytes | bytearray | memoryview, *, name: str | None = None,
                  timeout: float = 30.0) -> str:
        """Store ``data`` and return its reference, ``sha256:<hex>``.

        Idempotent: when the bucket already holds these bytes nothing is uploaded (and the first
        ``name`` stays). An entry under this digest whose recorded digest, size or chunk count is
        wrong is replaced, which repairs a corrupted artifact.

        Raises:
            ArtifactStoreUnavailable: NATS failed; ``ArtifactStoreTimeout`` when the upload
                missed ``timeout``. Chunks already sent are purged.
        """
        data = bytes(data)
        sha = await _sha256(data)
        ref = REF_PREFIX + sha.hex()
        async with self._lattice_errors(f"put artifact {ref}", timeout):
            for attempt in range(2):
                store = await self._bucket(create=True)
                assert store is not None
                try:
                    old = await self._entry(store, sha.hex(), ref)
                except ArtifactCorrupt:  # unreadable entry: overwrite it
                    old = None
                if (old is not None and old.digest == _object_digest(sha) and old.size == len(data)
                        and await self._chunks_present(old) == old.chunks):
                    return ref
                try:
                    await self._upload(sha, data, name, old)
                    break
                except nats.js.errors.NoStreamResponseError:
                    if attempt:
                        raise
                    self._store = None  # the bucket was deleted under us: create it again
        return ref

    async def get(self, ref: str, *, timeout: float = 30.0) -> bytes:
        """The artifact's bytes, verified against ``ref``.

        Raises:
            ArtifactRefError: ``ref`` is malformed.
            ArtifactNotFound: the lattice has no such artifact.
            ArtifactCorrupt: the stored bytes (or their entry) do not match ``ref``.
            ArtifactStoreUnavailable: NATS failed (``ArtifactStoreTimeout``: ``timeout`` passed).
        """
        digest = parse_ref(ref)
        async with self._lattice_errors(f"get artifact {ref}", timeout) as deadline:
            data = await self._read(digest, ref, deadline)
        actual = (await _sha256(data)).hex()
        if actual != digest:
            raise ArtifactCorrupt(ref, self.lattice, f"its bytes hash to {REF_PREFIX}{actual}",
                                  actual=REF_PREFIX + actual)
        return data

    async def exists(self, ref: str, *, timeout: float = 30.0) -> bool:
        """Whether the lattice holds an entry for ``ref``. Cheap: the bytes are not read (nor
        verified; ``get`` does that)."""
        digest = parse_ref(ref)
        async with self._lattice_errors(f"look up artifact {ref}", timeout):
            store = await self._bucket(create=False)
            if store is None:
                return False
            with contextlib.suppress(ArtifactCorrupt):
                return await self._entry(store, digest, ref) is not None
            return True  # an entry is there, however broken

    async def delete(self, ref: str, *, timeout: float = 30.0) -> None:
        """Remove an artifact; hosts that cached it keep their copy.

        Raises:
            ArtifactNotFound: the lattice has no such artifact.
        """
        digest = parse_ref(ref)
        async with self._lattice_errors(f"delete artifact {ref}", timeout):
            store = await self._bucket(create=False)
            if store is None:
                raise ArtifactNotFound(ref, self.lattice)
            try:
                await store.delete(digest)
            except nats.js.errors.ObjectNotFoundError:
                raise ArtifactNotFound(ref, self.lattice) from None

    async def list(self, *, timeout: float = 30.0) -> list[ArtifactInfo]:
        """Every artifact in the lattice, by reference. Objects not named by a digest (put there by
        other tools) are left out."""
        async with self._lattice_errors("list artifacts", timeout) as deadline:
            if await self._bucket(create=False) is None:
                return []
            subject = OBJ_ALL_META_PRE_TEMPLATE.format(bucket=self.bucket)
            try:
                state = (await self._js.stream_info(self._stream, subjects_filter=subject)).state
            except nats.js.errors.NotFoundError:  # the bucket was deleted under us
                self._store = None
                return []
            if not state.subjects:
                return []
            entries = await self._read_all(subject, deadline, last_per_subject=True)
        out = []
        for raw in entries:
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                info = api.ObjectInfo.from_response(json.loads(raw))
                if not info.deleted and _REF.fullmatch(REF_PREFIX + str(info.name)):
                    out.append(ArtifactInfo(REF_PREFIX + info.name, info.size or 0,
                                            info.description or None, _parse_time(info.mtime)))
        return sorted(out, key=lambda a: a.ref)

    async def fetch_to_cache(self, ref: str, cache_dir: Path, *, timeout: float = 30.0) -> Path:
        """The artifact as a local file, ``<cache_dir>/artifacts/<hex>.wasm``, fetched if needed.

        A file already there is reused only if its bytes hash to ``ref``: re-hashing costs ~15 ms
        per 20 MB, far less than a fetch, and unlike a size or mtime check it catches any damage
        (a bad file is fetched again). A fetched file is written to a temporary name, fsynced and
        renamed into place, so a reader never sees half a file; concurrent fetches of one ref
        each write a complete file and the last rename wins.

        Raises:
            ArtifactCacheError: the file cannot be written.
            and whatever ``get`` raises.
        """
        digest = parse_ref(ref)
        path = Path(cache_dir) / "artifacts" / f"{digest}.wasm"
        if await asyncio.to_thread(_cached_file_ok, path, digest):
            return path
        data = await self.get(ref, timeout=timeout)
        await asyncio.to_thread(_write_atomically, path, data)
        return path

    # -- internals ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lattice_errors(self, action: str,
                              timeout: float) -> AsyncIterator[asyncio.Timeout]:
        """Bound an operation by ``timeout`` and turn NATS failures into ours."""
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                yield deadline
        except TimeoutError as exc:  # ours or a nats request's
            when = deadline.when()
            ours = deadline.expired() or (
                when is not None and when <= asyncio.get_running_loop().time())
            raise ArtifactStoreTimeout(action, self.lattice, timeout, ours) from exc
        except nats.errors.Error as exc:
            raise ArtifactStoreUnavailable(action, self.lattice, _explain(exc)) from exc

    async def _bucket(self, *, create: bool) -> ObjectStore | None:
        """The bucket's object store; ``None`` when it does not exist and ``create`` is false."""
        if self._store is None:
            try:
                self._store = await self._js.object_store(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                if not create:
                    return None
                try:
                    self._store = await self._js.create_object_store(
                        self.bucket, replicas=self._replicas,
                        description=f"Trellis component artifacts of lattice {self.lattice}",
                    )
                except nats.js.errors.BadRequestError as exc:
                    # Another host may have created it first, with a configuration of its own.
                    try:
                        self._store = await self._js.object_store(self.bucket)
                    except nats.js.errors.BucketNotFoundError:
                        raise exc from None
        return self._store

    async def _entry(self, store: ObjectStore, digest: str, ref: str) -> api.ObjectInfo | None:
        """The object's entry, ``None`` when absent or deleted (or the bucket was deleted)."""
        try:
            return await store.get_info(digest)
        except nats.js.errors.ObjectNotFoundError:
            return None
        except nats.js.errors.BadObjectMetaError:
            raise ArtifactCorrupt(
                ref, self.lattice, "its object store entry is not valid JSON") from None

    async def _upload(self, sha: bytes, data: bytes, name: str | None,
                      old: api.ObjectInfo | None) -> None:
        digest = sha.hex()
        nuid = self._nuid.next().decode()
        chunks = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=nuid)
        info = api.ObjectInfo(
            name=digest, bucket=self.bucket, nuid=nuid, size=len(data),
            chunks=-(-len(data) // CHUNK_SIZE), digest=_object_digest(sha),
            mtime=datetime.now(UTC).isoformat(), description=name,
            options=api.ObjectMetaOptions(max_chunk_size=CHUNK_SIZE),
        )
        # Each publish runs as a shielded task. Cancelled mid-publish, the message may still be
        # on its way, and JetStream may store it *after* a purge sent behind it; so the cleanup
        # waits for the interrupted publish's ack first (which is also why a publish is not
        # given just the time left: one that timed out has an unknown fate). Shielding also
        # makes the deadline reach us where nats-py's wait_for (Python 3.11) would swallow it.
        publish: asyncio.Task[api.PubAck] | None = None
        is_entry = False
        try:
            for offset in range(0, len(data), CHUNK_SIZE):
                publish = _spawn(self._js.publish(
                    chunks, data[offset:offset + CHUNK_SIZE], stream=self._stream))
                await asyncio.shield(publish)
            is_entry = True
            publish = _spawn(self._js.publish(
                self._meta_subject(digest), json.dumps(info.as_dict()).encode(),
                stream=self._stream, headers={api.Header.ROLLUP: MSG_ROLLUP_SUBJECT}))
            await asyncio.shield(publish)
        except BaseException:  # cancelled or failed: don't leave the chunks behind
            await _finish_anyway(self._abandon(publish, is_entry, chunks))
            raise
        if old is not None and old.nuid and old.nuid != nuid:
            await self._purge(OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=old.nuid))

    async def _abandon(self, publish: asyncio.Task[api.PubAck] | None, is_entry: bool,
                       chunks: str) -> None:
        """Clean up after a failed upload: purge its chunks, unless the entry landed after all
        (then the artifact is complete, and only the caller saw a failure)."""
        if publish is not None and await _settled(publish) and is_entry:
            return
        await self._purge(chunks)

    def _meta_subject(self, name: str) -> str:
        encoded = base64.urlsafe_b64encode(name.encode()).decode()
        return OBJ_META_PRE_TEMPLATE.format(bucket=self.bucket, obj=encoded)

    async def _purge(self, subject: str) -> None:
        """Best effort, briefly: this runs on failure paths, possibly while being cancelled."""
        try:
            await asyncio.wait_for(self._js.purge_stream(self._stream, subject=subject),
                                   _CLEANUP_TIMEOUT)
        except nats.js.errors.NotFoundError:
            pass  # the whole bucket is gone
        except (nats.errors.Error, TimeoutError) as exc:
            _LOG.warning("could not purge %s from %s: %s", subject, self._stream, exc)

    async def _chunks_present(self, info: api.ObjectInfo) -> int:
        """How many chunks of this entry the stream holds."""
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=info.nuid)
        state = (await self._js.stream_info(self._stream, subjects_filter=subject)).state
        return (state.subjects or {}).get(subject, 0)

    async def _read(self, digest: str, ref: str, deadline: asyncio.Timeout) -> bytes:
        store = await self._bucket(create=False)
        info = None if store is None else await self._entry(store, digest, ref)
        for attempt in range(2):
            if info is None:
                raise ArtifactNotFound(ref, self.lattice)
            if info.is_link():
                raise ArtifactCorrupt(ref, self.lattice, "its entry links to another object")
            size, count = info.size or 0, info.chunks or 0
            if size == 0:
                return b""
            subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=info.nuid)
            # Count first: waiting for chunks that are not there would only end at the deadline.
            present = await self._chunks_present(info)
            if present == count:
                break
            # A concurrent put may have just replaced the entry and purged these chunks.
            assert store is not None
            newer = await self._entry(store, digest, ref)
            if attempt or newer is None or newer.nuid == info.nuid:
                raise ArtifactCorrupt(
                    ref, self.lattice, f"{present} of its {count} chunks are in the store")
            info = newer
        parts = await self._read_all(subject, deadline, max_bytes=size)
        data = b"".join(parts)
        if len(data) != size:
            raise ArtifactCorrupt(ref, self.lattice,
                                  f"its chunks do not add up to the {size} bytes its entry says")
        return data

    async def _read_all(self, subject: str, deadline: asyncio.Timeout, *,
                        max_bytes: int | None = None,
                        last_per_subject: bool = False) -> builtins.list[bytes]:
        """Every stored message on ``subject``, in order, through an ordered consumer. The caller
        makes sure there is at least one, and bounds the wait."""
        policy = api.DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else None
        subscribing = asyncio.ensure_future(self._js.subscribe(
            subject, stream=self._stream, ordered_consumer=True, deliver_policy=policy))
        try:
            sub = await asyncio.shield(subscribing)
        except BaseException:  # don't leave a half-made subscription behind
            await _finish_anyway(_unsubscribe_when_made(subscribing))
            raise
        try:
            out: builtins.list[bytes] = []
            total = 0
            while True:
                msg = await sub.next_msg(timeout=_left(deadline))
                out.append(msg.data)
                total += len(msg.data)
                if msg.metadata.num_pending == 0:
                    return out
                if max_bytes is not None and total > max_bytes:
                    return out  # more than the entry declared: the caller reports it
        finally:
            await _finish_anyway(_unsubscribe(sub))


# -- the on-disk cache ---------------------------------------------------------------------------


def _cached_file_ok(path: Path, digest: str) -> bool:
    try:
        with path.open("rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return False
    except OSError as exc:
        _LOG.warning("cannot read cached artifact %s (%s); fetching it again", path, exc)
        return False
    if actual != digest:
        _LOG.warning("cached artifact %s hashes to sha256:%s; fetching it again", path, actual)
        return False
    return True


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ArtifactCacheError(path, exc) from exc
