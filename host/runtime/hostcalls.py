"""Async host imports: a provider's coroutine awaited while the guest is suspended.

Providers talk to NATS, Redis or PostgreSQL with asyncio, so their import functions are
coroutines. wasmtime-py exposes no async host functions, so they are registered through the C
API (``wasmtime_component_linker_instance_add_func_async``): the callback starts the coroutine
and hands wasmtime a *continuation* that reports whether it is done; the guest stays
suspended on its fiber until then (wasmtime-host-notes Q5, pattern B: ~30 µs per host call,
against ~85 µs for a thread bridge).

Who runs the coroutine: the event loop the imports are bound to (``HostLoop``). A call polled
on that loop's thread leaves the coroutine unstarted and the driver (``bridged.drive_async``)
awaits it in its own task: no task per host call, no hop through the loop to start it or to
hear it finished (three loop iterations per call, a third of an in-process provider call's
overhead). A call polled on a worker thread hands it over with ``run_coroutine_threadsafe``
and blocks on it. Either way the driver learns what to wait for from the thread's
``DriveState`` after a poll that did not finish.

Failures: wasmtime reads a host function's error slot only when the callback returns, not
after the continuation, so a coroutine that raised (or timed out) is reported through the
driver: the exception is recorded on the thread's ``DriveState``, the continuation writes a
deliberately ill-typed result (wasmtime then traps at once) or, for a function without
results, asks the Store to trap at its next epoch check; the driver raises the recorded
exception whatever the guest did meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import itertools
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from wasmtime import _ffi as ffi

_state = threading.local()


class DriveState:
    """Per polling thread, while a bridged call is polled: what the guest waits for now and
    the first host failure of the call."""

    __slots__ = ("wait", "failure", "trap_soon")

    def __init__(self) -> None:
        self.wait: HostWait | None = None
        self.failure: BaseException | None = None
        self.trap_soon: Callable[[], None] | None = None


def drive_state() -> DriveState:
    st: DriveState | None = getattr(_state, "drive", None)
    if st is None:
        st = _state.drive = DriveState()
    return st


class HostLoop:
    """The event loop that runs provider coroutines: the one bound (the host's), else a private
    daemon loop started on first use, for runtimes used without asyncio."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._own: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def get(self) -> asyncio.AbstractEventLoop:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            return loop
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self.loop = loop
            return loop
        with self._lock:
            if self._own is None:
                own = self._own = asyncio.new_event_loop()
                self._thread = threading.Thread(target=own.run_forever, name="trellis-host-io",
                                                daemon=True)
                self._thread.start()
            return self._own

    def close(self) -> None:
        """Stop the private loop, if one was started (a bound loop belongs to its owner)."""
        own, self._own = self._own, None
        if own is not None:
            own.call_soon_threadsafe(own.stop)
            if self._thread is not None:
                self._thread.join(5)
            if not own.is_running():
                own.close()


class HostWait:
    """One host coroutine, waitable from its loop (``await``) or another thread.

    Made on the loop's thread, the coroutine is not started: ``wait_async`` runs it in the
    awaiting task. Made elsewhere, it already runs on the loop (``future``)."""

    __slots__ = ("future", "coro", "loop", "on_loop", "name", "abandoned", "_outcome")

    def __init__(self, future: asyncio.Future[Any] | concurrent.futures.Future[Any] | None,
                 on_loop: bool, name: str, *, coro: Coroutine[Any, Any, Any] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.future = future
        self.coro = coro
        """Not started yet (made on the loop thread); ``wait_async`` runs it."""
        self.loop = loop
        self.on_loop = on_loop
        self.name = name
        self.abandoned: BaseException | None = None
        """Set when the caller gave up (deadline, cancellation): the guest resumes with it."""
        self._outcome: tuple[bool, Any] | None = None

    def done(self) -> bool:
        fut = self.future
        return fut.done() if fut is not None else self._outcome is not None

    def outcome(self) -> tuple[bool, Any]:
        if self.abandoned is not None:
            return False, self.abandoned
        if self._outcome is not None:
            return self._outcome
        fut = self.future
        assert fut is not None
        if fut.cancelled():
            return False, asyncio.CancelledError(f"host import {self.name} was cancelled")
        exc = fut.exception()
        return (False, exc) if exc is not None else (True, fut.result())

    async def wait_async(self, timeout: float | None) -> bool:
        """On the loop thread: wait until done or ``timeout``; ``False`` on timeout."""
        coro, self.coro = self.coro, None
        if coro is not None:
            return await self._run(coro, timeout)
        fut = self.future
        assert isinstance(fut, asyncio.Future)
        if fut.done():
            return True
        done, _ = await asyncio.wait((fut,), timeout=timeout)
        return bool(done)

    async def _run(self, coro: Coroutine[Any, Any, Any], timeout: float | None) -> bool:
        """Await the coroutine here, in the driver's task. Cancelling that task cancels the
        coroutine too (and propagates); a timeout cancels it and returns ``False``."""
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                value = await coro
        except TimeoutError as exc:
            if scope.expired():
                return False
            self._outcome = (False, exc)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller was cancelled, not just the host call
            self._outcome = (False, asyncio.CancelledError(
                f"host import {self.name} was cancelled"))
        except BaseException as exc:  # the guest gets it as the host call's failure
            self._outcome = (False, exc)
        else:
            self._outcome = (True, value)
        return True

    def wait_blocking(self, timeout: float | None) -> bool:
        """On another thread: block until done or ``timeout``; ``False`` on timeout."""
        coro, self.coro = self.coro, None
        if coro is not None:  # made on the loop thread, waited elsewhere: run it there now
            assert self.loop is not None
            self.future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        fut = self.future
        assert fut is not None
        if isinstance(fut, concurrent.futures.Future):
            done, _ = concurrent.futures.wait((fut,), timeout=timeout)
            return bool(done)
        # A task of the host loop polled from a worker (the call migrated): get told.
        event = threading.Event()
        loop = fut.get_loop()
        loop.call_soon_threadsafe(fut.add_done_callback, lambda _f: event.set())
        return event.wait(timeout)

    def abandon(self, why: BaseException) -> None:
        """Stop waiting: the coroutine is cancelled and the guest resumes failing with ``why``."""
        self.abandoned = why
        self.cancel()

    def cancel(self) -> None:
        coro, self.coro = self.coro, None
        if coro is not None:
            coro.close()  # never started: nothing runs, nothing to tell
            return
        fut = self.future
        if fut is None:
            return  # ran in the driver's task, which has already stopped it
        if isinstance(fut, asyncio.Future) and not fut.get_loop().is_closed():
            fut.get_loop().call_soon_threadsafe(fut.cancel)
        else:
            fut.cancel()


def start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], name: str
          ) -> HostWait:
    """``coro`` for ``loop``: left for the driver to await when we are on that loop's thread,
    else handed over to run there."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return HostWait(None, True, name, coro=coro, loop=loop)
    return HostWait(asyncio.run_coroutine_threadsafe(coro, loop), False, name, loop=loop)


# --- the continuation thunk ---------------------------------------------------------------------

_calls: dict[int, Callable[[], bool]] = {}
"""Live continuations by their ``env`` id: one C thunk serves them all."""
_ids = itertools.count(1)


@ffi.wasmtime_func_async_continuation_callback_t
def _continue(env: Any) -> bool:
    fn = _calls.get(env or 0)
    if fn is None:
        return True  # cannot happen; never leave the guest suspended forever
    try:
        return fn()
    except BaseException as exc:  # never let an exception escape into wasmtime
        st = drive_state()
        if st.failure is None:
            st.failure = exc
        return True


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _finish(env: Any) -> None:
    _calls.pop(env or 0, None)


def install(cont_ret: Any, fn: Callable[[], bool]) -> None:
    """Give wasmtime ``fn`` as the continuation of the host call being made."""
    key = next(_ids)
    _calls[key] = fn
    c = cont_ret.contents
    c.callback = _continue
    c.env = key
    c.finalizer = _finish
