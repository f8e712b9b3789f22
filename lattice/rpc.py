"""The invocation wire protocol, shared by callers (``RpcCaller``) and hosts (``trellis.host.rpc``).

One invocation is one NATS request/reply (the full spec is docs/protocol.md)::

    request  trellis.rpc.{lattice}.{component}.{operation token}   (queue {lattice}.{component})
             headers  Trellis-Invocation-Id, Trellis-Caller, Trellis-Deadline (Unix seconds),
                      Trellis-Encoding, traceparent/tracestate
             body     the arguments, value-encoded by the function's parameter types
    reply    headers  Trellis-Status: ok | <error kind>, Trellis-Host, Trellis-Digest
             body     ok: the encoded result; otherwise a JSON ``RpcErrorBody``

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
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE
from opentelemetry import propagate, trace
from opentelemetry.trace import Status, StatusCode, TracerProvider

from . import subjects
from .codec import ENCODING
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
    size = len(body) + _HEADER_SLACK + sum(len(k) + len(v) + 4 for k, v in headers.items())
    return size <= nc.max_payload


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
    span for the same call joins the caller's trace.
    """

    def __init__(self, nc: Client, lattice: str, *, caller: str | None = None,
                 tracer_provider: TracerProvider | None = None) -> None:
        self.nc, self.lattice, self.caller = nc, subjects.check_token(lattice, "lattice"), caller
        self.payloads = PayloadStore(nc, lattice)
        self._subjects: dict[tuple[str, str], str] = {}
        provider = tracer_provider or trace.get_tracer_provider()
        self.tracer = provider.get_tracer("trellis.lattice")

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
        inv_id = uuid.uuid4().hex
        started = time.monotonic()
        headers = {
            Headers.INVOCATION_ID: inv_id,
            Headers.DEADLINE: f"{time.time() + timeout:.6f}",
            Headers.ENCODING: ENCODING,
        }
        if self.caller:
            headers[Headers.CALLER] = self.caller
        span = self.tracer.start_span(f"call {component}/{label}", kind=trace.SpanKind.CLIENT)
        if not span.is_recording():  # no tracing SDK: still pass on the caller's own context
            propagate.inject(headers)
            return await self._request(subject, body, headers, inv_id, component, label,
                                       timeout, started)
        with trace.use_span(span, end_on_exit=True, record_exception=False,
                            set_status_on_exception=False):
            span.set_attributes({"trellis.component": component, "trellis.function": label,
                                 "trellis.invocation_id": inv_id,
                                 "trellis.lattice": self.lattice})
            propagate.inject(headers)
            try:
                reply = await self._request(subject, body, headers, inv_id, component, label,
                                            timeout, started)
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
                raise
            span.set_attribute("trellis.host", reply.host)
            return reply

    async def _request(self, subject: str, body: bytes, headers: dict[str, str], inv_id: str,
                       component: str, label: str, timeout: float, started: float) -> RawReply:
        nc = self.nc
        if nc.is_closed:
            raise LatticeUnavailableError(_url(nc), "the NATS connection is closed")
        try:
            if not fits(nc, body, headers):
                await asyncio.wait_for(self.payloads.put(f"{inv_id}.req", body), timeout)
                headers[Headers.OBJECT] = f"{inv_id}.req"
                headers[Headers.SIZE] = str(len(body))
                body = b""
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                raise NatsTimeoutError
            msg = await nc.request(subject, body, timeout=left, headers=headers)
        except NoRespondersError:
            raise NoSuchComponent(component, label, self.lattice) from None
        except (TimeoutError, NatsTimeoutError):
            raise InvocationTimeout(component, label, timeout, self.lattice) from None
        except ConnectionClosedError as exc:
            raise LatticeUnavailableError(_url(nc), "the NATS connection closed") from exc
        hdrs = dict(msg.headers or {})
        status = hdrs.get(Headers.STATUS, "")
        data = msg.data
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

    async def describe(self, component: str, *, timeout: float) -> dict[str, Any]:
        """The ``_describe`` reply of one replica, as parsed JSON (``models.Describe``)."""
        reply = await self.call(component, DESCRIBE, b"", timeout=timeout)
        try:
            parsed: dict[str, Any] = json.loads(reply.data)
        except ValueError as exc:
            raise RemoteInvocationError(component, DESCRIBE, KIND_INTERNAL,
                                        f"unreadable describe reply ({exc})", reply.host) from exc
        return parsed


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
