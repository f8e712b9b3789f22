"""What a provider call costs from a component, against nats-py on the same JetStream KV bucket.

Every figure is measured in this run, against baselines measured alongside it, so the ratios mean
something even on a loaded machine where absolute numbers drift::

    .venv/bin/python bench/providers.py            # full run (~1 min)
    .venv/bin/python bench/providers.py --quick    # smoke run (tests/test_bench_providers_smoke.py)

One nats-server; a host (``bench-a``) runs in this process, a second host (``bench-b``) and a
standalone ``keyvalue-nats`` provider (``trellis provider run``) run as processes of their own.
Components are started and linked through the lattice (``LatticeClient``), as an operator would,
and invoked here with ``Component.invoke`` on host A, so no lattice RPC precedes the call.

Key-value (``bench/components.py`` ``KV_LOOP``, importing ``wasi:keyvalue/store@0.2.0-draft``):

(c) nats-py: ``kv.get`` / ``kv.put`` on the bucket, from this process (the baseline);
(a) in-process provider: ``keyvalue-nats`` started in host A, linked to the component;
(b) standalone provider: ``keyvalue-nats`` in its own process, reached over NATS
    (``providers/remote.py``).

Each is measured per *single call* (``get``/``set``: open the store, one call, drop the handle;
one invocation each) and *per operation* (``get-n``/``set-n``: open once, ``n`` calls in one
invocation; invocation time / ``n``, the provider call itself without the component call
around it; for nats-py, ``n`` calls in a row / ``n``).

Component → component (``C2C_CALLER`` importing ``bench:c2c/calc``, ``C2C_CALLEE`` exporting it):

(d1) direct link: the import bound in a ``LinkRouter`` to a target that invokes the callee
     ``Component`` in this process (what an in-process component link could cost);
(d2) same host: both components on host A, linked through the lattice (today the host calls a
     linked component through lattice RPC, even when it runs on the same host);
(d3) across hosts: the callee on host B.

Rounds of all paths are interleaved (rotating order) so background load hits them alike.
Single calls: latencies pooled over rounds (p50, p99). Per operation: one sample per batch,
median and best batch. Target: the in-process provider per operation (get and set) at most 1.3x
nats-py's. Exit status is 0 even when a target is missed: timing is reported, never asserted.
"""

from __future__ import annotations

# ruff: noqa: E402 (the path fix below must come first)
import sys
from pathlib import Path

# Python puts this script's directory first on sys.path, where bench/http.py would shadow the
# standard library's http (urllib needs it): look here only after the standard library.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import nats
from components import C2C_CALLEE, C2C_CALLER, CALC_IFACE, KV_LOOP
from trellis.host import Runtime
from trellis.host.config import HostConfig
from trellis.host.host import Host
from trellis.host.links import LinkRouter, Target, linked_imports
from trellis.host.runtime.runtime import Component
from trellis.lattice.client import LatticeClient
from trellis.lattice.links import LinkDef
from trellis.lattice.nats_server import NatsServer
from trellis.providers.sdk import Link

from lattice import child, server_version

LATTICE = "bench-providers"
HOST_A, HOST_B = "bench-a", "bench-b"
KEY = "k"
VALUE = bytes(range(100))
ADD = f"{CALC_IFACE}#add"
TARGET = 1.3
"""In-process provider time per operation from a component, at most this many times nats-py's."""
STARTUP = 60.0
"""Seconds for a child process to start (Python imports on a loaded machine)."""
Call = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Settings:
    rounds: int
    single: int
    """Single calls per path per round."""
    batches: int
    """Batches per per-operation path per round."""
    n: int
    """Operations per batch (per invocation of ``get-n`` / ``set-n`` / ``call-n``)."""
    warmup: int


FULL = Settings(rounds=5, single=300, batches=4, n=200, warmup=100)
QUICK = Settings(rounds=2, single=30, batches=2, n=20, warmup=10)


@dataclass(frozen=True)
class Op:
    """One measured path: ``call`` does ``ops`` operations."""

    call: Call
    ops: int = 1


# -- measuring ---------------------------------------------------------------------------------


async def measure(paths: dict[str, Op], s: Settings) -> dict[str, list[float]]:
    """Seconds per operation, per path: every single call, or every batch / ``ops``."""
    out: dict[str, list[float]] = {name: [] for name in paths}
    for p in paths.values():
        for _ in range(max(1, s.warmup // p.ops)):
            await p.call()
    names = list(paths)
    clock = time.perf_counter
    for r in range(s.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            p, samples = paths[name], out[name]
            for _ in range(s.single if p.ops == 1 else s.batches):
                t = clock()
                await p.call()
                samples.append((clock() - t) / p.ops)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def eventually(check: Call, what: str, timeout: float = STARTUP) -> Any:
    """Retry ``check`` until it succeeds (links and processes take a moment to be seen)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not work within {timeout:g}s: "
                                 f"{type(exc).__name__}: {exc}") from None
            await asyncio.sleep(0.1)


# -- the lattice -------------------------------------------------------------------------------


def cli_code(*argv: str) -> str:
    return (f"import sys; sys.argv = {['trellis', *argv]!r}; "
            "from trellis.host.cli import main; main()")


def link(source: str, target: str, namespace: str, package: str, *ifaces: str) -> LinkDef:
    return LinkDef(source_id=source, target_id=target, wit_namespace=namespace,
                   wit_package=package, interfaces=list(ifaces))


class _Callee:
    """Serves ``bench:c2c/calc`` for a direct in-process link: invokes the callee component."""

    def __init__(self, callee: Component) -> None:
        self.callee = callee

    async def add(self, a: int, b: int) -> Any:
        return await self.callee.invoke(ADD, a, b)


def direct_caller(host: Host, callee: Component) -> Component:
    """``C2C_CALLER`` on host A's runtime, its import bound in a router of its own to a target
    that calls ``callee`` in this process."""
    router, cid = LinkRouter(), "caller-direct"
    lk = Link(source=cid, target="callee-near", namespace="bench", package="c2c",
              interfaces=("calc",))
    impl = _Callee(callee)
    router.bind_link(Target(lk.target, lk, implementation=lambda _iface: impl))
    rt = host.runtime
    return rt.load(C2C_CALLER.encode(), name=cid,
                   imports=lambda c: linked_imports(cid, c.world, router, rt.imports))


async def run(url: str, tmp: Path, s: Settings) -> dict[str, list[float]]:
    bucket = f"bench_{uuid.uuid4().hex[:8]}"
    env = {"TRELLIS_CACHE_DIR": str(tmp / "cache-b")}
    b_log, p_log = tmp / "host-b.log", tmp / "provider.log"
    for name, text in (("kv.wat", KV_LOOP), ("callee.wat", C2C_CALLEE),
                       ("caller.wat", C2C_CALLER)):
        (tmp / name).write_text(text)
    host_b = cli_code("host", "--nats-url", url, "--lattice", LATTICE, "--host-id", HOST_B)
    provider = cli_code("provider", "run", "keyvalue-nats", "--id", "kv-alone",
                        "--lattice", LATTICE, "--nats-url", url)
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().create_key_value(bucket=bucket, history=1)
        await kv.put(KEY, VALUE)
        with child(host_b, b_log, env), child(provider, p_log), \
                Runtime(cache_dir=tmp / "aot") as rt:
            cfg = HostConfig(nats_url=url, lattice=LATTICE, host_id=HOST_A,
                             cache_dir=tmp / "cache-a")
            async with Host(cfg, rt) as host, \
                    LatticeClient(url, LATTICE, timeout=10.0, caller="bench") as lc:
                try:
                    await lc.wait_for_hosts(2, timeout=STARTUP)
                except Exception as exc:
                    raise SystemExit(f"host B did not start: {exc}\n"
                                     f"{b_log.read_text()[-2000:]}") from None
                await lc.start_provider("keyvalue-nats", "kv-inproc", host_id=HOST_A)
                on_a = {"kv-local": "kv.wat", "kv-remote": "kv.wat", "callee-near": "callee.wat",
                        "caller-near": "caller.wat", "caller-far": "caller.wat"}
                for cid, wat in on_a.items():
                    await lc.start_component(tmp / wat, cid, host_id=HOST_A, mode="pooled")
                await lc.start_component(tmp / "callee.wat", "callee-far", host_id=HOST_B,
                                         mode="pooled")
                for ld in (link("kv-local", "kv-inproc", "wasi", "keyvalue", "store"),
                           link("kv-remote", "kv-alone", "wasi", "keyvalue", "store"),
                           link("caller-near", "callee-near", "bench", "c2c", "calc"),
                           link("caller-far", "callee-far", "bench", "c2c", "calc")):
                    await lc.put_link(ld)
                comp = {cid: host.rpc.served[cid].component for cid in on_a}
                direct = direct_caller(host, comp["callee-near"])
                paths = kv_paths(kv, comp["kv-local"], comp["kv-remote"], bucket, s.n)
                paths.update(c2c_paths(comp["callee-near"], direct, comp["caller-near"],
                                       comp["caller-far"], s.n))
                for name, p in paths.items():  # every path works before any is timed
                    await eventually(p.call, name)
                return await measure(paths, s)
    finally:
        try:
            await nc.jetstream().delete_key_value(bucket)
        finally:
            await nc.close()


def kv_paths(kv: Any, local: Component, remote: Component, bucket: str, n: int
             ) -> dict[str, Op]:
    async def nats_get_n() -> None:
        for _ in range(n):
            await kv.get(KEY)

    async def nats_put_n() -> None:
        for _ in range(n):
            await kv.put(KEY, VALUE)

    def checked(comp: Component, fn: str, want: int, *args: Any) -> Call:
        async def call() -> None:
            got = await comp.invoke(fn, bucket, KEY, *args)
            if got != want:
                raise RuntimeError(f"{comp.name} {fn} returned {got}, not {want}")
        return call

    paths = {"nats-py kv.get": Op(lambda: kv.get(KEY)),
             "nats-py kv.put": Op(lambda: kv.put(KEY, VALUE))}
    for tag, comp in (("in-process", local), ("standalone", remote)):
        paths[f"{tag} provider get"] = Op(checked(comp, "get", len(VALUE)))
        paths[f"{tag} provider set"] = Op(checked(comp, "set", 1, VALUE))
    paths["nats-py kv.get xN"] = Op(nats_get_n, n)
    paths["nats-py kv.put xN"] = Op(nats_put_n, n)
    for tag, comp in (("in-process", local), ("standalone", remote)):
        paths[f"{tag} provider get-n"] = Op(checked(comp, "get-n", n * len(VALUE), n), n)
        paths[f"{tag} provider set-n"] = Op(checked(comp, "set-n", n, VALUE, n), n)
    return paths


def c2c_paths(callee: Component, direct: Component, near: Component, far: Component, n: int
              ) -> dict[str, Op]:
    async def add() -> None:
        if await callee.invoke(ADD, 2, 40) != 42:
            raise RuntimeError("callee add is wrong")

    def checked(comp: Component, fn: str, want: int, *args: Any) -> Call:
        async def call() -> None:
            got = await comp.invoke(fn, *args)
            if got != want:
                raise RuntimeError(f"{comp.name} {fn} returned {got}, not {want}")
        return call

    paths = {"callee add, invoked here": Op(add)}
    for tag, comp in (("direct link", direct), ("same host", near), ("across hosts", far)):
        paths[f"c2c {tag}"] = Op(checked(comp, "call", 42, 2, 40))
    for tag, comp in (("direct link", direct), ("same host", near), ("across hosts", far)):
        paths[f"c2c {tag} call-n"] = Op(checked(comp, "call-n", n, n), n)
    return paths


# -- report ------------------------------------------------------------------------------------


def report(res: dict[str, list[float]], s: Settings) -> list[tuple[bool, str]]:
    def p50(name: str) -> float:
        return statistics.median(res[name])

    print(f"\nsingle calls (one invocation each; µs, {s.rounds} rounds x {s.single})")
    print(f"  {'path':<36} {'p50':>9} {'p99':>9}")
    for name, xs in res.items():
        if not name.endswith(("xN", "-n")):
            print(f"  {name:<36} {pct(xs, 0.5) * 1e6:>9.0f} {pct(xs, 0.99) * 1e6:>9.0f}")
    print(f"\nper operation ({s.n} per invocation or batch; µs, {s.rounds} rounds x "
          f"{s.batches} batches)")
    print(f"  {'path':<36} {'median':>9} {'best':>9}")
    for name, xs in res.items():
        if name.endswith(("xN", "-n")):
            print(f"  {name:<36} {statistics.median(xs) * 1e6:>9.1f} {min(xs) * 1e6:>9.1f}")

    def ratio(text: str, a: str, b: str) -> float:
        value = p50(a) / p50(b)
        print(f"    {text:<58} {value:6.2f}x")
        return value

    print("  ratios (medians)")
    checks = []
    for op, base in (("get", "kv.get"), ("set", "kv.put")):
        r = ratio(f"in-process provider {op}-n / nats-py {base} (per op)",
                  f"in-process provider {op}-n", f"nats-py {base} xN")
        checks.append((r <= TARGET,
                       f"in-process provider {op} from a component "
                       f"{p50(f'in-process provider {op}-n') * 1e6:.0f} µs/op <= {TARGET}x "
                       f"nats-py {base} {p50(f'nats-py {base} xN') * 1e6:.0f} µs ({r:.2f}x)"))
    for op, base in (("get", "kv.get"), ("set", "kv.put")):
        ratio(f"standalone provider {op}-n / nats-py {base} (per op)",
              f"standalone provider {op}-n", f"nats-py {base} xN")
        ratio(f"standalone / in-process provider {op}-n (per op)",
              f"standalone provider {op}-n", f"in-process provider {op}-n")
    for op, base in (("get", "kv.get"), ("set", "kv.put")):
        ratio(f"in-process provider {op}, single call / nats-py {base}",
              f"in-process provider {op}", f"nats-py {base}")
        ratio(f"standalone provider {op}, single call / nats-py {base}",
              f"standalone provider {op}", f"nats-py {base}")
    ratio("c2c same host / direct link (single call)", "c2c same host", "c2c direct link")
    ratio("c2c across hosts / same host (single call)", "c2c across hosts", "c2c same host")
    ratio("c2c across hosts / direct link (single call)", "c2c across hosts", "c2c direct link")
    ratio("c2c same host / direct link (call-n, per call)", "c2c same host call-n",
          "c2c direct link call-n")
    ratio("c2c across hosts / same host (call-n, per call)", "c2c across hosts call-n",
          "c2c same host call-n")
    return checks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=f"Target: in-process provider per operation <= {TARGET}x "
                                        "nats-py on the same bucket.")
    ap.add_argument("--quick", action="store_true", help="smoke run: few calls, 2 rounds")
    args = ap.parse_args(argv)
    s = QUICK if args.quick else FULL
    print(f"trellis providers bench{' (quick)' if args.quick else ''}: python "
          f"{platform.python_version()}, nats-py {version('nats-py')}, {server_version()}, "
          f"{os.cpu_count()} cpus")
    print(f"value {len(VALUE)} B; host A, components, in-process provider and nats-py client "
          "in this process; host B and the standalone provider in others; one nats-server")
    with tempfile.TemporaryDirectory(prefix="trellis-bench-") as tmp, \
            NatsServer(jetstream=True) as server:
        results = asyncio.run(run(server.url, Path(tmp), s))
    checks = report(results, s)
    print("\ntargets")
    for ok, text in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {text}")
    print(f"  {sum(ok for ok, _ in checks)}/{len(checks)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
