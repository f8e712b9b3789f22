"""A component that calls async host imports in a loop stays on the event loop, in the task of
its caller: waiting for a provider is not computing, so it never migrates to a worker thread,
and no task is made per host call (``runtime/bridged.py``, ``runtime/hostcalls.py``)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from trellis.host.runtime.imports import HostImports
from trellis.host.runtime.instances import InstancePolicy
from trellis.host.runtime.runtime import ComponentConfig, Runtime
from trellis.lattice.errors import DeadlineExceeded

# naps(n, ms): calls test:host/clock.sleep(ms) n times, returns n.
NAPS = r"""
(component
  (import "test:host/clock" (instance $clock (export "sleep" (func (param "ms" u32)))))
  (core func $sleep (canon lower (func $clock "sleep")))
  (core module $m
    (import "host" "sleep" (func $s (param i32)))
    (func (export "naps") (param $n i32) (param $ms i32) (result i32) (local $i i32)
      (block $done
        (loop $again
          (br_if $done (i32.eq (local.get $i) (local.get $n)))
          (call $s (local.get $ms))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $again)))
      (local.get $i)))
  (core instance $host (export "sleep" (func $sleep)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func (export "naps") (param "n" u32) (param "ms" u32) (result u32)
    (canon lift (core func $i "naps")))
)
"""


class Clock:
    def __init__(self) -> None:
        self.seen: list[tuple[threading.Thread, asyncio.Task[object] | None]] = []

    async def sleep(self, ms: int) -> None:
        self.seen.append((threading.current_thread(), asyncio.current_task()))
        await asyncio.sleep(ms / 1000)


async def test_a_loop_of_provider_calls_runs_in_the_callers_task(tmp_path: Path) -> None:
    clock = Clock()
    imports = HostImports()
    imports.register("test:host/clock", clock)
    async with Runtime(cache_dir=tmp_path, imports=imports) as rt:
        comp = rt.load(NAPS.encode(), config=ComponentConfig(policy=InstancePolicy(
            mode="pooled")))
        # 30 waits of 1 ms: far past the epoch tick and the Store's yield threshold.
        assert await comp.invoke("naps", 30, 1) == 30
        me = asyncio.current_task()
        assert len(clock.seen) == 30
        assert all(thread is threading.main_thread() for thread, _ in clock.seen)
        assert all(task is me for _, task in clock.seen)


async def test_deadline_and_cancellation_still_stop_a_waiting_guest(tmp_path: Path) -> None:
    clock = Clock()
    imports = HostImports()
    imports.register("test:host/clock", clock)
    async with Runtime(cache_dir=tmp_path, imports=imports) as rt:
        comp = rt.load(NAPS.encode())
        started = asyncio.get_running_loop().time()
        try:
            await comp.invoke("naps", 5, 60_000, timeout=0.2)
        except DeadlineExceeded:
            pass
        else:
            raise AssertionError("the deadline did not stop the wait")
        assert asyncio.get_running_loop().time() - started < 2
        task = asyncio.ensure_future(comp.invoke("naps", 5, 60_000))
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert task.cancelled()
        assert await comp.invoke("naps", 2, 0) == 2  # the component still works
