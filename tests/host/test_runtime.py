"""The runtime end to end on hand-written components: calls, limits, traps, imports, pooling."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from _wat import HOST_IMPORT, LIMITS
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from trellis.host.runtime.engine import EngineConfig
from trellis.host.runtime.imports import HostImports
from trellis.host.runtime.instances import InstancePolicy, Limits
from trellis.host.runtime.runtime import ComponentConfig, Runtime
from trellis.lattice.errors import (
    AmbiguousFunction,
    ArgumentError,
    CapacityTimeout,
    DeadlineExceeded,
    FunctionNotFound,
    GuestTrap,
    ResourceLimitExceeded,
    UnsatisfiedImports,
)


@pytest.fixture
def rt(tmp_path: Path):
    with Runtime(cache_dir=tmp_path) as r:
        yield r


@pytest.fixture
def fuel_rt(tmp_path: Path):
    with Runtime(cache_dir=tmp_path, engine=EngineConfig(consume_fuel=True)) as r:
        yield r


def test_call_and_introspection(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits")
    assert comp.call("add", 2, 40) == 42
    assert set(comp.functions()) >= {"add", "spin", "trap", "hog", "grow", "burn"}
    assert comp.resolve("add").type.result is not None


def test_infinite_loop_stops_at_deadline_and_host_stays_healthy(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits")
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        comp.call("spin", timeout=0.2)
    elapsed = time.monotonic() - started
    assert 0.19 <= elapsed < 1.0, elapsed
    assert info.value.component == "limits" and info.value.function == "spin"
    assert comp.call("add", 1, 1) == 2  # the next call works on a fresh Store


def test_memory_bomb_stopped_at_cap(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits")
    with pytest.raises(ResourceLimitExceeded) as info:
        comp.call("hog", max_memory=4 * 2**20, timeout=5)
    assert info.value.limit == "memory"
    # Below the cap memory.grow works, above it the guest sees -1 (no trap).
    assert comp.call("grow", 8, max_memory=4 * 2**20) == 1
    assert comp.call("grow", 1000, max_memory=4 * 2**20) == -1
    assert comp.call("add", 2, 2) == 4


def test_guest_trap_is_typed_with_backtrace_and_next_call_works(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits")
    with pytest.raises(GuestTrap) as info:
        comp.call("trap")
    assert "unreachable" in str(info.value)
    assert info.value.backtrace  # wasmtime's guest frames
    assert comp.call("add", 3, 4) == 7


def test_fuel_limit(fuel_rt: Runtime) -> None:
    comp = fuel_rt.load(LIMITS.encode(), name="limits")
    assert comp.call("burn", 1000, fuel=1_000_000) == 1000
    with pytest.raises(ResourceLimitExceeded) as info:
        comp.call("burn", 10_000_000, fuel=10_000)
    assert info.value.limit == "fuel"
    with pytest.raises(ResourceLimitExceeded):
        comp.call("spin", fuel=100_000)
    assert comp.call("burn", 10, fuel=1000) == 10


def test_fuel_needs_fuel_engine(rt: Runtime) -> None:
    with pytest.raises(ValueError, match="consume_fuel"):
        rt.load(LIMITS.encode(), config=ComponentConfig(limits=Limits(fuel=10)))


def test_arguments_are_checked(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits")
    with pytest.raises(ArgumentError, match="takes 2 argument"):
        comp.call("add", 1)
    with pytest.raises(ArgumentError, match="u32"):
        comp.call("add", 1, -5)
    with pytest.raises(FunctionNotFound, match="exports: add"):
        comp.call("nope")


def test_unsatisfied_imports_are_named_before_instantiation(rt: Runtime) -> None:
    with pytest.raises(UnsatisfiedImports, match="example:host/math"):
        rt.load(HOST_IMPORT.encode(), name="quad")


def test_host_imports_python_implementation(rt: Runtime) -> None:
    calls: list[int] = []

    class Math:
        def double(self, x: int) -> int:
            calls.append(x)
            return x * 2

    imports = HostImports()
    imports.register("example:host/math", Math())
    comp = rt.load(HOST_IMPORT.encode(), name="quad", imports=imports)
    assert comp.call("quadruple", 5) == 20
    assert calls == [5, 10]


def test_host_import_exception_becomes_trap_with_cause(rt: Runtime) -> None:
    imports = HostImports()
    imports.register("example:host/math", {"double": lambda x: 1 // 0})
    comp = rt.load(HOST_IMPORT.encode(), name="quad", imports=imports)
    with pytest.raises(GuestTrap) as info:
        comp.call("quadruple", 1)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "ZeroDivisionError" in str(info.value)


def test_missing_imports_trap_policy(rt: Runtime) -> None:
    comp = rt.load(HOST_IMPORT.encode(), name="quad",
                   config=ComponentConfig(missing_imports="trap"))
    with pytest.raises(GuestTrap):
        comp.call("quadruple", 1)


def test_pooled_instances_are_reused_and_replaced_after_trap(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits",
                   config=ComponentConfig(policy=InstancePolicy(mode="pooled", max_instances=2)))
    for _ in range(5):
        comp.call("add", 1, 2)
    stats = comp.instances.stats
    assert stats.created == 1 and stats.reused == 4
    with pytest.raises(GuestTrap):
        comp.call("trap")
    assert comp.call("add", 1, 2) == 3
    assert comp.instances.stats.discarded == 1


def test_fresh_instances_by_default(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits")
    comp.call("grow", 1)
    comp.call("grow", 1)
    assert comp.instances.stats.created == 2 and comp.instances.stats.reused == 0


async def test_async_invocations_run_off_loop_and_in_parallel(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits",
                   config=ComponentConfig(policy=InstancePolicy(max_instances=2)))
    ticks = 0
    peak = 0

    async def ticker() -> None:
        nonlocal ticks, peak
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
            peak = max(peak, comp.instances.capacity.in_use)

    t = asyncio.create_task(ticker())
    results = await asyncio.gather(
        *(comp.invoke("spin", timeout=0.3) for _ in range(2)), return_exceptions=True
    )
    t.cancel()
    assert all(isinstance(r, DeadlineExceeded) for r in results)
    assert peak == 2, "both spins held an instance at the same time"
    assert ticks >= 10, "the event loop kept running while wasm spun"
    assert await comp.invoke("add", 20, 22) == 42


async def test_max_instances_makes_callers_wait_until_deadline(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits",
                   config=ComponentConfig(policy=InstancePolicy(max_instances=1)))
    hog = asyncio.create_task(comp.invoke("spin", timeout=0.5))
    await asyncio.sleep(0.05)
    with pytest.raises(CapacityTimeout):
        await comp.invoke("add", 1, 1, timeout=0.1)
    with pytest.raises(DeadlineExceeded):
        await hog
    assert await comp.invoke("add", 1, 1, timeout=1) == 2


def test_sync_capacity_from_threads(rt: Runtime) -> None:
    comp = rt.load(LIMITS.encode(), name="limits",
                   config=ComponentConfig(policy=InstancePolicy(max_instances=1)))
    th = threading.Thread(target=lambda: pytest.raises(DeadlineExceeded, comp.call, "spin",
                                                       timeout=0.4))
    th.start()
    time.sleep(0.1)
    with pytest.raises(CapacityTimeout):
        comp.call("add", 1, 1, timeout=0.1)
    th.join()
    assert comp.call("add", 1, 1) == 2


async def test_telemetry_span_per_invocation(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with Runtime(cache_dir=tmp_path, tracer_provider=provider) as rt:
        comp = rt.load(LIMITS.encode(), name="limits")
        await comp.invoke("add", 1, 2)
        with pytest.raises(GuestTrap):
            await comp.invoke("trap")
    spans = exporter.get_finished_spans()
    assert [s.attributes["trellis.outcome"] for s in spans] == ["ok", "GuestTrap"]
    assert spans[0].attributes["trellis.component"] == "limits"
    assert spans[0].attributes["trellis.function"] == "add"
    assert spans[0].attributes["trellis.duration_ms"] >= 0


async def test_custom_interceptor_sees_and_can_refuse_calls(tmp_path: Path) -> None:
    seen: list[str] = []

    class Deny:
        async def invoke(self, call, next):  # type: ignore[no-untyped-def]
            seen.append(call.function)
            if call.function == "trap":
                raise PermissionError("denied by test policy")
            return await next(call)

    with Runtime(cache_dir=tmp_path, interceptors=[Deny()]) as rt:
        comp = rt.load(LIMITS.encode(), name="limits")
        assert await comp.invoke("add", 1, 2) == 3
        with pytest.raises(PermissionError):
            await comp.invoke("trap")
    assert seen == ["add", "trap"]


def test_ambiguous_names_need_qualification(rt: Runtime, calc_wat: str) -> None:
    comp = rt.load(calc_wat.encode(), name="calc")
    assert comp.call("add", 2, 3) == 5
    assert comp.call("calc#add", 2, 3) == 5
    assert comp.call("example:calc/calc@0.1.0#add", 2, 3) == 5
    assert comp.call("greet", "Developer") == "Hello, Developer!"
    assert comp.call("version").startswith("calc")
    with pytest.raises(FunctionNotFound):
        comp.call("other#add", 1, 2)
    assert issubclass(AmbiguousFunction, FunctionNotFound)


def test_wasmtime_cli_function_spelling_is_accepted(rt: Runtime, calc_wat: str) -> None:
    comp = rt.load(calc_wat.encode(), name="calc")
    assert comp.call("example:calc/calc.add@0.1.0", 2, 3) == 5
    assert comp.call("example:calc/calc.add", 2, 3) == 5


def test_resources_live_in_a_session(kitchen_wasm: Path, tmp_path: Path) -> None:
    from trellis.lattice.wit.values import Resource

    with Runtime(cache_dir=tmp_path) as rt:
        comp = rt.load(kitchen_wasm)
        with comp.session() as s:
            counter = s.call("make-counter", 5)
            assert isinstance(counter, Resource) and counter.resource == "counter"
            assert s.call("[method]counter.inc", counter) == 6
            assert s.call("read-counter", counter) == 6
            other = s.call("[constructor]counter", 10)
            assert s.call("[method]counter.get", other) == 10
        with comp.session() as s2, pytest.raises(ArgumentError, match="another instance"):
            s2.call("[method]counter.get", other)
