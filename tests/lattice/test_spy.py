"""The invocation spy stream: records published by a serving host, and `trellis spy` reading
them in its own process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _lattice import ADD, CALC_WAT, NAP, REPO, Hosts, write
from trellis.host.telemetry import arm_spies
from trellis.lattice import subjects
from trellis.lattice.client import LatticeClient
from trellis.lattice.connection import flush
from trellis.lattice.errors import RemoteArgumentError
from trellis.lattice.models import CtlReply, SpyRecord

TRELLIS = [sys.executable, "-m", "trellis.host.cli"]


@contextlib.asynccontextmanager
async def spy_process(nats_url: str, lattice: str, *args: str
                      ) -> AsyncIterator[asyncio.subprocess.Process]:
    """`trellis spy ARGS` in its own process, yielded once it says it is listening."""
    env = {**os.environ, "TRELLIS_NATS_URL": nats_url, "TRELLIS_LATTICE": lattice}
    proc = await asyncio.create_subprocess_exec(
        *TRELLIS, "spy", *args, env=env, cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            line = await proc.stderr.readline()
        assert line.startswith(b"spying on"), line
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def outputs(proc: asyncio.subprocess.Process, timeout: float = 20
                  ) -> tuple[int, str, str]:
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_spy_cli_prints_each_invocation_as_json(hosts: Hosts, lc: LatticeClient,
                                                      nats_url: str, lattice: str,
                                                      tmp_path: Path) -> None:
    await hosts.start("spied")
    await lc.start_component(write(tmp_path, "nap.wat", NAP), "nap")
    await lc.start_component(CALC_WAT, "calc")
    async with spy_process(nats_url, lattice, "nap", "--count", "3", "--json",
                           "--timeout", "20") as proc:
        assert await lc.call("calc", "add", 1, 2) == 3  # another component: not shown
        assert await lc.call("nap", "nap", 1) == 1
        assert await lc.call("nap", "nap", 2) == 2
        with pytest.raises(RemoteArgumentError):  # undecodable arguments: bad_request
            await lc.call_raw("nap", "nap", b"\xff")
        code, out, err = await outputs(proc)
    assert code == 0, err
    records = [SpyRecord.model_validate_json(line) for line in out.splitlines()]
    assert [(r.component, r.function, r.outcome) for r in records] == [
        ("nap", "nap", "ok"), ("nap", "nap", "ok"), ("nap", "nap", "bad_request")]
    for r in records:
        assert r.host == "spied" and r.caller == "client" and r.duration_ms > 0
        assert len(r.invocation_id) == 32
    assert len({r.invocation_id for r in records}) == 3


async def test_spy_cli_human_lines_and_ctrl_c(hosts: Hosts, lc: LatticeClient, nats_url: str,
                                              lattice: str) -> None:
    await hosts.start("h1")
    await lc.start_component(CALC_WAT, "calc")
    async with spy_process(nats_url, lattice) as proc:
        assert await lc.call("calc", "add", 20, 22) == 42
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            line = (await proc.stdout.readline()).decode()
        proc.send_signal(signal.SIGINT)
        code, _, err = await outputs(proc)
    assert code == 0, err
    fields = line.split()
    assert fields[1:4] == ["calc", "example:calc/calc@0.1.0#add", "ok"]
    assert fields[4].endswith("ms") and fields[5] == "h1"
    assert "Traceback" not in err


async def test_spy_cli_count_not_reached_before_timeout(nats_url: str, lattice: str) -> None:
    async with spy_process(nats_url, lattice, "--count", "1", "--timeout", "0.3") as proc:
        code, out, err = await outputs(proc)
    assert code == 124 and out == ""
    assert "0 of 1 record(s)" in err


async def test_records_carry_the_trace_and_skip_describe(hosts: Hosts, lc: LatticeClient,
                                                         lattice: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await hosts.start("tr")
    await lc.start_component(CALC_WAT, "calc")
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on(msg: Any) -> None:
        await got.put(json.loads(msg.data))

    await lc.nc.subscribe(subjects.spy_all(lattice), cb=on)
    await flush(lc.nc)
    assert await arm_spies(lc.nc, lattice) == ["tr"]
    async with LatticeClient(lc.nc, lattice, tracer_provider=provider) as traced:
        assert await traced.call("calc", "add", 1, 1) == 2  # _describe first, then add
    async with asyncio.timeout(5):
        record = await got.get()
    [call] = [s for s in exporter.get_finished_spans() if s.name == f"call calc/{ADD}"]
    assert record["trace_id"] == format(call.context.trace_id, "032x")
    assert record["function"] == ADD
    await asyncio.sleep(0.1)
    assert got.empty()  # the _describe round trip is not an invocation


@pytest.mark.parametrize("bad", ["a.b", "*"])
def test_spy_cli_rejects_bad_component_ids(bad: str) -> None:
    from click.testing import CliRunner
    from trellis.host.cli_spy import spy

    result = CliRunner().invoke(spy, [bad])
    assert result.exit_code == 2 and "component id" in result.output


async def records(lc: LatticeClient, lattice: str) -> asyncio.Queue[dict[str, Any]]:
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on(msg: Any) -> None:
        await got.put(json.loads(msg.data))

    await lc.nc.subscribe(subjects.spy_all(lattice), cb=on)
    await flush(lc.nc)
    return got


async def test_hosts_publish_only_while_a_spy_holds_a_lease(hosts: Hosts, lc: LatticeClient,
                                                            lattice: str) -> None:
    host = await hosts.start("lease")
    await lc.start_component(CALC_WAT, "calc")
    got = await records(lc, lattice)
    assert await lc.call("calc", ADD, 1, 1) == 2
    assert host.rpc.telemetry is not None and host.rpc.telemetry.spy_until == 0
    assert await arm_spies(lc.nc, lattice, lease=0.5) == ["lease"]
    assert await lc.call("calc", ADD, 2, 2) == 4
    async with asyncio.timeout(5):
        first = await got.get()
    assert first["outcome"] == "ok" and first["host"] == "lease"
    await asyncio.sleep(0.6)  # lease over, not renewed
    assert await lc.call("calc", ADD, 3, 3) == 6
    await asyncio.sleep(0.2)
    assert got.empty()  # neither the call before the lease nor the one after it


@pytest.mark.parametrize("payload", [b"garbage", b'{"lease": -1}', b'{"lease": 1e9}',
                                     b'{"x": 1}'])
async def test_bad_spy_watch_requests_fail_and_arm_nothing(hosts: Hosts, lc: LatticeClient,
                                                           lattice: str, payload: bytes) -> None:
    host = await hosts.start("w")
    msg = await lc.nc.request(subjects.spy_watch(lattice), payload, timeout=2)
    reply = CtlReply[dict].model_validate_json(msg.data)  # type: ignore[type-arg]
    assert reply.success is False and "spy.watch" in reply.message
    assert host.rpc.telemetry is not None and host.rpc.telemetry.spy_until == 0
    assert len(await lc.ping_hosts(expect=1)) == 1


async def test_records_stay_valid_json_whatever_the_caller_sends(
        hosts: Hosts, nats_url: str, lattice: str) -> None:
    await hosts.start("esc")
    odd = 'we"ird\\ caller \u00e9'  # (headers cannot carry newlines)
    async with LatticeClient(nats_url, lattice, caller=odd) as client:
        await client.start_component(CALC_WAT, "calc")
        got = await records(client, lattice)
        await arm_spies(client.nc, lattice)
        assert await client.call("calc", ADD, 1, 1) == 2
        async with asyncio.timeout(5):
            record = SpyRecord.model_validate(await got.get())
    assert record.caller == odd and record.function == ADD and record.outcome == "ok"
    assert record.trace_id == "" and abs(record.time - time.time()) < 5
