"""Driving ``wasi:http/incoming-handler.handle`` of a component for one request.

``ProxyComponent.start`` makes the request and response-outparam resources, starts
``Component.invoke`` (a fresh instance per request unless the component is pooled) and returns
an ``Exchange`` whose ``response`` future resolves as soon as the guest *sets* its response —
typically before it writes the body, which then streams through ``body`` while the guest runs.
The request and outparam are handed in as *detached* host resources (``TABLE.add_detached``):
the call's Store does not exist yet when its arguments are made.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...lattice.errors import ComponentLoadError
from ...lattice.wit.values import Err, Ok, Resource
from ..runtime.hostresources import DETACHED, TABLE, HostHandle, resource_id
from ..runtime.runtime import Component
from .pipe import Exchange, Pipe, PipeClosed
from .wasi_http import IncomingRequest, OutgoingResponse, ResponseOutparam

HANDLER = "wasi:http/incoming-handler"


@dataclass
class Response:
    status: int
    headers: list[tuple[str, bytes]]
    body: Pipe
    hold_until: float = 0.0
    """``time.monotonic()`` until which a consumer may hold the head back for more of the body
    (to send it whole or with a length); past it, the head and what is buffered go out."""


class ResponseError(Exception):
    """The guest set an ``error-code`` instead of a response."""

    def __init__(self, code: Any) -> None:
        self.code = code
        super().__init__(f"the component answered with error-code {code}")


class HttpExchange(Exchange):
    """One request in flight: the guest's call and the response it sets.

    ``response`` resolves once the response is set *and* its body has ``HOLD`` bytes, is
    finished or failed — or the call ended, or ``HOLD_TIME`` passed since it was set. Both
    consumers (``server.py``, ``lattice.py``) look at the body only then, so the loop is woken
    once for the head, not at every step of a small response (each wake-up costs the guest's
    thread a GIL hand-off); and a body streamed slowly (server-sent events, a long poll) does
    not keep its head and first bytes from the client.

    The time limit is a loop timer armed when the request starts (``arm``); if it fires
    before the guest set its response, the guest's thread re-arms it when it does, so a
    quick response costs no extra wake-up."""

    HOLD = 64 * 1024
    HOLD_TIME = 0.1
    """Seconds at most a set response waits for ``HOLD`` bytes or the end of its body."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float | None) -> None:
        super().__init__(loop, deadline)
        self.response: asyncio.Future[Response] = loop.create_future()
        self.call: asyncio.Task[Any] | None = None
        self._reps: list[int] = []
        self.body: Pipe | None = None
        """The response body, once the guest set its response."""
        self._held: Response | None = None
        """A response set but not handed to the loop yet (its body is not far enough)."""
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_idle = False
        """The hold timer fired before a response was set: ``_on_set`` arms it again."""
        self.response.add_done_callback(self._disarm)

    def arm(self, delay: float | None = None) -> None:
        """On the loop: start the hold's time limit (``ProxyComponent.start`` does)."""
        if not self.response.done() and self.loop is not None:
            self._timer = self.loop.call_later(self.HOLD_TIME if delay is None else delay,
                                               self._hold_expired)

    def _disarm(self, _fut: asyncio.Future[Response]) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _hold_expired(self) -> None:
        """On the loop: a response held ``HOLD_TIME`` goes out with its body unfinished."""
        self._timer = None
        if self.response.done():
            return
        with self._lock:
            held = self._held
            if held is None:  # not set yet: the guest's thread re-arms when it sets one
                self._timer_idle = True
                return
            left = held.hold_until - time.monotonic()
            if left <= 0:
                self._held = None
        if left > 0:
            self.arm(left)
        else:
            _settle(self.response, held)

    def _call_done(self, _task: asyncio.Task[Any]) -> None:
        """The guest returned (or failed): a body it did not finish never will be."""
        held = self._take_held()
        if held is not None:
            _settle(self.response, held)
        if self.body is not None:
            self.body.fail(PipeClosed("the component returned without finishing the body"))

    def _take_held(self) -> Response | None:
        with self._lock:
            held, self._held = self._held, None
        return held

    def _publish(self) -> None:
        """The held response's body got far enough (the guest's thread, pipe lock held)."""
        held = self._take_held()
        loop = self.loop
        if held is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_settle, self.response, held)

    def _on_set(self, outcome: Ok | Err) -> None:
        """From the guest's worker thread: hand the response to the loop (see ``HOLD``)."""
        loop = self.loop
        assert loop is not None
        if isinstance(outcome, Ok) and isinstance(outcome.value, OutgoingResponse):
            resp = outcome.value
            body = resp.body_obj
            if body is None:  # the guest never asked for a body: an empty one
                resp.body()
                body = resp.body_obj
                assert body is not None
                body.pipe.finish()
            self.body = body.pipe
            result: Any = Response(resp.status, resp.headers().entries(), body.pipe,
                                   time.monotonic() + self.HOLD_TIME)
            with self._lock:
                self._held = result
                rearm, self._timer_idle = self._timer_idle, False
            if body.pipe.call_when_held(self.HOLD, self._publish):
                if rearm and not loop.is_closed():  # set late: give the hold its time limit
                    loop.call_soon_threadsafe(self.arm, self.HOLD_TIME)
                return
            if self._take_held() is None:
                return  # the call ended meanwhile and handed it over
        else:
            result = ResponseError(outcome.value)
        loop.call_soon_threadsafe(_settle, self.response, result)

    def release(self) -> None:
        """Drop the detached request/outparam entries the guest did not consume, and the call
        once it is over."""
        for rep in self._reps:
            try:
                TABLE.take(DETACHED, rep)
            except Exception:  # already moved or dropped by the guest
                pass
        self._reps.clear()
        call = self.call
        if call is not None:
            if call.done():
                self._forget(call)
            else:  # the guest still runs (its client went away): forget it when it ends
                call.add_done_callback(self._forget)

    def _forget(self, call: asyncio.Task[Any]) -> None:
        """Free a failed call's instance now: its exceptions' tracebacks hold the frames that
        hold its Store, in cycles (a frame holds the exception that holds it; the frame that
        awaited the call holds this exchange). Left to the cyclic GC, a dead instance — grown
        to 50 MB by a streamed body — stayed resident until a full collection."""
        if self.call is call:
            self.call = None
        exc = None if call.cancelled() else call.exception()
        seen: set[int] = set()
        while exc is not None and id(exc) not in seen:  # the whole chain: causes hold frames too
            seen.add(id(exc))
            exc.__traceback__ = None
            exc = exc.__cause__ or exc.__context__


def _settle(fut: asyncio.Future[Any], value: Any) -> None:
    if fut.done():
        return
    if isinstance(value, BaseException):
        fut.set_exception(value)
    else:
        fut.set_result(value)


class ProxyComponent:
    """A loaded component that exports ``wasi:http/incoming-handler``."""

    def __init__(self, component: Component, *, timeout: float | None = None) -> None:
        self.component = component
        self.timeout = timeout
        keys = [k for k in component.compiled.functions if k.split("@")[0] == HANDLER
                or k.startswith(HANDLER + "@")]
        handle = [k for k in keys if k.endswith("#handle")]
        if not handle:
            raise ComponentLoadError(component.name, f"it does not export {HANDLER}",
                                     "build it for the wasi:http/proxy world")
        self.function = handle[0]
        types = [i.name for i in component.world.imports if i.name.startswith("wasi:http/types@")]
        if not types:
            raise ComponentLoadError(component.name, "it does not import wasi:http/types")
        self._req_type = resource_id(types[0], "incoming-request")
        self._out_type = resource_id(types[0], "response-outparam")

    def start(self, method: str, path_with_query: str, headers: Iterable[tuple[str, bytes]],
              body: Pipe, *, scheme: str = "http", authority: str | None = None) -> HttpExchange:
        """Start the guest on this request; ``body`` is fed by the caller (and finished)."""
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        ex = HttpExchange(loop, deadline)
        body.exchange = ex
        request = IncomingRequest(ex, method, path_with_query, scheme, authority, headers, body)
        outparam = ResponseOutparam(ex._on_set)
        req_rep, out_rep = TABLE.add_detached(request), TABLE.add_detached(outparam)
        ex._reps += [req_rep, out_rep]
        args = (  # lowered into the call's Store with raw calls (no ffi here, on the loop)
            Resource("incoming-request", HostHandle(req_rep, self._req_type), None),
            Resource("response-outparam", HostHandle(out_rep, self._out_type), None),
        )
        ex.call = loop.create_task(self.component.invoke(self.function, *args,
                                                         timeout=self.timeout))
        ex.call.add_done_callback(ex._call_done)
        ex.arm()
        return ex
