"""What a call across the lattice costs, against raw nats-py request/reply and an in-process call.

Every figure is measured in this run, against baselines measured alongside it, so the ratios mean
something even on a loaded machine where absolute numbers drift::

    .venv/bin/python bench/lattice.py            # full run (~1 min)
    .venv/bin/python bench/lattice.py --quick    # smoke run (tests/test_bench_lattice_smoke.py)

Paths compared, each with 1 caller (calls one after another) and 50 concurrent callers:

(a) in-process: ``await Component.invoke("add", …)`` on a pooled instance in this process;
(b) raw nats-py: ``nc.request`` to a responder in another process that answers every request
    with a fixed body; request and reply bodies have the sizes Trellis sends for ``add``;
(c) Trellis: ``LatticeClient.call("add", …)`` from this process to a ``trellis host`` daemon in
    another process, through the same nats-server (the host runs the same component, pooled).

(b') as (b), but each request and reply carries headers shaped like Trellis's (invocation id,
    deadline, caller; host, digest), sent through nats-py's own header encoding: how much of
    the gap nats-py headers cost.

(b) is the floor for (c): the same hops, without Trellis's headers, encoding, deadline and
invocation chain. The targets compare (c) with (b). Rounds of all paths are interleaved (rotating
order) so background load hits them alike; latencies are pooled over rounds (p50, p99) and
throughput is the median round. When ``uvloop`` is importable the whole set runs a second time
with uvloop on both sides (this process, the host and the responder), labelled ``[uvloop]``.
Exit status is 0 even when a target is missed: timing is reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

# Python puts this script's directory first on the path, where sibling scripts (bench/http.py)
# shadow standard modules that urllib and nats-py import: move it to the end.
HERE = str(Path(__file__).resolve().parent)
if sys.path and sys.path[0] == HERE:
    sys.path.append(sys.path.pop(0))

import nats  # noqa: E402
from components import ECHO  # noqa: E402
from trellis.host import ComponentConfig, InstancePolicy, Runtime  # noqa: E402
from trellis.lattice.client import LatticeClient  # noqa: E402
from trellis.lattice.codec import encode_args  # noqa: E402
from trellis.lattice.connection import flush  # noqa: E402
from trellis.lattice.models import Headers  # noqa: E402
from trellis.lattice.nats_server import NatsServer, find_nats_server  # noqa: E402

LATTICE = "bench"
HOST_ID = "bench-host"
RAW_SUBJECT = "bench.raw"
CALLERS = 50
P50_TARGET = 1.3
"""Trellis p50 at 1 caller may be at most this many times raw request/reply's."""
THROUGHPUT_TARGET = 0.7
"""Trellis throughput at 50 callers must be at least this fraction of raw request/reply's."""
STARTUP = 60.0
"""Seconds for a host process to start (Python imports on a loaded machine)."""
Call = Callable[[], Awaitable[Any]]
REPLY_HEADERS = {Headers.HOST: HOST_ID, Headers.DIGEST: "sha256:" + "0" * 64}
"""What a host sends with an ``ok`` reply (``Trellis-Status`` absent means ``ok``)."""


def request_headers() -> dict[str, str]:
    """What ``RpcCaller`` sends with every call (values of the same length; the encoding header
    is left out when it is the default)."""
    return {Headers.INVOCATION_ID: uuid.uuid4().hex, Headers.DEADLINE: f"{time.time() + 5:.6f}",
            Headers.CALLER: "bench"}


@dataclass(frozen=True)
class Settings:
    rounds: int
    sequential: int
    """Calls per round with 1 caller."""
    per_caller: int
    """Calls per caller per round with 50 callers."""
    warmup: int


FULL = Settings(rounds=5, sequential=1000, per_caller=60, warmup=300)
QUICK = Settings(rounds=2, sequential=150, per_caller=10, warmup=50)


@dataclass
class Sample:
    latencies: list[float]
    """Seconds per call, pooled over rounds."""
    rates: list[float]
    """Calls per second, one per round."""
    cpu: list[tuple[float, float, float]] = field(default_factory=list)
    """CPU seconds per call (this process, the serving process, nats-server), one per round."""

    def p(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


# -- measuring ---------------------------------------------------------------------------------


async def run_sequential(call: Call, n: int) -> tuple[list[float], float]:
    lat = []
    clock = time.perf_counter
    began = clock()
    for _ in range(n):
        t = clock()
        await call()
        lat.append(clock() - t)
    return lat, n / (clock() - began)


async def run_concurrent(call: Call, callers: int, per_caller: int) -> tuple[list[float], float]:
    lat: list[float] = []
    clock = time.perf_counter

    async def caller() -> None:
        for _ in range(per_caller):
            t = clock()
            await call()
            lat.append(clock() - t)

    began = clock()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return lat, callers * per_caller / (clock() - began)


def cpu_seconds(pid: int | None) -> float:
    """User+system CPU of a process so far (Linux ``/proc``; 0 elsewhere or for ``None``)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(paths: dict[str, Call], s: Settings, pids: Mapping[str, int | None],
                  server_pid: int | None) -> dict[tuple[str, int], Sample]:
    """Both loads for every path; rounds interleaved with rotating order. CPU per call is
    taken around each round, for this process, the path's serving process and nats-server."""
    out = {(name, c): Sample([], []) for name in paths for c in (1, CALLERS)}
    for call in paths.values():
        await run_concurrent(call, 10, s.warmup // 10)
    names = list(paths)
    for r in range(s.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for callers in (1, CALLERS):
                before = (time.process_time(), cpu_seconds(pids.get(name)),
                          cpu_seconds(server_pid))
                lat, rate = (await run_sequential(paths[name], s.sequential) if callers == 1
                             else await run_concurrent(paths[name], CALLERS, s.per_caller))
                after = (time.process_time(), cpu_seconds(pids.get(name)),
                         cpu_seconds(server_pid))
                sample = out[name, callers]
                sample.latencies += lat
                sample.rates.append(rate)
                n = len(lat)
                sample.cpu.append(((after[0] - before[0]) / n, (after[1] - before[1]) / n,
                                   (after[2] - before[2]) / n))
    return out


# -- the processes on the other side -------------------------------------------------------------


def loop_prelude(uvloop: bool) -> str:
    return "import uvloop; uvloop.install(); " if uvloop else ""


@contextlib.contextmanager
def child(code: str, log: Path, env: dict[str, str] | None = None
          ) -> Iterator[subprocess.Popen[str]]:
    """A Python child process running ``code``; terminated (then killed) on exit."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=out, text=True, env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def host_code(url: str, uvloop: bool) -> str:
    argv = ["trellis", "host", "--nats-url", url, "--lattice", LATTICE, "--host-id", HOST_ID]
    return (f"{loop_prelude(uvloop)}import sys; sys.argv = {argv!r}; "
            "from trellis.host.cli import main; main()")


def responder_code(url: str, reply_size: int, uvloop: bool) -> str:
    # This file loaded by path: the name `lattice` may be trellis's package in the cwd.
    return (f"{loop_prelude(uvloop)}import asyncio, importlib.util, sys; "
            f"sys.path.append({HERE!r}); "
            f"spec = importlib.util.spec_from_file_location('bench_lattice', {__file__!r}); "
            "mod = sys.modules['bench_lattice'] = importlib.util.module_from_spec(spec); "
            "spec.loader.exec_module(mod); "
            f"asyncio.run(mod.respond({url!r}, {reply_size}))")


async def respond(url: str, reply_size: int) -> None:
    """The raw responder: answer every request with ``reply_size`` bytes until SIGTERM."""
    nc = await nats.connect(url)
    body = b"\x2a" * reply_size

    async def on_request(msg: Any) -> None:
        if msg.headers:  # the (b') path: answer with Trellis-shaped headers too
            await nc.publish(msg.reply, body, headers=REPLY_HEADERS)
        else:
            await msg.respond(body)

    await nc.subscribe(RAW_SUBJECT, queue="bench", cb=on_request)
    await flush(nc)  # nc.flush() can return before the SUB is sent (nats-py 2.16)
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await nc.close()


def wait_ready(proc: subprocess.Popen[str], timeout: float, log: Path) -> None:
    """Block until the child prints ``ready`` (with a deadline)."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(timeout=0.2) and proc.stdout.readline().strip() == "ready":
            return
        if proc.poll() is not None:
            break
    raise SystemExit(f"responder not ready within {timeout:g}s:\n{log.read_text()[-2000:]}")


# -- one run -----------------------------------------------------------------------------------


async def run_set(url: str, server_pid: int | None, tmp: Path, s: Settings, uvloop: bool
                  ) -> tuple[dict[tuple[str, int], Sample], tuple[int, int]]:
    """All three paths under one event-loop choice; also the (request, reply) body sizes."""
    wat = tmp / "echo.wat"
    wat.write_text(ECHO)
    tag = "uvloop" if uvloop else "asyncio"
    host_log = tmp / f"host-{tag}.log"
    env = {"TRELLIS_CACHE_DIR": str(tmp / f"cache-{tag}")}
    with child(host_code(url, uvloop), host_log, env) as host, Runtime() as rt:
        local = rt.load(wat, config=ComponentConfig(policy=InstancePolicy(mode="pooled")))
        async with LatticeClient(url, LATTICE, timeout=10.0, caller="bench") as lc:
            try:
                await lc.wait_for_hosts(1, timeout=STARTUP)
            except Exception as exc:
                tail = host_log.read_text()[-2000:]
                raise SystemExit(f"host did not start: {exc}\n{tail}") from None
            await lc.start_component(wat, "add", host_id=HOST_ID, mode="pooled")
            ft = (await lc.describe("add"))["add"]
            req_size = len(encode_args([2, 40], ft.params))
            reply_size = len((await lc.call_raw("add", "add", encode_args([2, 40], ft.params))
                              ).data)
            resp_log = tmp / f"responder-{tag}.log"
            with child(responder_code(url, reply_size, uvloop), resp_log) as resp:
                await asyncio.to_thread(wait_ready, resp, STARTUP, resp_log)
                nc = lc.nc
                payload = b"\x07" * req_size

                async def raw() -> Any:
                    return await nc.request(RAW_SUBJECT, payload, timeout=5.0)

                async def raw_headers() -> Any:
                    return await nc.request(RAW_SUBJECT, payload, timeout=5.0,
                                            headers=request_headers())

                paths: dict[str, Call] = {
                    "in-process Component.invoke": lambda: local.invoke("add", 2, 40),
                    "raw nats-py request/reply": raw,
                    "raw nats-py + trellis headers": raw_headers,
                    "trellis call across hosts": lambda: lc.call("add", "add", 2, 40,
                                                                 timeout=5.0),
                }
                assert await paths["trellis call across hosts"]() == 42
                pids = {"raw nats-py request/reply": resp.pid,
                        "raw nats-py + trellis headers": resp.pid,
                        "trellis call across hosts": host.pid}
                return await measure(paths, s, pids, server_pid), (req_size, reply_size)


def ratio(text: str, value: float) -> None:
    print(f"    {text:<44} {value:6.2f}x")


def report(results: dict[tuple[str, int], Sample], label: str) -> list[tuple[bool, str]]:
    names = sorted({n for n, _ in results}, key=list(dict.fromkeys(n for n, _ in results)).index)
    print(f"\n{label}")
    print(f"  {'path':<30} {'callers':>7} {'p50 µs':>9} {'p99 µs':>9} {'calls/s':>9}")
    for callers in (1, CALLERS):
        for name in names:
            r = results[name, callers]
            print(f"  {name:<30} {callers:>7} {r.p(0.5) * 1e6:>9.0f} {r.p(0.99) * 1e6:>9.0f} "
                  f"{r.rate:>9.0f}")
    print(f"  CPU µs per call at {CALLERS} callers (median round; /proc ticks are 10 ms, so "
          "coarse with --quick)")
    print(f"  {'':<30} {'client':>9} {'server':>9} {'nats':>9}")
    for name in names:
        cpu = results[name, CALLERS].cpu
        if cpu:
            mid = [statistics.median(c[i] for c in cpu) * 1e6 for i in range(3)]
            print(f"  {name:<30} {mid[0]:>9.0f} {mid[1]:>9.0f} {mid[2]:>9.0f}")
    t1, r1 = results["trellis call across hosts", 1], results["raw nats-py request/reply", 1]
    tn = results["trellis call across hosts", CALLERS]
    rn = results["raw nats-py request/reply", CALLERS]
    p50_ratio = t1.p(0.5) / r1.p(0.5)
    rate_ratio = tn.rate / rn.rate
    local = results["in-process Component.invoke", 1]
    print("  ratios")
    ratio("trellis / raw p50, 1 caller", p50_ratio)
    ratio("trellis / raw p99, 1 caller", t1.p(0.99) / r1.p(0.99))
    ratio(f"trellis / raw throughput, {CALLERS} callers", rate_ratio)
    hn = results["raw nats-py + trellis headers", CALLERS]
    ratio(f"raw+headers / raw throughput, {CALLERS} callers", hn.rate / rn.rate)
    ratio("trellis / in-process p50, 1 caller", t1.p(0.5) / local.p(0.5))
    return [
        (p50_ratio <= P50_TARGET,
         f"{label}: p50 at 1 caller {t1.p(0.5) * 1e6:.0f} µs <= {P50_TARGET}x raw "
         f"{r1.p(0.5) * 1e6:.0f} µs ({p50_ratio:.2f}x)"),
        (rate_ratio >= THROUGHPUT_TARGET,
         f"{label}: throughput at {CALLERS} callers {tn.rate:.0f}/s >= {THROUGHPUT_TARGET}x raw "
         f"{rn.rate:.0f}/s ({rate_ratio:.2f}x)"),
    ]


def run_with(loop: str, server: NatsServer, tmp: Path, s: Settings
             ) -> tuple[dict[tuple[str, int], Sample], tuple[int, int]]:
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run_set(server.url, server.pid, tmp, s, loop == "uvloop"))


def server_version() -> str:
    binary = find_nats_server()
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    return out or binary.name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Targets: p50 <= 1.3x raw request/reply at 1 caller; "
                                        "throughput >= 0.7x raw at 50 callers.")
    ap.add_argument("--quick", action="store_true", help="smoke run: few calls, 2 rounds")
    ap.add_argument("--no-uvloop", action="store_true",
                    help="skip the uvloop run even when uvloop is importable")
    args = ap.parse_args(argv)
    s = QUICK if args.quick else FULL
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    print(f"trellis lattice bench{' (quick)' if args.quick else ''}: python "
          f"{platform.python_version()}, nats-py {version('nats-py')}, "
          f"{server_version()}, {os.cpu_count()} cpus")
    print(f"rounds {s.rounds}: {s.sequential} calls with 1 caller, {CALLERS} x {s.per_caller} "
          f"with {CALLERS} callers; host and raw responder in other processes, one nats-server")
    uv_note = (f"uvloop {version('uvloop')} importable" if has_uvloop
               else "uvloop not importable (pip install uvloop to measure it too)")
    print(uv_note)
    loops = ["asyncio"] + (["uvloop"] if has_uvloop and not args.no_uvloop else [])
    checks: list[tuple[bool, str]] = []
    with tempfile.TemporaryDirectory(prefix="trellis-bench-") as tmp, \
            NatsServer(jetstream=True) as server:
        for loop in loops:
            results, (req, rep) = run_with(loop, server, Path(tmp), s)
            checks += report(results, f"[{loop}] request {req} B, reply {rep} B")
    print("\ntargets")
    for ok, text in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {text}")
    print(f"  {sum(ok for ok, _ in checks)}/{len(checks)} targets met")
    print(f"  uvloop: {uv_note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
