"""Inline-first async invocations: quick calls on the loop thread, long ones migrated to workers.

``InstanceStats.inline`` counts calls finished in their first poll on the event-loop thread,
``migrated`` calls handed suspended to a worker; worker threads are counted by the runtime's
pool, so "no worker was used" is checked directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from _wat import HOST_IMPORT, LIMITS
from trellis.host.runtime.engine import EngineConfig
from trellis.host.runtime.imports import HostImports
from trellis.host.runtime.instances import InstancePolicy
from trellis.host.runtime.runtime import Component, ComponentConfig, Runtime
from trellis.lattice.errors import CapacityTimeout, DeadlineExceeded, GuestTrap

GREETING = "Hello from Python, Developer! Built with the Component Model."


def pooled(n: int = 4) -> ComponentConfig:
    return ComponentConfig(policy=InstancePolicy(mode="pooled", max_instances=n))


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with Runtime(cache_dir=tmp_path) as r:
        yield r


@pytest.fixture
def slow_ticks(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime whose epoch ticks once a second: an OS preemption during a quick call (under a
    loaded machine) is not taken for a slow function, so only the budget decides."""
    with Runtime(cache_dir=tmp_path, engine=EngineConfig(epoch_tick=1.0)) as r:
        yield r


def workers(rt: Runtime) -> int:
    """Worker threads the runtime ever started."""
    return rt._workers._threads


class Heartbeat:
    """A task sleeping 1 ms at a time: its largest gap is how long the loop was held."""

    def __init__(self) -> None:
        self.gaps: list[float] = []

    async def run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    @property
    def max_gap(self) -> float:
        return max(self.gaps)


@contextlib.asynccontextmanager
async def heartbeat() -> AsyncIterator[Heartbeat]:
    hb = Heartbeat()
    task = asyncio.create_task(hb.run())
    await asyncio.sleep(0.005)
    try:
        yield hb
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settled(comp: Component, timeout: float = 2.0) -> None:
    """Wait until every unit of capacity is back (migrated calls release it on a worker)."""
    end = time.monotonic() + timeout
    while comp.instances.capacity.in_use and time.monotonic() < end:
        await asyncio.sleep(0.005)
    assert comp.instances.capacity.in_use == 0


async def test_quick_calls_finish_inline_without_a_worker(slow_ticks: Runtime, calc_wat: str
                                                         ) -> None:
    rt = slow_ticks  # an OS preemption during a call is not taken for a slow function
    limits = rt.load(LIMITS.encode(), name="limits", config=pooled())
    calc = rt.load(calc_wat.encode(), name="calc", config=pooled())
    limits.call("add", 0, 0)  # a warm instance in each pool
    calc.call("greet", "x")
    for i in range(20):
        assert await limits.invoke("add", i, 40) == i + 40
        assert await calc.invoke("greet", f"Dev{i}") == f"Hello, Dev{i}!"
        assert await calc.invoke("add", i, 1, timeout=5) == i + 1
        await asyncio.sleep(0)  # a server's loop runs other callbacks: the budget starts over
    # All inline, no worker; a stray tick during an OS preemption of a call may migrate one.
    assert limits.instances.stats.inline >= 19 and calc.instances.stats.inline >= 39
    if limits.instances.stats.migrated + calc.instances.stats.migrated == 0:
        assert workers(rt) == 0
    assert limits.instances.capacity.in_use == calc.instances.capacity.in_use == 0


async def test_greeter_inline(greeter_wasm: Path, tmp_path: Path) -> None:
    with Runtime(cache_dir=tmp_path) as rt:
        greeter = rt.load(greeter_wasm, config=pooled())
        assert greeter.call("greet", "Developer") == GREETING  # warm instance
        for _ in range(20):
            assert await greeter.invoke("greet", "Developer") == GREETING
            await asyncio.sleep(0)
        stats = greeter.instances.stats
        assert stats.inline >= 19  # as above: all of them, bar a rare preemption
        if stats.migrated == 0:
            assert workers(rt) == 0


async def test_fresh_mode_and_cold_pool_use_workers(rt: Runtime) -> None:
    fresh = rt.load(LIMITS.encode(), name="limits")
    assert await fresh.invoke("add", 1, 2) == 3
    cold = rt.load(LIMITS.encode(), name="limits", config=pooled())
    assert await cold.invoke("add", 1, 2) == 3  # no warm instance yet: a worker makes one
    assert fresh.instances.stats.inline == cold.instances.stats.inline == 0
    assert await cold.invoke("add", 2, 2) == 4  # now there is one
    assert cold.instances.stats.inline == 1


async def test_long_call_migrates_and_the_loop_keeps_running(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits", config=pooled(1))
    comp.call("add", 0, 0)
    async with heartbeat() as hb:
        started = time.perf_counter()
        assert await comp.invoke("burn", 300_000_000) == 300_000_000
        took = time.perf_counter() - started
    stats = comp.instances.stats
    assert stats.migrated == 1 and stats.inline == 0
    assert took > 0.05  # it really ran long
    assert hb.max_gap < 0.05, hb.max_gap
    await settled(comp)
    # The same instance served it and is still healthy, inline again for a quick call.
    assert await comp.invoke("add", 1, 2) == 3
    assert comp.instances.stats.inline == 1 and comp.instances.stats.created == 1


async def test_long_function_backs_off_to_workers(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits", config=pooled(1))
    comp.call("add", 0, 0)
    for _ in range(3):
        assert await comp.invoke("burn", 50_000_000) == 50_000_000
    stats = comp.instances.stats
    assert stats.migrated == 2 and stats.inline == 0  # miss, skip one, miss again, skip two


async def test_spin_hits_its_deadline_while_the_loop_ticks(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits", config=pooled(2))
    comp.call("add", 0, 0)
    async with heartbeat() as hb:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            await comp.invoke("spin", timeout=0.3)
        took = time.monotonic() - started
    assert 0.29 <= took < 0.6, took
    assert info.value.function == "spin"
    assert comp.instances.stats.migrated == 1
    assert hb.max_gap < 0.05, hb.max_gap
    await settled(comp)
    assert comp.instances.stats.discarded == 1  # the trapped Store is dropped, not pooled
    assert await comp.invoke("add", 2, 2) == 4


async def test_burst_of_mixed_calls(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits", config=pooled(6))
    for _ in range(3):
        comp.call("add", 0, 0)

    async def one(k: int) -> tuple[str, Any]:
        kind = ("add", "burn", "spin", "add", "burn")[k % 5]
        await asyncio.sleep(k % 10 * 0.003)  # staggered: inline, migrated and worker calls mix
        try:
            if kind == "add":
                return kind, await comp.invoke("add", k, k)
            if kind == "burn":
                return kind, await comp.invoke("burn", 10_000_000 * (k % 7 + 1))
            return kind, await comp.invoke("spin", timeout=0.1)
        except (DeadlineExceeded, CapacityTimeout) as exc:
            return kind, exc

    async with heartbeat() as hb:
        results = await asyncio.gather(*(one(k) for k in range(50)))
    for k, (kind, value) in enumerate(results):
        if kind == "add":
            assert value == 2 * k
        elif kind == "burn":
            assert value == 10_000_000 * (k % 7 + 1)
        else:
            assert isinstance(value, (DeadlineExceeded, CapacityTimeout)), value
    assert any(isinstance(v, DeadlineExceeded) for _, v in results)
    await settled(comp)
    stats = comp.instances.stats
    refused = sum(isinstance(v, CapacityTimeout) for _, v in results)  # never got an instance
    assert stats.active == 0 and stats.calls == 3 + 50 - refused
    assert stats.inline > 0 and stats.migrated > 0
    assert hb.max_gap < 0.1, hb.max_gap
    assert await comp.invoke("add", 20, 22) == 42


async def test_cancelling_a_migrated_call_frees_its_instance(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits", config=pooled(1))
    comp.call("add", 0, 0)
    task = asyncio.create_task(comp.invoke("spin"))  # no deadline: only cancellation ends it
    await asyncio.sleep(0.05)
    assert comp.instances.capacity.in_use == 1 and comp.instances.stats.migrated == 1
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settled(comp, timeout=1.0)
    assert time.monotonic() - started < 0.5
    assert comp.instances.stats.discarded == 1
    assert await comp.invoke("add", 1, 1, timeout=1) == 2
    assert comp.call("add", 2, 3) == 5


async def test_host_imports_run_inline_and_their_exceptions_keep_their_cause(
        rt: Runtime) -> None:
    threads: list[str] = []

    def double(x: int) -> int:
        threads.append(threading.current_thread().name)
        if x == 1:
            raise ZeroDivisionError("host says no")
        return x * 2

    imports = HostImports()
    imports.register("example:host/math", {"double": double})
    comp = rt.load(HOST_IMPORT.encode(), name="quad", imports=imports, config=pooled())
    assert comp.call("quadruple", 5) == 20
    threads.clear()
    assert await comp.invoke("quadruple", 3) == 12
    assert threads == [threading.current_thread().name] * 2  # on the loop thread
    with pytest.raises(GuestTrap) as info:
        await comp.invoke("quadruple", 1)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "ZeroDivisionError" in str(info.value)
    assert comp.instances.stats.inline == 2
    assert comp.instances.capacity.in_use == 0
    # The trapped instance was dropped; the next call gets a new one.
    assert comp.call("quadruple", 2) == 8
    assert await comp.invoke("quadruple", 4) == 16


async def test_sync_calls_on_a_store_that_ran_async_calls(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits", config=pooled(1))
    comp.call("add", 0, 0)
    assert await comp.invoke("add", 1, 2) == 3
    assert await comp.invoke("burn", 100_000_000) == 100_000_000  # migrated, same Store
    await settled(comp)
    assert comp.instances.stats.created == 1
    assert comp.call("add", 7, 8) == 15  # no Yield outside an async call
    assert comp.call("burn", 100_000_000) == 100_000_000  # untimed: runs across ticks
    assert comp.call("burn", 100_000_000, timeout=10) == 100_000_000
    assert comp.instances.stats.created == 1  # all on the one pooled Store
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        comp.call("spin", timeout=0.1)  # the deadline still holds for sync calls
    assert 0.09 <= time.monotonic() - started < 0.5
    assert await comp.invoke("add", 1, 1) == 2


async def test_inline_budget_lets_the_loop_run(slow_ticks: Runtime) -> None:
    rt = slow_ticks
    comp = rt.load(LIMITS.encode(), name="limits", config=pooled())
    comp.call("add", 0, 0)
    n = 3000  # tens of ms of back-to-back calls in one task, which never awaits a real future
    async with heartbeat() as hb:
        for i in range(n):
            assert await comp.invoke("add", i, 1) == i + 1
    stats = comp.instances.stats
    assert len(hb.gaps) > 1  # past the budget the task waited for a turn: the loop ran
    assert hb.max_gap < 0.05, hb.max_gap
    # ... on the loop, not on a worker (a call across a tick may migrate, then one probes)
    assert stats.inline >= n - 3 * stats.migrated - 1, stats
    if stats.migrated == 0:
        assert workers(rt) == 0


async def test_callers_past_the_budget_take_turns(slow_ticks: Runtime) -> None:
    rt = slow_ticks
    comp = rt.load(LIMITS.encode(), name="limits", config=pooled())
    comp.call("add", 0, 0)
    callers, calls = 20, 1000
    done = [0] * callers
    alone: list[int] = []  # the first caller's calls before any other caller finished one
    at_first_finish: list[int] = []

    async def caller(k: int) -> None:
        for i in range(calls):
            assert await comp.invoke("add", i, k) == i + k
            done[k] += 1
            if k and not alone:
                alone.append(done[0])
        if not at_first_finish:
            at_first_finish.extend(done)

    await asyncio.wait_for(asyncio.gather(*(caller(k) for k in range(callers))), 60)
    # The first caller runs alone until the first budget (~1 ms: a few hundred quick calls at
    # most) is spent; from then on, while any caller waits, they take turns, one call each. So
    # when the first is through, every other has made its calls less about that first budget's.
    assert at_first_finish[0] == calls and alone[0] < calls // 2, (alone, at_first_finish)
    assert min(at_first_finish[1:]) >= calls - alone[0] - 1, (alone, at_first_finish)
    assert max(at_first_finish[1:]) - min(at_first_finish[1:]) <= 1, at_first_finish
    stats = comp.instances.stats
    assert stats.inline >= callers * calls - 3 * stats.migrated - 1, stats
    if stats.migrated == 0:
        assert workers(rt) == 0
