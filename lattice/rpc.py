"""The invocation wire protocol, shared by callers (``RpcCaller``) and hosts (``trellis.host.rpc``).

One invocation is one NATS request/reply (the full spec is docs/protocol.md)::

    request  trellis.rpc.{lattice}.{component}.{operation token}   (queue {lattice}.{component})
             headers  Trellis-Invocation-Id, Trellis-Caller, Trellis-Deadline (Unix seconds),
                      [Trellis-Encoding], [traceparent/tracestate]
             body     the arguments, value-encoded by the function's parameter types
    reply    headers  [Trellis-Status: ok | <error kind>], Trellis-Host, Trellis-Digest
             body     ok: the encoded result; otherwise a JSON ``RpcErrorBody``

Headers in brackets are left out when they have their default (no status means ``ok``, no
encoding means ``trellis-wit/1``, no trace headers outside a trace): NATS clients encode and
parse headers on every message, a large part of a small call's cost.

A body that would not fit the server's ``max_payload`` travels through the lattice's payload
object store instead: the message carries ``Trellis-Object: <name>`` (and ``Trellis-Size``) and an
empty body, and the reader deletes the object once read. Nothing is ever dropped silently: a
payload that cannot be sent either way is an error for the sender.

The reserved operation ``_describe`` answers with the component's export signatures as JSON
(``models.Describe``), so a caller in any language can encode arguments and decode results.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE
from opentelemetry import context, propagate, trace
from opentelemetry.trace import Status, StatusCode, TracerProvider

from . import dispatch, subjects
from .errors import (
    AmbiguousFunction,
    ArgumentError,
    CapacityTimeout,
    DeadlineExceeded,
    FunctionNotFound,
    GuestTrap,
    HostStoppedError,
    InvocationError,
    InvocationTimeout,
    LatticeUnavailableError,
    LinkTargetUnavailable,
    NoLink,
    NoSuchComponent,
    RemoteArgumentError,
    RemoteCapacityTimeout,
    RemoteDeadlineExceeded,
    RemoteFunctionNotFound,
    RemoteInvocationError,
    RemoteLimitExceeded,
    RemoteLinkTargetUnavailable,
    RemoteNoLink,
    RemoteTrap,
    ResourceLimitExceeded,
    WitValueError,
)
from .models import Headers, RpcErrorBody
from .wit.types import FuncType

_LOG = logging.getLogger(__name__)

DESCRIBE = "_describe"
"""Reserved operation: the component's export signatures (never a WIT function name)."""
STATUS_OK = "ok"
JSON_TYPE = "application/json"
PAYLOAD_TTL = 600.0
"""Seconds an orphaned big payload (its reader died) stays in the object store."""
_HEADER_SLACK = 256
"""Bytes reserved beyond our own header estimate (NATS/1.0 line, server-added headers)."""
_NATS_STATUS = "Status"
_NO_RESPONDERS = "503"
"""What nats-server sends to a request's reply subject when nobody subscribes."""
_FAR_BELOW = 8192
"""A body this far below ``max_payload`` fits unless its headers are huge (``fits``)."""

# Wire error kinds (docs/protocol.md). The caller maps each to the matching local error type.
KIND_TRAP = "trap"
KIND_DEADLINE = "deadline"
KIND_LIMIT = "limit"
KIND_CAPACITY = "capacity"
KIND_NO_FUNCTION = "no_such_function"
KIND_NO_COMPONENT = "no_such_component"
KIND_NO_LINK = "no_link"
KIND_LINK_UNAVAILABLE = "link_unavailable"
KIND_BAD_REQUEST = "bad_request"
KIND_STOPPED = "stopped"
KIND_FAILED = "failed"
KIND_INTERNAL = "internal"

_REMOTE_TYPES: dict[str, type[RemoteInvocationError]] = {
    KIND_TRAP: RemoteTrap,
    KIND_NO_LINK: RemoteNoLink,
    KIND_LINK_UNAVAILABLE: RemoteLinkTargetUnavailable,
    KIND_DEADLINE: RemoteDeadlineExceeded,
    KIND_LIMIT: RemoteLimitExceeded,
    KIND_CAPACITY: RemoteCapacityTimeout,
    KIND_NO_FUNCTION: RemoteFunctionNotFound,
    KIND_BAD_REQUEST: RemoteArgumentError,
}


# -- errors on the wire --------------------------------------------------------------------------


def classify(exc: BaseException) -> tuple[str, str]:
    """The wire kind of a server-side failure, and the message to send (without the
    ``component function:`` prefix the caller adds back)."""
    detail = exc.detail if isinstance(exc, InvocationError) else str(exc)
    if isinstance(exc, NoLink):
        return KIND_NO_LINK, detail
    if isinstance(exc, LinkTargetUnavailable):
        return KIND_LINK_UNAVAILABLE, detail
    if isinstance(exc, GuestTrap):
        return KIND_TRAP, detail
    if isinstance(exc, DeadlineExceeded):
        return KIND_DEADLINE, detail
    if isinstance(exc, ResourceLimitExceeded):
        return KIND_LIMIT, detail
    if isinstance(exc, CapacityTimeout):
        return KIND_CAPACITY, detail
    if isinstance(exc, FunctionNotFound):
        return KIND_NO_FUNCTION, str(exc).removeprefix(f"{exc.component} ")
    if isinstance(exc, (ArgumentError, WitValueError)):
        return KIND_BAD_REQUEST, str(exc)
    if isinstance(exc, HostStoppedError):
        return KIND_STOPPED, str(exc) or "the host is stopping"
    if isinstance(exc, (InvocationError, LatticeUnavailableError)):
        return KIND_FAILED, detail
    return KIND_INTERNAL, f"{type(exc).__name__}: {exc}"


def error_body(kind: str, message: str, *, component: str, function: str, host: str,
               invocation_id: str = "", exc: BaseException | None = None) -> bytes:
    body = RpcErrorBody(kind=kind, message=message[:4000], component=component,
                        function=function, host=host, invocation_id=invocation_id)
    if isinstance(exc, ResourceLimitExceeded):
        body.limit = exc.limit
    if isinstance(exc, FunctionNotFound) and exc.candidates:
        body.candidates = exc.candidates[:200]
    return body.model_dump_json(exclude_none=True).encode()


def remote_error(status: str, data: bytes, component: str, function: str,
                 lattice: str) -> InvocationError:
    """The typed caller-side error for a reply whose status is not ``ok``."""
    try:
        body = RpcErrorBody.model_validate_json(data)
    except ValueError:
        text = bytes(data[:200]).decode("utf-8", "replace")
        return RemoteInvocationError(component, function, status or KIND_INTERNAL,
                                     f"unreadable error reply: {text!r}", "?")
    if body.kind == KIND_NO_COMPONENT:
        return NoSuchComponent(component, function, lattice)
    cls = _REMOTE_TYPES.get(body.kind, RemoteInvocationError)
    err = cls(component, function, body.kind, body.message, body.host, body.invocation_id)
    if isinstance(err, RemoteLimitExceeded):
        err.limit = body.limit or ""
    if isinstance(err, RemoteFunctionNotFound):
        err.name, err.candidates = function, body.candidates or []
    return err


# -- big payloads --------------------------------------------------------------------------------


def fits(nc: Client, body: bytes, headers: Mapping[str, str]) -> bool:
    """Whether ``body`` plus ``headers`` fits one message on this connection."""
    room = nc.max_payload - _HEADER_SLACK - len(body)
    if room >= _FAR_BELOW and len(headers) <= 8:
        # Far below the limit: only pathological headers could matter, and their total
        # length is a C-level sum (~0.3 µs, where the exact per-header sum costs ~2 µs).
        if sum(map(len, headers)) + sum(map(len, headers.values())) < _FAR_BELOW // 2:
            return True
    return len(body) + _HEADER_SLACK + sum(
        len(k) + len(v) + 4 for k, v in headers.items()) <= nc.max_payload


def fits_encoded(nc: Client, body: bytes, block: bytes) -> bool:
    """``fits`` for headers already encoded (``header_block``): exact, and one addition."""
    return len(body) + len(block) + _HEADER_SLACK <= nc.max_payload


# -- publishing with headers encoded once ---------------------------------------------------------

try:  # nats-py internals (unchanged since 2.x), checked once; the public publish otherwise
    from nats.protocol.command import hpub_cmd as _hpub_cmd

    _FAST_PUBLISH = all(callable(getattr(Client, name, None))
                        for name in ("_send_command", "_flush_pending"))
except ImportError:  # pragma: no cover - a nats-py that moved them
    _FAST_PUBLISH = False
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""What nats-py accepts as a header name."""


def header_safe(value: str) -> bool:
    """Whether nats-py would send ``value`` as it is (no trimming, no CR/LF replaced)."""
    return value == value.strip() and "\r" not in value and "\n" not in value


def header_block(headers: Mapping[str, str]) -> bytes | None:
    """``headers`` encoded exactly as nats-py puts them on the wire (the ``NATS/1.0`` block),
    for ``publish_encoded``; ``None`` when a name or value needs nats-py's own handling."""
    parts = ["NATS/1.0\r\n"]
    for k, v in headers.items():
        if not _HEADER_NAME.fullmatch(k) or not header_safe(v):
            return None
        parts.append(f"{k}: {v}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode()


async def publish_encoded(nc: Client, subject: str, payload: bytes, headers: dict[str, str],
                          block: bytes | None, reply: str = "") -> None:
    """``nc.publish(subject, payload, reply=reply, headers=headers)`` where ``block`` is
    ``header_block(headers)``, already encoded.

    nats-py encodes headers on every publish (a regex match, a strip and a translate per
    header: ~2 µs each, a quarter of a small reply's cost on a host); this queues the same
    bytes the same way. It also skips the subject checks: ours are built from checked tokens
    and a reply subject came from the server. Whenever publishing would do more than queue
    the message (reconnecting, draining, closed, over ``max_payload``) nats-py does it.
    """
    if (block is not None and _FAST_PUBLISH and nc.is_connected and not nc.is_draining
            and len(payload) <= nc.max_payload):
        stats = nc.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += len(payload)
        await nc._send_command(_hpub_cmd(subject, reply, block, payload))
        queue = nc._flush_queue
        if queue is not None and queue.empty():
            await nc._flush_pending()
        return
    await nc.publish(subject, payload, reply=reply, headers=headers)


# -- reading headers ------------------------------------------------------------------------------

_MISS = object()
_names: dict[bytes, str | None] = {}
"""Header name as received -> as nats-py reports it (``None``: nats-py drops the line)."""


def _header_name(raw: bytes) -> str | None:
    try:
        key = raw.strip().decode("ascii")
    except UnicodeDecodeError:
        return None
    return None if any(c.isspace() for c in key) else key


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's ``Client._parse_header_lines`` (``Name: Value\\r\\n`` lines), same result,
    with each distinct name checked once instead of on every message: nats-py tests every
    character of every name for whitespace, ~1.5 µs a header on a hot path with 3 of them."""
    out: dict[str, str] = {}
    names = _names
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key: Any = names.get(name, _MISS)
        if key is _MISS:
            if len(names) >= 1024:
                names.clear()
            key = names[name] = _header_name(name)
        if key is not None:
            out[key] = value.strip().decode("utf-8", "replace")
    return out


def fast_headers(nc: Client) -> None:
    """Make ``nc`` parse received headers with ``parse_header_lines`` (same results). Only for
    the nats-py versions whose parser it reproduces; a no-op otherwise."""
    import nats.aio.client as nats_client

    if (getattr(nats_client, "parse_email", _MISS) is None
            and callable(getattr(Client, "_parse_header_lines", None))):
        nc._parse_header_lines = parse_header_lines  # type: ignore[method-assign]


class PayloadStore:
    """The lattice's object store for bodies above ``max_payload``; created on first use
    (in-memory storage with a TTL, so what a dead reader leaves behind expires)."""

    def __init__(self, nc: Client, lattice: str, *, ttl: float = PAYLOAD_TTL) -> None:
        self.nc, self.lattice, self.ttl = nc, lattice, ttl
        self.bucket = subjects.payloads_bucket(lattice)
        self._store: Any = None
        self._lock = asyncio.Lock()

    async def _open(self) -> Any:
        if self._store is not None:
            return self._store
        async with self._lock:
            if self._store is None:
                js = self.nc.jetstream()
                try:
                    self._store = await js.create_object_store(
                        self.bucket, config=ObjectStoreConfig(
                            bucket=self.bucket, ttl=self.ttl, storage=StorageType.MEMORY,
                            description="Trellis invocation payloads above max_payload"))
                except Exception as exc:
                    try:  # exists with another config (an older TTL): use it as it is
                        self._store = await js.object_store(self.bucket)
                    except Exception:
                        raise LatticeUnavailableError(
                            self.bucket, "cannot open the payload object store for a body "
                            f"above max_payload ({self.nc.max_payload} bytes); is JetStream "
                            f"enabled on the server? ({type(exc).__name__}: {exc})") from exc
        return self._store

    async def put(self, name: str, data: bytes) -> None:
        store = await self._open()
        await store.put(name, data)

    async def take(self, name: str, timeout: float = 30.0) -> bytes:
        """Read an object, verify it, and delete it.

        The chunks are read with an ordered consumer and joined once: nats-py's
        ``ObjectStore.get`` concatenates them one by one and stalls ~250 ms on objects whose
        last chunk is partial (measured with 2 MB + 3 bytes).
        """
        store = await self._open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                info = await store.get_info(name)
                data = await self._chunks(info, deadline) if info.size else b""
        except NatsTimeoutError as exc:
            raise LatticeUnavailableError(
                self.bucket, f"payload object {name!r} not read within {timeout:g}s"
            ) from TimeoutError(str(exc))
        except Exception as exc:
            raise LatticeUnavailableError(
                self.bucket, f"payload object {name!r} is missing or unreadable "
                f"({type(exc).__name__}: {exc})") from exc
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
        if len(data) != (info.size or 0) or not (info.digest or "").endswith(digest):
            raise LatticeUnavailableError(self.bucket, f"payload object {name!r} is corrupt "
                                          f"({len(data)} bytes read, {info.size} expected)")
        with contextlib.suppress(Exception):
            await store.delete(name)
        return data

    async def _chunks(self, info: Any, deadline: float) -> bytes:
        js = self.nc.jetstream()
        loop = asyncio.get_running_loop()
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=info.nuid)
        sub = await js.subscribe(subject, ordered_consumer=True)
        parts: list[bytes] = []
        try:
            while True:
                msg = await sub.next_msg(timeout=max(0.001, deadline - loop.time()))
                parts.append(msg.data)
                if msg.metadata.num_pending == 0:
                    return b"".join(parts)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def publish(nc: Client, payloads: PayloadStore, subject: str, body: bytes,
                  headers: dict[str, str], object_name: str, *, reply: str = "") -> None:
    """Publish ``body``, through the object store when it does not fit a message."""
    if not fits(nc, body, headers):
        await payloads.put(object_name, body)
        headers = {**headers, Headers.OBJECT: object_name, Headers.SIZE: str(len(body))}
        body = b""
    await nc.publish(subject, body, reply=reply, headers=headers)


async def read_body(msg: Msg, payloads: PayloadStore, timeout: float = 30.0) -> bytes:
    """A message's body, fetched from the object store when it was sent through it."""
    hdrs = msg.headers
    if hdrs and Headers.OBJECT in hdrs:
        return await payloads.take(hdrs[Headers.OBJECT], timeout)
    return msg.data


# -- the caller side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RawReply:
    """A successful reply: the encoded result and who produced it."""

    data: bytes
    host: str
    digest: str
    headers: dict[str, str] = field(default_factory=dict)


class RpcCaller:
    """Sends invocations and turns replies into values or typed errors. Used by
    ``LatticeClient`` and, later, by host bindings for component-to-component calls.

    Each call is one CLIENT span whose context travels in the W3C headers, so the host's
    span for the same call joins the caller's trace. Without a tracing SDK the span is a no-op
    and trace headers go out only when the caller runs inside a context that has some.

    Replies come back on one wildcard inbox subscription per caller (``_inbox.*``), each
    matched to its call by the last token; a call costs one future and one timer, no
    subscription (nats-py's ``request`` works the same way, with a costlier timeout path).
    Headers go out encoded in one f-string (``publish_encoded``) and come back through
    ``parse_header_lines``, which this installs on ``nc`` (``fast_headers``).
    """

    def __init__(self, nc: Client, lattice: str, *, caller: str | None = None,
                 tracer_provider: TracerProvider | None = None) -> None:
        self.nc, self.lattice, self.caller = nc, subjects.check_token(lattice, "lattice"), caller
        self.payloads = PayloadStore(nc, lattice)
        self._subjects: dict[tuple[str, str], str] = {}
        fast_headers(nc)
        provider = tracer_provider or trace.get_tracer_provider()
        self.tracer = provider.get_tracer("trellis.lattice")
        self._id_prefix = os.urandom(8).hex()
        """Invocation ids (32 hex digits) are this random prefix and a counter: unique, and
        ~10x cheaper than ``uuid4().hex``."""
        self._count = itertools.count(1)
        self._caller_line: str | None = ""
        """``Trellis-Caller: …\\r\\n`` as sent (``None``: a value nats-py has to clean up)."""
        if caller:
            self._caller_line = f"{Headers.CALLER}: {caller}\r\n" if header_safe(caller) else None
        self._plain = 3 if caller else 2
        """How many headers a call has without trace context or a big payload."""
        self._inbox = ""
        self._replies: dict[str, asyncio.Future[Msg | None]] = {}
        self._sub: Any = None
        self._sub_nc: Client | None = None
        self._sub_lock = asyncio.Lock()

    async def call(self, component: str, operation: str, body: bytes, *, timeout: float,
                   function: str | None = None) -> RawReply:
        """Invoke ``operation`` on any replica of ``component`` and wait at most ``timeout``.

        Raises:
            NoSuchComponent: nothing serves the component (NATS had no responders).
            InvocationTimeout: no reply before the deadline.
            RemoteInvocationError: the host answered with an error (typed by kind).
            LatticeUnavailableError: the connection is closed or broken.
        """
        label = function or operation
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        subject = self._subjects.get((component, operation))
        if subject is None:
            if len(self._subjects) > 4096:
                self._subjects.clear()
            subject = self._subjects[component, operation] = subjects.rpc(
                self.lattice, component, operation)
        n = next(self._count)
        token = f"{n:x}"
        inv_id = f"{self._id_prefix}{n:016x}"
        started = time.monotonic()
        # Trellis-Encoding is left out: absent means trellis-wit/1 (docs/protocol.md §5.1).
        headers = {Headers.INVOCATION_ID: inv_id,
                   Headers.DEADLINE: f"{time.time() + timeout:.6f}"}
        if self.caller:
            headers[Headers.CALLER] = self.caller
        span = self.tracer.start_span(f"call {component}/{label}", kind=trace.SpanKind.CLIENT)
        if not span.is_recording():  # no tracing SDK: still pass on the caller's own context
            if context.get_current():  # an empty context injects nothing: skip the propagators
                propagate.inject(headers)
            return await self._request(subject, body, headers, inv_id, token, component, label,
                                       timeout, started)
        with trace.use_span(span, end_on_exit=True, record_exception=False,
                            set_status_on_exception=False):
            span.set_attributes({"trellis.component": component, "trellis.function": label,
                                 "trellis.invocation_id": inv_id,
                                 "trellis.lattice": self.lattice})
            propagate.inject(headers)
            try:
                reply = await self._request(subject, body, headers, inv_id, token, component,
                                            label, timeout, started)
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
                raise
            span.set_attribute("trellis.host", reply.host)
            return reply

    async def _request(self, subject: str, body: bytes, headers: dict[str, str], inv_id: str,
                       token: str, component: str, label: str, timeout: float,
                       started: float) -> RawReply:
        nc = self.nc
        if nc.is_closed:
            raise LatticeUnavailableError(_url(nc), "the NATS connection is closed")
        if self._sub_nc is not nc:
            await self._subscribe()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Msg | None] = loop.create_future()
        replies = self._replies
        replies[token] = fut
        try:
            if len(headers) == self._plain and self._caller_line is not None:
                block: bytes | None = (
                    f"NATS/1.0\r\n{Headers.INVOCATION_ID}: {inv_id}\r\n{Headers.DEADLINE}: "
                    f"{headers[Headers.DEADLINE]}\r\n{self._caller_line}\r\n").encode()
            else:
                block = header_block(headers)
            if block is None or not fits_encoded(nc, body, block):
                if not fits(nc, body, headers):
                    await asyncio.wait_for(self.payloads.put(f"{inv_id}.req", body), timeout)
                    headers[Headers.OBJECT] = f"{inv_id}.req"
                    headers[Headers.SIZE] = str(len(body))
                    body = b""
                    block = header_block(headers)
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                raise NatsTimeoutError
            await publish_encoded(nc, subject, body, headers, block, self._inbox + token)
            timer = loop.call_at(loop.time() + left, _expire, fut)
            try:
                msg = await fut
            finally:
                timer.cancel()
            if msg is None:
                raise NatsTimeoutError
        except (TimeoutError, NatsTimeoutError):
            raise InvocationTimeout(component, label, timeout, self.lattice) from None
        except ConnectionClosedError as exc:
            raise LatticeUnavailableError(_url(nc), "the NATS connection closed") from exc
        finally:
            replies.pop(token, None)
        hdrs = msg.headers or {}
        data = msg.data
        status = hdrs.get(Headers.STATUS, STATUS_OK)
        if not data and hdrs.get(_NATS_STATUS) == _NO_RESPONDERS:
            raise NoSuchComponent(component, label, self.lattice)
        if Headers.OBJECT in hdrs:
            left = max(0.001, timeout - (time.monotonic() - started))
            try:
                data = await self.payloads.take(hdrs[Headers.OBJECT], left)
            except LatticeUnavailableError as exc:
                if isinstance(exc.__cause__, TimeoutError):
                    raise InvocationTimeout(component, label, timeout, self.lattice) from None
                raise
        if status != STATUS_OK:
            raise remote_error(status, data, component, label, self.lattice)
        return RawReply(data, hdrs.get(Headers.HOST, ""), hdrs.get(Headers.DIGEST, ""), hdrs)

    async def _subscribe(self) -> None:
        """The reply inbox subscription on the current connection (once)."""
        async with self._sub_lock:
            nc = self.nc
            if self._sub_nc is nc:
                return
            inbox = nc.new_inbox() + "."
            self._sub = await dispatch.subscribe(nc, inbox + "*", self._on_reply)
            self._inbox, self._sub_nc = inbox, nc

    async def _on_reply(self, msg: Msg) -> None:
        fut = self._replies.get(msg.subject[len(self._inbox):])
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def describe(self, component: str, *, timeout: float) -> dict[str, Any]:
        """The ``_describe`` reply of one replica, as parsed JSON (``models.Describe``)."""
        reply = await self.call(component, DESCRIBE, b"", timeout=timeout)
        try:
            parsed: dict[str, Any] = json.loads(reply.data)
        except ValueError as exc:
            raise RemoteInvocationError(component, DESCRIBE, KIND_INTERNAL,
                                        f"unreadable describe reply ({exc})", reply.host) from exc
        return parsed


def _expire(fut: asyncio.Future[Msg | None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _url(nc: Client) -> str:
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url else "NATS"


# -- naming functions ----------------------------------------------------------------------------


def resolve_export(exports: Mapping[str, FuncType], name: str, component: str) -> str:
    """The export key that ``name`` means: ``func``, ``iface#func``, ``ns:pkg/iface#func``
    (with or without ``@version``) or the wasmtime CLI's ``ns:pkg/iface.func`` — the rules of
    the host's loader, for callers that only know the signatures."""
    if name in exports:
        return name
    if "#" not in name and "/" in name:
        base, at, ver = name.partition("@")
        head, _, tail = base.rpartition("/")
        iface, dot, func = tail.partition(".")
        if dot:
            name = f"{head}/{iface}{at}{ver}#{func}"
    if "#" in name:
        iface, func = name.rsplit("#", 1)
        matches = [k for k in exports if "#" in k and k.rsplit("#", 1)[1] == func
                   and _iface_matches(k.rsplit("#", 1)[0], iface)]
    else:
        matches = [k for k in exports if k.rsplit("#", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise AmbiguousFunction(component, name, sorted(matches))
    raise FunctionNotFound(component, name, sorted(exports))


def _iface_matches(full: str, given: str) -> bool:
    unversioned = full.split("@", 1)[0]
    return given in (full, unversioned, unversioned.rsplit("/", 1)[-1])
