"""Serving invocations over NATS: one queue subscription per running component.

Every host running component ``c`` subscribes ``trellis.rpc.{lattice}.c.*`` in the queue group
``{lattice}.c``, so NATS spreads calls over the replicas with no routing table. Each request
runs in its own task: decode the arguments by the function's parameter types, build an
``Invocation`` (deadline from the header, W3C trace context, caller) and run it through the
component's interceptor chain, then reply with the encoded result or a typed error (the wire
protocol lives in ``trellis.lattice.rpc``; docs/protocol.md).

Resource handling: ``drain(timeout)`` stops taking calls (unsubscribes, keeps processing what
NATS already delivered) and waits for the calls in flight until the deadline; ``cancel()``
ends the rest, each answered with a ``stopped`` error so no caller waits for its timeout.

Error handling: a handler never raises into nats-py (a failing callback would be logged and
dropped, a cancelled one would end the subscription); every failure becomes an error reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import context, propagate

from ..lattice import subjects
from ..lattice.codec import ENCODING, args_codec, codec
from ..lattice.connection import flush
from ..lattice.errors import ArgumentError, DeadlineExceeded, HostStoppedError
from ..lattice.models import Describe, Headers
from ..lattice.rpc import (
    DESCRIBE,
    JSON_TYPE,
    KIND_INTERNAL,
    KIND_STOPPED,
    STATUS_OK,
    PayloadStore,
    classify,
    error_body,
    publish,
    read_body,
)
from ..lattice.wit.typejson import FORMAT, exports_to_json
from .invocation import Invocation
from .runtime.instances import GuestExit

if TYPE_CHECKING:
    from .runtime.runtime import Component
    from .telemetry import InvocationTelemetry

_LOG = logging.getLogger(__name__)

REPLY_MARGIN = 0.05
"""Seconds before the caller's deadline at which the guest is stopped, so the typed deadline
error reaches the caller before it gives up (at most 10% of the budget)."""
_TRACE_KEYS = (Headers.TRACEPARENT, Headers.TRACESTATE)


@dataclass
class Served:
    """A component this host serves, with its counters. ``component`` is swapped in place on
    a rescale or update; calls already running keep the instance manager they started on."""

    component_id: str
    component: Component
    image: str
    annotations: dict[str, str] = field(default_factory=dict)
    sub: Subscription | None = None
    active: int = 0
    invocations: int = 0
    errors: int = 0
    describe: bytes = b""

    def __post_init__(self) -> None:
        self.swap(self.component)

    def swap(self, component: Component) -> None:
        self.component = component
        self.describe = Describe(
            component=self.component_id, digest=component.compiled.ref, format=FORMAT,
            exports=exports_to_json(component.world),
        ).model_dump_json().encode()


class RpcServer:
    """The invocation side of a host: subscriptions, in-flight calls, replies."""

    def __init__(self, nc: Client, lattice: str, host_id: str) -> None:
        self.nc, self.lattice, self.host_id = nc, lattice, host_id
        self.payloads = PayloadStore(nc, lattice)
        self.served: dict[str, Served] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._operations: dict[str, str] = {}
        """Subject -> operation: unescaping a token costs ~10 µs, a dict hit 50 ns."""
        self.telemetry: InvocationTelemetry | None = None
        """Told about every call answered (metrics, spy records); set by the host."""

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # -- subscriptions ---------------------------------------------------------------------------

    async def serve(self, served: Served) -> None:
        """Start answering calls for ``served`` (subscribed and flushed on return)."""
        if self._closing:
            raise HostStoppedError(f"host {self.host_id} is stopping")
        cid = served.component_id

        async def on_msg(msg: Msg) -> None:
            task = asyncio.create_task(self._handle(served, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        served.sub = await self.nc.subscribe(
            subjects.rpc_component(self.lattice, cid),
            queue=subjects.rpc_queue(self.lattice, cid), cb=on_msg,
        )
        self.served[cid] = served
        await flush(self.nc)

    async def unserve(self, component_id: str, timeout: float) -> Served | None:
        """Stop taking calls for one component; wait (until ``timeout``) for its calls."""
        served = self.served.pop(component_id, None)
        if served is None:
            return None
        await self._drain_sub(served, timeout)
        deadline = time.monotonic() + timeout
        while served.active and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return served

    async def _drain_sub(self, served: Served, timeout: float) -> None:
        sub, served.sub = served.sub, None
        if sub is None:
            return
        try:
            await asyncio.wait_for(sub.drain(), max(0.1, timeout))  # type: ignore[no-untyped-call]
        except Exception as exc:  # closed connection, timeout: interest is gone either way
            _LOG.debug("draining %s: %s", served.component_id, exc)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def drain(self, timeout: float) -> bool:
        """Stop taking calls; True when every call in flight finished within ``timeout``."""
        self._closing = True
        deadline = time.monotonic() + timeout
        await asyncio.gather(*(self._drain_sub(s, timeout) for s in list(self.served.values())))
        while self._tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=left)
        return True

    async def cancel(self, timeout: float = 1.0) -> None:
        """Cancel the calls still running; each answers its caller with a ``stopped`` error."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    # -- one call --------------------------------------------------------------------------------

    async def _handle(self, served: Served, msg: Msg) -> None:
        started = time.perf_counter()
        hdrs = msg.headers or {}
        inv_id = hdrs.get(Headers.INVOCATION_ID) or uuid.uuid4().hex
        component = served.component
        function = "?"
        outcome: str | None = None  # stays None for what is not an invocation (_describe)
        served.active += 1
        try:
            if not msg.reply:
                return  # a publish without a reply subject: nobody to answer, nothing to run
            function = self._operations.get(msg.subject) or self._operation(msg.subject)
            if function == DESCRIBE:
                await self._reply(msg, component, served.describe, STATUS_OK, inv_id, JSON_TYPE)
                return
            served.invocations += 1
            out = await self._invoke(served, component, msg, hdrs, inv_id, function)
            await self._reply(msg, component, out, STATUS_OK, inv_id)
            outcome = STATUS_OK
        except asyncio.CancelledError:
            served.errors += 1
            outcome = KIND_STOPPED
            await self._fail(msg, served, component, inv_id, function, KIND_STOPPED,
                             f"host {self.host_id} stopped before the call finished", None)
            raise
        except Exception as exc:
            served.errors += 1
            if isinstance(exc, GuestExit):
                kind, message = "trap", exc.detail
            else:
                kind, message = classify(exc)
            outcome = kind
            if kind == KIND_INTERNAL:
                _LOG.exception("invocation %s of %s/%s failed", inv_id, served.component_id,
                               function)
            await self._fail(msg, served, component, inv_id, function, kind, message, exc)
        finally:
            served.active -= 1
            if outcome is not None and self.telemetry is not None:
                await self.telemetry.record(served.component_id, function, outcome, started,
                                            hdrs.get(Headers.CALLER) or "remote", inv_id,
                                            hdrs.get(Headers.TRACEPARENT))

    def _operation(self, subject: str) -> str:
        if len(self._operations) > 4096:
            self._operations.clear()
        op = self._operations[subject] = subjects.operation_of(subject)
        return op

    async def _invoke(self, served: Served, component: Component, msg: Msg,
                      hdrs: dict[str, str], inv_id: str, function: str) -> bytes:
        encoding = hdrs.get(Headers.ENCODING, ENCODING)
        if encoding != ENCODING:
            raise ArgumentError(f"unsupported value encoding {encoding!r}; this host speaks "
                                f"{ENCODING!r}")
        fn = component.resolve(function)
        deadline = _deadline(hdrs, component, served.component_id, fn.key)
        if Headers.OBJECT in hdrs:
            left = 30.0 if deadline is None else max(0.001, deadline - time.monotonic())
            body = await read_body(msg, self.payloads, left)
        else:
            body = msg.data
        args = args_codec(fn.type.params).decode(body)
        # Before running anything: a result that cannot cross hosts (a resource) is refused.
        out_codec = None if fn.type.result is None else codec(fn.type.result)
        trace_context = {k: hdrs[k] for k in _TRACE_KEYS if k in hdrs}
        call = Invocation(
            component=served.component_id, function=fn.key, args=tuple(args),
            caller=hdrs.get(Headers.CALLER) or "remote", deadline=deadline,
            link_name=hdrs.get(Headers.LINK), invocation_id=inv_id, trace_context=trace_context,
        )
        token = context.attach(propagate.extract(hdrs)) if trace_context else None
        try:
            result = await component.chain.invoke(call)
        finally:
            if token is not None:
                context.detach(token)
        return b"" if out_codec is None else out_codec.encode(result)

    async def _reply(self, msg: Msg, component: Component, body: bytes, status: str,
                     inv_id: str, content_type: str | None = None) -> None:
        """Answer with the digest of the code that ran (a rescale may have swapped it since)."""
        headers = {Headers.STATUS: status, Headers.HOST: self.host_id,
                   Headers.DIGEST: component.compiled.ref}
        if content_type:
            headers[Headers.CONTENT_TYPE] = content_type
        try:
            await publish(self.nc, self.payloads, msg.reply, body, headers, f"{inv_id}.res")
        except Exception as exc:
            if status != STATUS_OK:
                _LOG.warning("cannot send error reply for %s: %s", inv_id, exc)
                return
            body = error_body(KIND_INTERNAL, f"cannot send the {len(body)}-byte result: {exc}",
                              component=self._name_of(component), function="?",
                              host=self.host_id, invocation_id=inv_id)
            with contextlib.suppress(Exception):
                await self._reply(msg, component, body, KIND_INTERNAL, inv_id, JSON_TYPE)

    def _name_of(self, component: Component) -> str:
        return next((cid for cid, s in self.served.items() if s.component is component),
                    component.name)

    async def _fail(self, msg: Msg, served: Served, component: Component, inv_id: str,
                    function: str, kind: str, message: str, exc: BaseException | None) -> None:
        if not msg.reply:
            return
        body = error_body(kind, message, component=served.component_id, function=function,
                          host=self.host_id, invocation_id=inv_id, exc=exc)
        with contextlib.suppress(Exception):
            await self._reply(msg, component, body, kind, inv_id, JSON_TYPE)


def _deadline(hdrs: dict[str, str], component: Component, cid: str, fkey: str) -> float | None:
    """The call's ``time.monotonic()`` deadline: the caller's (minus the reply margin), capped
    by the component's own timeout."""
    now = time.monotonic()
    deadline: float | None = None
    own = component.config.limits.timeout
    if own is not None:
        deadline = now + own
    raw = hdrs.get(Headers.DEADLINE)
    if raw:
        try:
            budget = float(raw) - time.time()
        except ValueError:
            raise ArgumentError(f"bad {Headers.DEADLINE} header {raw!r}: expected Unix "
                                "seconds") from None
        budget -= min(REPLY_MARGIN, max(budget, 0.0) * 0.1)
        if budget <= 0:
            late = DeadlineExceeded(cid, fkey, 0.0)
            late.detail = ("the caller's deadline passed before the call started "
                           "(overloaded host, or clocks out of sync between machines)")
            raise late
        deadline = now + budget if deadline is None else min(deadline, now + budget)
    return deadline

