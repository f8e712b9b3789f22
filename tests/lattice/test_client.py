"""Calls across the lattice through ``LatticeClient``: load sharing, typed remote errors,
WAVE in and out, trace continuity, big payloads through the object store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest
from _lattice import (
    ADD,
    CALC_WAT,
    ECHO,
    NAP,
    Hosts,
    write,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from trellis.lattice import subjects
from trellis.lattice.client import LatticeClient
from trellis.lattice.connection import flush
from trellis.lattice.errors import (
    ArgumentError,
    CapacityTimeout,
    DeadlineExceeded,
    FunctionNotFound,
    GuestTrap,
    InvocationTimeout,
    LatticeUnavailableError,
    NoSuchComponent,
    RemoteArgumentError,
    RemoteCapacityTimeout,
    RemoteDeadlineExceeded,
    RemoteFunctionNotFound,
    RemoteLimitExceeded,
    RemoteTrap,
    ResourceLimitExceeded,
)
from trellis.lattice.models import LimitsSpec
from trellis.lattice.rpc import DESCRIBE
from trellis.lattice.wit.types import Primitive


async def test_replicas_on_two_hosts_share_the_calls(hosts: Hosts, lc: LatticeClient) -> None:
    await hosts.start("one")
    await hosts.start("two")
    assert await lc.start_component(CALC_WAT, "calc") != await lc.start_component(CALC_WAT,
                                                                                 "calc")
    results = await asyncio.gather(*(lc.call("calc", ADD, i, 1) for i in range(60)))
    assert results == [i + 1 for i in range(60)]
    served = {h: (await lc.get_inventory(h)).components[0].invocations for h in ("one", "two")}
    assert sum(served.values()) == 60 and min(served.values()) > 0, served


async def test_call_wave_and_cli_forms(hosts: Hosts, lc: LatticeClient) -> None:
    await hosts.start("w")
    await lc.start_component(CALC_WAT, "calc")
    assert await lc.call_wave("calc", "add(2, 40)") == "42"
    assert await lc.call_wave("calc", 'calc#greet("you")') == '"Hello, you!"'
    assert await lc.call_wave("calc", "version()") == '"calc 0.1.0 (hand-written WAT)"'
    assert await lc.call_wave("calc", "add", "20", "22") == "42"
    assert await lc.call_wave("calc", "greet", "a b") == '"Hello, a b!"'
    with pytest.raises(ArgumentError, match="argument"):
        await lc.call_wave("calc", 'add("x", 1)')
    with pytest.raises(ArgumentError, match="takes 2"):
        await lc.call_wave("calc", "add", "1")
    with pytest.raises(FunctionNotFound, match="nope"):
        await lc.call_wave("calc", "nope()")


async def test_describe_gives_signatures_cached_by_digest(hosts: Hosts, lc: LatticeClient
                                                         ) -> None:
    host = await hosts.start("d")
    await lc.start_component(CALC_WAT, "calc")
    sigs = await lc.describe("calc")
    assert sigs[ADD].params == (("a", Primitive("u32")), ("b", Primitive("u32")))
    assert sigs["version"].result == Primitive("string")
    assert await lc.describe("calc") is sigs  # cached: no second round trip
    raw = await lc.call_raw("calc", DESCRIBE, b"")
    assert raw.host == "d" and raw.digest == host.rpc.served["calc"].component.compiled.ref


# -- typed remote errors -------------------------------------------------------------------------


async def test_no_such_component_fails_fast(lc: LatticeClient) -> None:
    started = time.monotonic()
    with pytest.raises(NoSuchComponent, match="no host") as err:
        await lc.call("ghost", "f", timeout=5)
    assert time.monotonic() - started < 0.5
    assert isinstance(err.value, LookupError)


async def test_trap_names_the_host(hosts: Hosts, lc: LatticeClient) -> None:
    await hosts.start("trapper")
    await lc.start_component(CALC_WAT, "calc")
    with pytest.raises(RemoteTrap) as err:
        await lc.call("calc", "fail")
    assert isinstance(err.value, GuestTrap)
    assert err.value.host == "trapper" and err.value.kind == "trap"
    assert "unreachable" in str(err.value) and "trapper" in str(err.value)
    assert await lc.call("calc", "add", 1, 2) == 3  # the host serves on


async def test_the_callers_deadline_bounds_the_wait(hosts: Hosts, lc: LatticeClient,
                                                   tmp_path: Path) -> None:
    await hosts.start("slow")
    await lc.start_component(write(tmp_path, "nap.wat", NAP), "nap")
    await lc.describe("nap")
    started = time.monotonic()
    with pytest.raises(TimeoutError) as err:
        await lc.call("nap", "spin", timeout=0.5)
    took = time.monotonic() - started
    assert 0.4 < took <= 0.56, took  # never waits past its deadline
    # The host stops the guest a margin before the deadline so its typed answer usually wins;
    # when the guest overshoots the margin, the caller's own timeout answers instead.
    if isinstance(err.value, RemoteDeadlineExceeded):
        assert isinstance(err.value, DeadlineExceeded) and err.value.host == "slow"
    else:
        assert isinstance(err.value, InvocationTimeout)
    assert "nap" in str(err.value) and "spin" in str(err.value)


async def test_the_components_own_timeout_caps_the_callers(hosts: Hosts, lc: LatticeClient,
                                                           tmp_path: Path) -> None:
    await hosts.start("cap")
    await lc.start_component(write(tmp_path, "nap.wat", NAP), "nap",
                             limits=LimitsSpec(timeout=0.2))
    await lc.describe("nap")
    started = time.monotonic()
    with pytest.raises(RemoteDeadlineExceeded) as err:
        await lc.call("nap", "spin", timeout=5)
    assert time.monotonic() - started < 1
    assert isinstance(err.value, TimeoutError) and err.value.host == "cap"
    assert "deadline" in str(err.value) and "cap" in str(err.value)


async def test_memory_limit_and_capacity_errors(hosts: Hosts, lc: LatticeClient,
                                               tmp_path: Path) -> None:
    await hosts.start("lim")
    await lc.start_component(write(tmp_path, "echo.wat", ECHO), "echo",
                             limits=LimitsSpec(max_memory_mib=1))
    with pytest.raises(RemoteLimitExceeded) as err:
        await lc.call("echo", "echo", b"x" * 1_500_000, timeout=10)
    assert err.value.limit == "memory" and isinstance(err.value, ResourceLimitExceeded)

    await lc.start_component(write(tmp_path, "nap.wat", NAP), "nap", max_instances=1)
    busy = asyncio.create_task(lc.call("nap", "nap", 600))
    while (await lc.get_inventory("lim")).components[-1].active < 1:
        await asyncio.sleep(0.01)
    with pytest.raises(RemoteCapacityTimeout) as cap:
        await lc.call("nap", "nap", 1, timeout=0.3)
    assert isinstance(cap.value, CapacityTimeout) and cap.value.host == "lim"
    assert await busy == 600


async def test_bad_operations_and_bodies_are_refused_by_the_host(hosts: Hosts,
                                                                 lc: LatticeClient) -> None:
    await hosts.start("strict")
    await lc.start_component(CALC_WAT, "calc")
    with pytest.raises(RemoteFunctionNotFound) as err:
        await lc.call_raw("calc", "nope", b"")
    assert ADD in err.value.candidates and isinstance(err.value, FunctionNotFound)
    with pytest.raises(RemoteArgumentError, match="truncated"):
        await lc.call_raw("calc", ADD, b"\x01")
    with pytest.raises(RemoteArgumentError, match="trailing"):
        await lc.call_raw("calc", ADD, bytes(9))
    with pytest.raises(ArgumentError, match="argument `a`"):
        await lc.call("calc", ADD, "one", 2)  # refused before anything is sent


async def test_no_reply_is_a_timeout_naming_target_and_operation(nats_url: str, lattice: str,
                                                                 lc: LatticeClient) -> None:
    mute = await nats.connect(nats_url)  # subscribes like a host, never answers
    try:
        await mute.subscribe(subjects.rpc_component(lattice, "mute"),
                             queue=subjects.rpc_queue(lattice, "mute"))
        await flush(mute)
        started = time.monotonic()
        with pytest.raises(InvocationTimeout, match=r"mute frob: no reply within 0\.3s"):
            await lc.call_raw("mute", "frob", b"", timeout=0.3)
        assert time.monotonic() - started < 1.0  # the deadline, plus slack for a loaded box
    finally:
        await mute.close()


async def test_a_closed_client_is_lattice_unavailable(nats_url: str, lattice: str) -> None:
    client = LatticeClient(nats_url, lattice)
    with pytest.raises(LatticeUnavailableError, match="not connected"):
        await client.ping_hosts()
    async with client:
        pass
    with pytest.raises(LatticeUnavailableError):
        await client.call("x", "y")


# -- placement -----------------------------------------------------------------------------------


async def test_auto_placement_spreads_and_stop_everywhere(hosts: Hosts, lc: LatticeClient,
                                                          tmp_path: Path) -> None:
    await hosts.start("p1")
    await hosts.start("p2")
    first = await lc.start_component(CALC_WAT, "calc")
    second = await lc.start_component(CALC_WAT, "calc")  # not where calc already runs
    assert {first, second} == {"p1", "p2"}
    other = await lc.start_component(write(tmp_path, "echo.wat", ECHO), "echo")
    assert other in ("p1", "p2")
    assert sorted(await lc.stop_component("calc")) == ["p1", "p2"]
    with pytest.raises(NoSuchComponent):
        await lc.call("calc", ADD, 1, 1)


# -- telemetry -----------------------------------------------------------------------------------


async def test_one_trace_from_client_to_host(hosts: Hosts, nats_url: str, lattice: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await hosts.start("traced", runtime_kw={"tracer_provider": provider})
    async with LatticeClient(nats_url, lattice, tracer_provider=provider) as client:
        await client.start_component(CALC_WAT, "calc")
        assert await client.call("calc", ADD, 1, 2) == 3
    spans = {s.name: s for s in exporter.get_finished_spans()}
    call, invoke = spans[f"call calc/{ADD}"], spans[f"invoke calc/{ADD}"]
    assert call.context.trace_id == invoke.context.trace_id
    assert invoke.parent is not None and invoke.parent.span_id == call.context.span_id
    assert invoke.parent.is_remote
    assert invoke.attributes["trellis.caller"] == "client"
    assert call.attributes["trellis.host"] == "traced"


# -- big payloads --------------------------------------------------------------------------------


async def test_payloads_above_max_payload_go_through_the_object_store(
        hosts: Hosts, lc: LatticeClient, lattice: str, tmp_path: Path) -> None:
    await hosts.start("big")
    await lc.start_component(write(tmp_path, "echo.wat", ECHO), "echo")
    data = bytes(range(256)) * 8192 + b"end"  # 2 MB + 3: over the 1 MiB default max_payload
    assert len(data) > lc.nc.max_payload
    assert await lc.call("echo", "echo", data, timeout=20) == data
    js = lc.nc.jetstream()
    store = await js.object_store(subjects.payloads_bucket(lattice))
    left = [o for o in await store.list(ignore_deletes=True)] if await _has_objects(store) else []
    assert left == []  # both objects (request, result) deleted by their readers


async def _has_objects(store) -> bool:  # type: ignore[no-untyped-def]
    try:
        await store.list(ignore_deletes=True)
    except Exception:  # nats-py raises when the bucket has no (live) objects
        return False
    return True


# -- every WIT type, through a real guest ---------------------------------------------------------


async def test_every_wit_type_crosses_the_lattice(hosts: Hosts, lc: LatticeClient,
                                                  kitchen_wasm: Path) -> None:
    await hosts.start("kitchen", runtime_kw={"cache_dir": None})  # the shared AOT cache
    await lc.start_component(kitchen_wasm, "kitchen", timeout=120)
    cases = {
        "echo-bool(true)": "true", "echo-s8(-128)": "-128", "echo-u64(18446744073709551615)":
        "18446744073709551615", "echo-f32(1.5)": "1.5", "echo-char('☃')": "'☃'",
        'echo-string("héllo")': '"héllo"', "echo-bytes([1, 2, 255])": "[1, 2, 255]",
        'echo-list(["a", "b"])': '["a", "b"]',
        "echo-tuple((1, \"x\", 2.5))": '(1, "x", 2.5)',
        "echo-variant(at({x: 1, y: -2}))": "at({x: 1, y: -2})",
        "echo-enum(dark-orange)": "dark-orange", "echo-flags({read, admin-only})":
        "{read, admin-only}", "echo-option(some(7))": "some(7)",
        "echo-nested-option(some(none))": "some(none)", 'echo-result(ok("y"))': 'ok("y")',
        "echo-result(err(blue))": "err(blue)", "echo-result-unit(ok)": "ok",
        "types#add(1, 2)": "3", "other#add(1, 2)": "1003", "hello()":
        '"Hello from the kitchen!"', "noop()": "()",
        ('echo-record({name: "n", age: 3, score: 0.5, active: false, home: {x: 0, y: 1}, '
         'nickname: none, lucky-numbers: [7]})'):
        # WAVE leaves out record fields that are `none`
        '{name: "n", age: 3, score: 0.5, active: false, home: {x: 0, y: 1}, lucky-numbers: [7]}',
    }
    got = await asyncio.gather(*(lc.call_wave("kitchen", expr, timeout=10) for expr in cases))
    assert dict(zip(cases, got, strict=True)) == cases
    with pytest.raises(RemoteTrap, match="unreachable"):  # a Python exception in the guest
        await lc.call_wave("kitchen", 'fail("boom")', timeout=10)
    with pytest.raises(ArgumentError, match="resource"):  # handles never cross hosts
        await lc.call_wave("kitchen", "make-counter(1)", timeout=10)
