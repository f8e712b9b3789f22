"""Serving invocations over NATS: one queue subscription per running component.

Every host running component ``c`` subscribes ``trellis.rpc.{lattice}.c.*`` in the queue group
``{lattice}.c``, so NATS spreads calls over the replicas with no routing table. Each request
runs in its own task: decode the arguments by the function's parameter types, build an
``Invocation`` (deadline from the header, W3C trace context, caller) and run it through the
component's interceptor chain, then reply with the encoded result or a typed error (the wire
protocol lives in ``trellis.lattice.rpc``; docs/protocol.md).

Concurrency: requests reach the host straight from the connection's read loop
(``lattice/dispatch.py``) and each call starts at once, in place: one that finishes without
waiting (a quick export on a warm instance) costs no task; one that waits continues in a task,
so calls of one component run concurrently. At most ``max_in_flight`` calls run per host;
beyond that requests wait in a backlog, in order (``MAX_BACKLOG``, then refused as
``capacity``). Never does the read loop wait for a call: replies to the host's own outgoing
calls arrive on the same connection.

Per call the host keeps to what the protocol needs: no per-call header dicts on replies (one
per component digest), no trace work without trace headers, no spy record without a spy.

Resource handling: ``drain(timeout)`` stops taking calls (unsubscribes, keeps processing what
NATS already delivered) and waits for the calls in flight until the deadline; ``cancel()``
ends the rest, each answered with a ``stopped`` error so no caller waits for its timeout.

Error handling: a handler never raises into nats-py (a failing callback would be logged and
dropped, a cancelled one would end the subscription); every failure becomes an error reply.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import context, propagate

from ..lattice import dispatch, subjects
from ..lattice.codec import ENCODING, args_codec, codec
from ..lattice.connection import flush
from ..lattice.errors import ArgumentError, DeadlineExceeded, HostStoppedError
from ..lattice.models import Describe, Headers
from ..lattice.rpc import (
    DESCRIBE,
    JSON_TYPE,
    KIND_CAPACITY,
    KIND_INTERNAL,
    KIND_STOPPED,
    STATUS_OK,
    PayloadStore,
    classify,
    error_body,
    fast_headers,
    fits_encoded,
    header_block,
    publish,
    publish_encoded,
    read_body,
)
from ..lattice.wit.typejson import FORMAT, exports_to_json
from . import eager
from .invocation import Invocation
from .runtime.asynccall import budget_spent
from .runtime.instances import GuestExit

if TYPE_CHECKING:
    from .runtime.runtime import Component
    from .telemetry import InvocationTelemetry

_LOG = logging.getLogger(__name__)

REPLY_MARGIN = 0.05
"""Seconds before the caller's deadline at which the guest is stopped, so the typed deadline
error reaches the caller before it gives up (at most 10% of the budget)."""
MAX_IN_FLIGHT = 1024
"""Calls a host runs (or holds waiting for an instance) at once, over all its components."""
MAX_BACKLOG = 65536
"""Requests a host keeps, in order, while ``MAX_IN_FLIGHT`` calls run; beyond it a request is
refused at once with a ``capacity`` error (nats-py's own pending limit is also 65536)."""
_NO_HEADERS: dict[str, str] = {}


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
    functions: dict[str, _Function] = field(default_factory=dict, repr=False)
    """Export key -> what decoding and encoding it takes, for the current ``component``."""

    def __post_init__(self) -> None:
        self.swap(self.component)

    def swap(self, component: Component) -> None:
        self.component = component
        self.functions = {}
        self.describe = Describe(
            component=self.component_id, digest=component.compiled.ref, format=FORMAT,
            exports=exports_to_json(component.world),
        ).model_dump_json().encode()


class RpcServer:
    """The invocation side of a host: subscriptions, in-flight calls, replies."""

    def __init__(self, nc: Client, lattice: str, host_id: str, *,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.nc, self.lattice, self.host_id = nc, lattice, host_id
        self.payloads = PayloadStore(nc, lattice)
        fast_headers(nc)  # every request carries 3 headers: parse them at a third of the cost
        self.served: dict[str, Served] = {}
        self.max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._backlog: collections.deque[tuple[Served, Msg]] = collections.deque()
        self._feeder: asyncio.Task[None] | None = None
        self._replies: set[asyncio.Task[None]] = set()
        """Error replies to requests that never started (kept so they are not collected)."""
        self._closing = False
        self._operations: dict[str, str] = {}
        """Subject -> operation: unescaping a token costs ~10 µs, a dict hit 50 ns."""
        self._ok_headers: dict[str, tuple[dict[str, str], bytes]] = {}
        """Component digest -> the headers of an ``ok`` reply, and their wire encoding."""
        self._id_prefix = f"{random.getrandbits(64):016x}"
        self._count = itertools.count(1)
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

        tasks, backlog, start = self._tasks, self._backlog, self._start

        async def on_msg(msg: Msg) -> None:
            # Runs in the connection's read loop (lattice/dispatch.py): never waits for long.
            if backlog or len(tasks) >= self.max_in_flight:
                self._hold(served, msg)
                return
            if budget_spent():
                # This loop iteration ran its share of inline wasm: let the loop go round
                # first (later messages wait in the socket buffer), rather than each call
                # waiting for it in a task of its own.
                await asyncio.sleep(0)
            start(served, msg)

        served.sub = await dispatch.subscribe(
            self.nc, subjects.rpc_component(self.lattice, cid), on_msg,
            queue=subjects.rpc_queue(self.lattice, cid),
        )
        self.served[cid] = served
        await flush(self.nc)

    def _start(self, served: Served, msg: Msg) -> None:
        """Run one call at once, here (``host/eager.py``): most finish without waiting for
        anything and need no task of their own; one that waits continues in a task."""
        task = eager.start(self._handle(served, msg))
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _hold(self, served: Served, msg: Msg) -> None:
        """``max_in_flight`` calls are running: keep the request until one ends (in order),
        or refuse it at once when the backlog is full too."""
        if len(self._backlog) >= MAX_BACKLOG:
            self._refuse([(served, msg)], KIND_CAPACITY,
                         f"host {self.host_id} is at capacity ({self.max_in_flight} calls "
                         f"running, {len(self._backlog)} waiting)")
            return
        self._backlog.append((served, msg))
        if self._feeder is None or self._feeder.done():
            self._feeder = asyncio.create_task(self._feed())

    async def _feed(self) -> None:
        """Start held requests as room frees up, as many per loop iteration as its inline
        budget allows (new requests queue behind them, so the backlog drains under load)."""
        backlog = self._backlog
        while backlog:
            if len(self._tasks) >= self.max_in_flight:
                await self._wait_for_room()
                continue
            try:
                self._start(*backlog.popleft())
            except Exception:  # never leave the backlog without a feeder
                _LOG.exception("starting a held request failed")
            if budget_spent():
                await asyncio.sleep(0)

    def _refuse(self, requests: list[tuple[Served, Msg]], kind: str, message: str
                ) -> set[asyncio.Task[None]]:
        """Answer requests that never started with an error; returns the reply tasks (they
        are not counted as calls in flight, so ``cancel`` does not cancel them)."""
        replies: set[asyncio.Task[None]] = set()
        for served, msg in requests:
            inv_id = (msg.headers or _NO_HEADERS).get(Headers.INVOCATION_ID, "")
            replies.add(asyncio.create_task(self._fail(
                msg, served, served.component, inv_id, "?", kind, message, None)))
        self._replies |= replies
        for task in replies:
            task.add_done_callback(self._replies.discard)
        return replies

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._room.is_set() and len(self._tasks) < self.max_in_flight:
            self._room.set()

    async def _wait_for_room(self) -> None:
        while len(self._tasks) >= self.max_in_flight:
            self._room.clear()
            await self._room.wait()

    async def unserve(self, component_id: str, timeout: float) -> Served | None:
        """Stop taking calls for one component; wait (until ``timeout``) for its calls."""
        served = self.served.pop(component_id, None)
        if served is None:
            return None
        await self._drain_sub(served, timeout)
        deadline = time.monotonic() + timeout
        while ((served.active or any(s is served for s, _ in self._backlog))
               and time.monotonic() < deadline):
            await asyncio.sleep(0.01)
        held = [item for item in self._backlog if item[0] is served]
        if held:  # never started in time: say so rather than run them on a stopped component
            keep = [item for item in self._backlog if item[0] is not served]
            self._backlog.clear()  # in place: the subscription handlers hold this deque
            self._backlog.extend(keep)
            self._refuse(held, KIND_STOPPED, f"component {component_id} stopped on host "
                                             f"{self.host_id} before the call started")
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
        while self._tasks or self._backlog:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=left)
            else:  # the feeder is starting what waits
                await asyncio.sleep(min(left, 0.01))
        return True

    async def cancel(self, timeout: float = 1.0) -> None:
        """Cancel the calls still running; each answers its caller with a ``stopped`` error,
        as does each request still waiting to start."""
        if self._feeder is not None:
            self._feeder.cancel()
        running = set(self._tasks)
        held = list(self._backlog)
        self._backlog.clear()
        replies = self._refuse(held, KIND_STOPPED,
                               f"host {self.host_id} stopped before the call started")
        for task in running:
            task.cancel()
        if running or replies:
            await asyncio.wait(running | replies, timeout=timeout)

    # -- one call --------------------------------------------------------------------------------

    async def _handle(self, served: Served, msg: Msg) -> None:
        started = time.perf_counter()
        hdrs = msg.headers or _NO_HEADERS
        inv_id = hdrs.get(Headers.INVOCATION_ID) or f"{self._id_prefix}{next(self._count):016x}"
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
            headers, block = self._ok_reply(component)
            if fits_encoded(self.nc, out, block):  # the common case: one publish, no dicts
                try:
                    await publish_encoded(self.nc, msg.reply, out, headers, block)
                except Exception:  # publishing failed: the general path reports it
                    await self._reply(msg, component, out, STATUS_OK, inv_id)
            else:  # through the payload store
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
            telemetry = self.telemetry
            if outcome is not None and telemetry is not None:
                caller = hdrs.get(Headers.CALLER) or "remote"
                duration_ms = telemetry.record(served.component_id, outcome, started)
                if telemetry.spying():  # only while a spy holds a lease
                    await telemetry.publish_spy(served.component_id, function, outcome,
                                                duration_ms, caller, inv_id,
                                                hdrs.get(Headers.TRACEPARENT))

    def _operation(self, subject: str) -> str:
        if len(self._operations) > 4096:
            self._operations.clear()
        op: str = subjects.operation_of(subject)
        self._operations[subject] = op
        return op

    def _ok_reply(self, component: Component) -> tuple[dict[str, str], bytes]:
        """The headers of an ``ok`` reply from ``component``'s code, and their wire encoding;
        ``Trellis-Status`` is left out (absent means ``ok``, docs/protocol.md §5.2)."""
        digest = component.compiled.ref
        found = self._ok_headers.get(digest)
        if found is None:
            if len(self._ok_headers) > 256:
                self._ok_headers.clear()
            headers = {Headers.HOST: self.host_id, Headers.DIGEST: digest}
            block = header_block(headers)
            assert block is not None  # a host id is a token, a digest is hex
            found = self._ok_headers[digest] = (headers, block)
        return found

    def _function(self, served: Served, component: Component, function: str) -> _Function:
        fns = served.functions if served.component is component else {}
        found = fns.get(function)
        if found is None:
            fn = component.resolve(function)
            # Before running anything: a result that cannot cross hosts (a resource) is refused.
            found = _Function(fn.key, args_codec(fn.type.params).decode,
                              None if fn.type.result is None else codec(fn.type.result).encode)
            if len(fns) < 4096:
                fns[function] = found
        return found

    async def _invoke(self, served: Served, component: Component, msg: Msg,
                      hdrs: dict[str, str], inv_id: str, function: str) -> bytes:
        encoding = hdrs.get(Headers.ENCODING)
        if encoding is not None and encoding != ENCODING:
            raise ArgumentError(f"unsupported value encoding {encoding!r}; this host speaks "
                                f"{ENCODING!r}")
        fn = self._function(served, component, function)
        deadline = _deadline(hdrs, component, served.component_id, fn.key)
        if Headers.OBJECT in hdrs:
            await eager.in_task()  # the payload store's timeouts need a task of their own
            left = 30.0 if deadline is None else max(0.001, deadline - time.monotonic())
            body = await read_body(msg, self.payloads, left)
        else:
            body = msg.data
        args = fn.decode(body)
        traceparent = hdrs.get(Headers.TRACEPARENT)
        trace_context: dict[str, str] = {}
        if traceparent is not None:
            trace_context[Headers.TRACEPARENT] = traceparent
            if Headers.TRACESTATE in hdrs:
                trace_context[Headers.TRACESTATE] = hdrs[Headers.TRACESTATE]
        call = Invocation(
            component=served.component_id, function=fn.key, args=tuple(args),
            caller=hdrs.get(Headers.CALLER) or "remote", deadline=deadline,
            link_name=hdrs.get(Headers.LINK), invocation_id=inv_id, trace_context=trace_context,
        )
        if traceparent is None:
            result = await component.chain.invoke(call)
        else:
            token = context.attach(propagate.extract(hdrs))
            try:
                result = await component.chain.invoke(call)
            finally:
                context.detach(token)
        return b"" if fn.encode is None else fn.encode(result)

    async def _reply(self, msg: Msg, component: Component, body: bytes, status: str,
                     inv_id: str, content_type: str | None = None) -> None:
        """Answer with the digest of the code that ran (a rescale may have swapped it since)."""
        if status == STATUS_OK and content_type is None:
            headers = dict(self._ok_reply(component)[0])
        else:
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


@dataclass(frozen=True, slots=True)
class _Function:
    """An export as the serving path needs it: its key and its argument/result codecs."""

    key: str
    decode: Callable[[bytes], list[Any]]
    encode: Callable[[Any], bytes] | None


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

