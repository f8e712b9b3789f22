"""Polling calls of components that import async host functions ("bridged" components).

Such a component must be instantiated and called through wasmtime's ``*_async`` C API. Each
poll runs the guest until it finishes, yields at an epoch tick (it is computing), or suspends
in an async host import (it waits for a provider). What the poll stopped on decides what the
driver does next (``hostcalls.drive_state``):

- on the event-loop thread (``drive_async``) a provider wait is awaited, so many calls wait on
  NATS or Redis at once without threads; an epoch yield after ``YIELD_AFTER`` of computing
  since the guest last resumed ends the inline part: the caller hands the rest to a worker
  thread, so a computing guest never holds the loop for long;
- on any other thread (``drive_blocking``) a provider wait is waited on with a deadline.

Either way every wait has the call's deadline; a wait that outlives it is abandoned and the
guest resumes into a trap (``hostcalls``), reported as ``DeadlineExceeded``.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import time
from collections.abc import Callable
from typing import Any

from wasmtime import WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime import component as wc

from .engine import YIELD_AFTER
from .hostcalls import HostWait, drive_state

Poll = Callable[[], bool]
TrapSoon = Callable[[], None]
OnTimeout = Callable[[], BaseException]

_SLICE = 0.1
"""Seconds a blocked driver waits before checking for cancellation."""


def _take(trap_soon: TrapSoon | None, poll: Poll) -> tuple[bool, HostWait | None, Any]:
    """One poll, and what it left in this thread's drive state (cleared again)."""
    st = drive_state()
    st.wait = None
    st.failure = None
    st.trap_soon = trap_soon
    try:
        done = poll()
    finally:
        wait, failure = st.wait, st.failure
        st.wait = st.failure = st.trap_soon = None
    return done, wait, failure


def _on_this_loop(wait: HostWait) -> bool:
    fut = wait.future
    loop = fut.get_loop() if isinstance(fut, asyncio.Future) else wait.loop if wait.on_loop \
        else None
    if loop is None:
        return False
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def drive_blocking(poll: Poll, deadline: float, *, trap_soon: TrapSoon | None = None,
                   on_timeout: OnTimeout | None = None,
                   cancelled: Callable[[], bool] = lambda: False) -> BaseException | None:
    """Poll to the end on this thread, blocking on provider waits until ``deadline``
    (``time.monotonic()``). Returns the first host-import failure, if any."""
    failure: BaseException | None = None
    while True:
        done, wait, failed = _take(trap_soon, poll)
        failure = failure or failed
        if done:
            return failure
        if wait is None:
            continue  # an epoch yield: keep computing
        if _on_this_loop(wait):
            wait.abandon(RuntimeError(
                "a blocking call on the event-loop thread cannot wait for an async host "
                "import; use `await component.invoke(...)`"))
            continue
        while not wait.done() and wait.abandoned is None:
            left = deadline - time.monotonic()
            if left <= 0:
                wait.abandon(on_timeout() if on_timeout else TimeoutError("deadline passed"))
            elif cancelled():
                wait.abandon(asyncio.CancelledError())
            else:
                wait.wait_blocking(min(left, _SLICE))


async def drive_async(poll: Poll, deadline: float, *, trap_soon: TrapSoon | None = None,
                      on_timeout: OnTimeout | None = None) -> tuple[bool, BaseException | None]:
    """Poll on the event-loop thread, awaiting provider waits. Returns ``(done, failure)``;
    ``done`` is ``False`` after an epoch yield: finish it with ``drive_blocking`` elsewhere.

    Cancellation of the awaiting task abandons the current wait and finishes the guest (it
    traps at once), then re-raises."""
    failure: BaseException | None = None
    resumed = time.monotonic()
    while True:
        done, wait, failed = _take(trap_soon, poll)
        failure = failure or failed
        if done:
            return done, failure
        if wait is None:
            # An epoch yield. The Store's policy counts from the start of the call, waits
            # included; only a guest that has *computed* for YIELD_AFTER since it last
            # resumed goes to a worker (else a loop of provider calls would migrate after its
            # first tick and pay a thread hop on every later call).
            if time.monotonic() - resumed < YIELD_AFTER:
                continue
            return done, failure
        left = deadline - time.monotonic()
        try:
            finished = left > 0 and await wait.wait_async(None if left == math.inf else left)
        except asyncio.CancelledError:
            wait.abandon(asyncio.CancelledError())
            drive_blocking(poll, deadline, trap_soon=trap_soon)
            raise
        if not finished:
            wait.abandon(on_timeout() if on_timeout else TimeoutError("deadline passed"))
        resumed = time.monotonic()


def instantiate(linker: wc.Linker, store: Any, component: wc.Component,
                deadline: float = math.inf) -> wc.Instance:
    """``linker.instantiate`` through ``instantiate_async``, driven on this thread."""
    inst = ffi.wasmtime_component_instance_t()
    err = ctypes.POINTER(ffi.wasmtime_error_t)()
    fut = ffi.wasmtime_component_linker_instantiate_async(
        linker.ptr(), store._context(), component.ptr(), ctypes.byref(inst), ctypes.byref(err))
    if not fut:
        raise WasmtimeError("wasmtime_component_linker_instantiate_async returned no future")
    try:
        failure = drive_blocking(lambda: bool(ffi.wasmtime_call_future_poll(fut)), deadline)
    finally:
        ffi.wasmtime_call_future_delete(fut)
    if err:
        raise WasmtimeError._from_ptr(err)
    if failure is not None:
        raise failure
    return wc.Instance._from_raw(inst)
