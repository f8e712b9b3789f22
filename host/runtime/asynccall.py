"""Inline-first async calls: the bookkeeping behind running wasm on the event-loop thread.

Handing every ``await invoke`` to a worker thread costs a ~20–40 µs round trip, more than a
small call itself. So a call that can start at once on a warm pooled instance is started with
``func_call_async`` on the loop thread and polled once: every Store's epoch callback
(``engine.StoreDeadline``) makes async calls yield at each epoch tick, so one poll holds the
loop for at most about one tick. A call finished by then is done, inline. One still running
is *migrated*: a worker thread keeps polling the suspended future until it finishes or its
deadline traps it, and resolves the caller's asyncio future.

Two cheap guards keep the loop responsive:

- ``FuncHistory``: a function whose calls outlive their first poll (or hold the loop for a
  whole epoch tick inline, as a blocking host import would) is sent straight to a worker for a
  while, backing off exponentially, so long functions do not hold the loop on every call;
- the inline budget: at most ~1 ms of inline wasm per loop iteration; past it a quick call
  waits for a turn in a later iteration (``next_turn``, first come first served), others go
  to workers.

Crash rules (each one aborts the process, from the async spike): a future must be deleted
before its Store is freed and while its ``Func`` lives (``InflightCall`` holds the slot, and
deletes the future before giving the slot back); never ``epoch_deadline_async_yield_and_update``.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import TYPE_CHECKING, Any

from .convert import AsyncCall

if TYPE_CHECKING:
    from .instances import InstanceManager, Limits, Slot
    from .loader import ExportedFunction

INLINE_BUDGET = 0.001
"""Seconds of inline wasm per event-loop iteration."""
MAX_TURNS = 64
"""Loop iterations a quick call waits for its inline turn before it takes a worker instead."""
MAX_BACKOFF = 64
"""Calls of a long-running function sent to workers between two inline probes, at most."""


class NotInline:
    """Marker: the call could not start inline; run it the usual way."""

    __slots__ = ()


NOT_INLINE = NotInline()


class FuncHistory:
    """Whether one function's recent inline calls finished within their first poll.

    After a miss the next ``skip`` calls go to workers, then one probes inline again; each
    further miss doubles that, a quick inline call resets it. Only the loop thread writes it."""

    __slots__ = ("skip", "backoff")

    def __init__(self) -> None:
        self.skip = 0
        self.backoff = 0

    def allow(self) -> bool:
        if self.skip:
            self.skip -= 1
            return False
        return True

    def record(self, quick: bool) -> None:
        if quick:
            self.backoff = 0
        else:
            self.backoff = min(self.backoff * 2 or 1, MAX_BACKOFF)
            self.skip = self.backoff


class _Budget(threading.local):
    """Inline seconds spent in the current iteration of this thread's event loop, and the calls
    waiting for a turn in the next one. Reset when a different loop runs on the thread."""

    loop: asyncio.AbstractEventLoop | None = None
    spent = 0.0
    armed = False
    ahead = 0
    """Calls woken for this iteration that have not started yet."""
    waiting: collections.deque[asyncio.Future[None]] | None = None
    """Callers waiting for the next iteration, in arrival order."""
    again: collections.deque[asyncio.Future[None]] | None = None
    """Callers woken for this iteration whose turn the budget ran out on: first next time."""


_budget = _Budget()


def _state() -> _Budget:
    b = _budget
    loop = asyncio.get_running_loop()
    if b.loop is not loop:  # a new loop on this thread: nothing of the old one carries over
        b.loop, b.spent, b.armed, b.ahead = loop, 0.0, False, 0
        b.waiting, b.again = collections.deque(), collections.deque()
    return b


def budget_left(turn: bool = False) -> bool:
    """Whether a call may run inline now: budget left in this iteration and nobody waiting for
    a turn, unless this call has its turn now (``turn``). So while any caller waits, callers
    take turns, one call each, first come first served."""
    b = _state()
    return b.spent < INLINE_BUDGET and (turn or not (b.ahead or b.waiting or b.again))


def budget_spent() -> bool:
    """Whether this loop iteration has run its share of inline wasm."""
    return _state().spent >= INLINE_BUDGET


async def next_turn(missed: bool = False) -> None:
    """Wait for a turn in a later loop iteration, behind the callers already waiting; one whose
    turn the budget ran out on (``missed``) goes ahead of the newcomers."""
    b = _state()
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    queue = b.again if missed else b.waiting
    assert queue is not None
    queue.append(fut)
    if not b.armed:
        b.armed = True
        loop.call_soon(_reset)
    try:
        await fut
    finally:
        if fut.done() and not fut.cancelled() and b.ahead:
            b.ahead -= 1


def charge(seconds: float) -> None:
    """Count inline time; the first charge of an iteration schedules the reset, which runs
    once the loop has gone through the callbacks already waiting."""
    b = _state()
    b.spent += seconds
    if not b.armed:
        b.armed = True
        asyncio.get_running_loop().call_soon(_reset)


def _reset() -> None:
    b = _budget
    b.spent = 0.0
    b.armed = False
    b.ahead = 0  # those woken last time have all run by now (they were first in line)
    again, waiting = b.again, b.waiting
    if again or waiting:
        b.again, b.waiting = collections.deque(), collections.deque()
        for queue in (again, waiting):
            for fut in queue or ():  # they resume in this order, in the next iteration
                if not fut.done():
                    fut.set_result(None)
                    b.ahead += 1


class InflightCall:
    """A call that did not finish in its first inline poll, with everything it borrows: the
    slot (so the Store and the ``Func`` outlive the future) and the capacity unit it holds.

    Exactly one of ``finish`` (on a worker), ``finish_quietly`` (the caller was cancelled
    before a worker took it) or ``abandon`` (no worker can take it) runs, and it releases
    the slot and the capacity."""

    __slots__ = ("manager", "slot", "call", "fn", "limits", "cancelled")

    def __init__(self, manager: InstanceManager, slot: Slot, call: AsyncCall,
                 fn: ExportedFunction, limits: Limits) -> None:
        self.manager = manager
        self.slot = slot
        self.call = call
        self.fn = fn
        self.limits = limits
        self.cancelled = False

    def cancel(self) -> None:
        """The awaiting task was cancelled: the worker turns this into a trap at the next
        tick (the deadline check happens there, where the Store is owned)."""
        self.cancelled = True

    def finish(self) -> Any:
        """Poll until done (on a worker thread), then map the outcome on this thread: host
        import exceptions are kept per thread."""
        call, slot, deadline = self.call, self.slot, self.slot.armed()
        try:
            try:
                while not call.poll():  # each poll returns at the next epoch tick
                    if self.cancelled:
                        deadline.hard = 0.0
                try:
                    return call.result()
                except BaseException as exc:
                    slot.broken = True
                    return self.manager._failed(exc, self.fn, self.limits)
            finally:
                call.close()  # before the slot, and with it the Store, can go
        finally:
            self.manager._end_async(slot)

    def finish_quietly(self) -> None:
        self.cancelled = True
        try:
            self.finish()
        except BaseException:  # nobody awaits it any more
            pass

    def abandon(self) -> None:
        """Drop the suspended call without running it further (no worker will): deleting a
        suspended future is safe while its Store lives; the instance is then unusable."""
        try:
            self.slot.broken = True
            self.call.close()
        finally:
            self.manager._end_async(self.slot)
