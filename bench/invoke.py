"""How much a call into a component costs through Trellis, against stock wasmtime-py.

Every figure is measured in this run, on this machine, against a baseline measured alongside
it, so the ratios mean something even on a loaded machine where absolute numbers drift::

    .venv/bin/python bench/invoke.py            # full run (~1 min; compiles the greeter once)
    .venv/bin/python bench/invoke.py --quick    # smoke run (used by tests/test_bench_smoke.py)
    .venv/bin/python bench/invoke.py --profile  # cProfile of the Trellis paths instead

Paths compared, per function:

(a) stock wasmtime-py: ``Func.__call__`` on an instance made once with ``Linker``/``Store``;
(b) ``Component.call`` on a pooled instance: the blocking fast path, no instantiation;
(c) ``await Component.invoke`` on a pooled instance: interceptor chain plus the worker-thread
    hop, awaited one after another from a single event loop.

The stock paths run on the same ``wasmtime.Engine`` and the same compiled component as Trellis,
so only the host-side Python differs. ``post_return`` is left out of (a): since wasmtime 43
``func_call`` runs it itself, so calling it would only pad the baseline.

Method: each path runs in batches sized to ~``batch`` seconds; batches of all paths of one row
are interleaved (rotating order) so background load hits them alike; the garbage collector is
off inside a batch (as ``timeit`` does). We report the best batch (the machine's capability)
and the median batch in brackets (what noise does to it). Exit status is 0 even when a target
is missed: timing is reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import wasmtime
from trellis.host import ComponentConfig, InstancePolicy, Limits, Runtime
from trellis.host.build import trellis_cache_dir
from trellis.host.runtime.runtime import Component
from wasmtime import component as wc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from components import ECHO, GREETER_FUNC, build_greeter  # noqa: E402

NO_DEADLINE = 2**62
TEXT = "Hello, Trellis! ünïcödé ✓ — a forty-odd char string"
ITEM = {"id": 7, "name": "widget", "score": 2.5}
BLOB = bytes(range(256)) * 256  # 64 KiB
Runner = Callable[[int], float]
"""``run(k)``: seconds taken by ``k`` calls."""


@dataclass(frozen=True)
class Settings:
    rounds: int
    """Batches per path; the best and the median are reported."""
    batch: float
    """Seconds a batch should take (calibrated per path)."""
    children: int
    """New processes per load measurement."""
    measure_compile: bool


FULL = Settings(rounds=11, batch=0.04, children=7, measure_compile=True)
QUICK = Settings(rounds=3, batch=0.008, children=2, measure_compile=False)


# --- timing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    best: float
    """Seconds per call in the fastest batch."""
    median: float
    per_batch: int

    def us(self) -> str:
        return f"{self.best * 1e6:.1f} [{self.median * 1e6:.1f}]"

    def ms(self) -> str:
        return f"{self.best * 1e3:.2f} [{self.median * 1e3:.2f}]"


def sync_runner(fn: Callable[..., Any], *args: Any) -> Runner:
    def run(k: int) -> float:
        started = time.perf_counter()
        for _ in range(k):
            fn(*args)
        return time.perf_counter() - started

    return run


def async_runner(loop: asyncio.AbstractEventLoop, fn: Callable[..., Awaitable[Any]],
                 *args: Any) -> Runner:
    """Awaits ``fn(*args)`` ``k`` times in a row; the clock runs inside the loop, so starting
    the loop is not counted."""

    async def batch(k: int) -> float:
        started = time.perf_counter()
        for _ in range(k):
            await fn(*args)
        return time.perf_counter() - started

    return lambda k: loop.run_until_complete(batch(k))


def _timed(run: Runner, k: int) -> float:
    gc.collect()
    gc.disable()
    try:
        return run(k)
    finally:
        gc.enable()


def _calibrate(run: Runner, target: float) -> int:
    """Calls per batch so that a batch takes about ``target`` seconds (after a warm-up)."""
    run(1)
    k = 1
    while True:
        took = _timed(run, k)
        if took >= target / 2 or k >= 1 << 20:
            return max(1, round(k * target / max(took, 1e-9)))
        k *= 4


def measure(runners: dict[str, Runner], s: Settings) -> dict[str, Timing]:
    """Interleave batches of every runner, rotating who goes first each round."""
    sizes = {name: _calibrate(run, s.batch) for name, run in runners.items()}
    samples: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(s.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            samples[name].append(_timed(runners[name], sizes[name]) / sizes[name])
    return {n: Timing(min(v), statistics.median(v), sizes[n]) for n, v in samples.items()}


# --- setup -------------------------------------------------------------------------------------


@dataclass
class Stock:
    """A stock wasmtime-py embedding of one component: linker, store, instance."""

    engine: wasmtime.Engine
    component: wc.Component
    wasi: bool
    linker: wc.Linker = field(init=False)
    store: wasmtime.Store = field(init=False)
    instance: wc.Instance = field(init=False)

    def __post_init__(self) -> None:
        self.linker = wc.Linker(self.engine)
        if self.wasi:
            self.linker.add_wasip2()
        self.store, self.instance = self.instantiate()

    def instantiate(self) -> tuple[wasmtime.Store, wc.Instance]:
        store = wasmtime.Store(self.engine)
        store.set_epoch_deadline(NO_DEADLINE)  # the engine has epoch interruption on
        if self.wasi:
            store.set_wasi(wasmtime.WasiConfig())
        return store, self.linker.instantiate(store, self.component)

    def func(self, comp: Component, name: str) -> wc.Func:
        f = self.instance.get_func(self.store, comp.resolve(name).path[-1])
        assert f is not None, name
        return f


@dataclass(frozen=True)
class Case:
    label: str
    short: str
    function: str
    args: tuple[Any, ...]
    stock_args: tuple[Any, ...]
    expect: Any
    small: bool


def stock_record(d: dict[str, Any]) -> wc.Record:
    r = wc.Record()
    for k, v in d.items():
        setattr(r, k, v)
    return r


def _same(got: Any, expect: Any) -> bool:
    return bool((vars(got) if isinstance(got, wc.Record) else got) == expect)


# --- sections ----------------------------------------------------------------------------------


@dataclass
class Target:
    what: str
    measured: float
    limit: float
    unit: str
    at_least: bool = False
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.measured >= self.limit if self.at_least else self.measured <= self.limit


@dataclass
class Report:
    s: Settings
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def say(self, line: str = "") -> None:
        print(line, flush=True)


def _noop() -> None:
    return None


def hop_runner(loop: asyncio.AbstractEventLoop, rt: Runtime) -> Runner:
    """One round trip to the runtime's worker pool and back, doing nothing: the floor under
    every (c) figure, however lean the interceptor chain gets."""
    executor = rt._executor

    def hop() -> Awaitable[None]:
        return asyncio.wrap_future(executor.submit(_noop))

    return async_runner(loop, hop)


def bench_calls(rep: Report, loop: asyncio.AbstractEventLoop, rt: Runtime,
                comps: dict[str, tuple[Component, Stock]], cases: Sequence[Case]) -> None:
    rep.say("per-call latency, µs per call: best batch [median batch]")
    head = (f"  {'call':<24}{'(a) stock __call__':>20}{'(b) Component.call':>20}"
            f"{'(c) await invoke':>20}{'(b)/(a)':>9}{'(c)/(a)':>9}{'(a)/(b)':>9}")
    rep.say(head)
    hops: list[Timing] = []
    for case in cases:
        comp, stock = comps[case.function]
        f = stock.func(comp, case.function)
        for got in (f(stock.store, *case.stock_args), comp.call(case.function, *case.args),
                    loop.run_until_complete(comp.invoke(case.function, *case.args))):
            if not _same(got, case.expect):
                raise SystemExit(f"{case.label}: wrong result {got!r:.80}")
        t = measure({
            "a": sync_runner(f, stock.store, *case.stock_args),
            "b": sync_runner(comp.call, case.function, *case.args),
            "c": async_runner(loop, comp.invoke, case.function, *case.args),
            "hop": hop_runner(loop, rt),  # interleaved with (c), so it sees the same load
        }, rep.s)
        hops.append(t["hop"])
        a, b, c = (t[k].best for k in "abc")
        rep.say(f"  {case.label:<24}{t['a'].us():>20}{t['b'].us():>20}{t['c'].us():>20}"
                f"{b / a:>9.2f}{c / a:>9.2f}{a / b:>9.1f}")
        if case.small:
            rep.targets.append(Target(f"{case.short}: (b)/(a) pooled call / stock",
                                      b / a, 0.5, "x", detail=f"{b*1e6:.1f} / {a*1e6:.1f} µs"))
        else:
            rep.targets.append(Target(f"{case.short}: (a)/(b) stock / pooled call", a / b, 10.0,
                                      "x", at_least=True, detail=f"{a*1e3:.2f} / {b*1e3:.2f} ms"))
        rep.targets.append(Target(f"{case.short}: (c)/(a) await invoke / stock", c / a, 1.5, "x",
                                  detail=f"{c*1e6:.1f} / {a*1e6:.1f} µs"))
    if platform.libc_ver()[0] == "glibc":
        rep.say("  note: each 64 KiB call makes MB-sized allocations in wasmtime; glibc serves "
                "them from fresh mmaps (page faults: ~+50%)\n        until some large block "
                "has been freed in the process and raised malloc's mmap threshold (loading the "
                "18 MB greeter does that).")
    best = min(h.best for h in hops) * 1e6
    median = statistics.median(h.median for h in hops) * 1e6
    rep.say(f"  floor under (c): a worker-thread round trip doing nothing, await "
            f"wrap_future(executor.submit(noop)) = {best:.1f} [{median:.1f}] µs")
    rep.say()


def bench_instantiation(rep: Report, rt: Runtime, name: str, pooled: Component,
                        fresh: Component, stock: Stock, call: tuple[Any, ...],
                        limit: float) -> None:
    """Trellis's instance creation against stock ``Store()`` + ``instantiate``, directly and
    as the difference a fresh-mode call makes."""
    mgr = fresh.instances
    lim = Limits().merged(mgr.defaults)
    f = stock.func(pooled, call[0])

    def stock_fresh_call(k: int) -> float:
        started = time.perf_counter()
        for _ in range(k):
            store, inst = stock.instantiate()
            g = inst.get_func(store, pooled.resolve(call[0]).path[-1])
            assert g is not None
            g(store, *call[1:])
        return time.perf_counter() - started

    t = measure({
        "stock_new": lambda k: _loop_time(k, stock.instantiate),
        "slot": lambda k: _loop_time(k, mgr._new_slot, lim),
        "fresh": sync_runner(fresh.call, *call),
        "pooled": sync_runner(pooled.call, *call),
        "stock_fresh": stock_fresh_call,
        "stock_call": sync_runner(f, stock.store, *call[1:]),
    }, rep.s)
    over = t["fresh"].best - t["pooled"].best
    fmt = Timing.us if limit < 1e-3 else Timing.ms
    unit = "µs" if limit < 1e-3 else "ms"
    scale = 1e6 if limit < 1e-3 else 1e3
    rep.say(f"instantiation, {name}, {unit}: best [median]")
    rep.say(f"  stock Store()+linker.instantiate        {fmt(t['stock_new']):>18}")
    rep.say(f"  Trellis InstanceManager._new_slot       {fmt(t['slot']):>18}"
            f"   ({t['slot'].best / t['stock_new'].best:.2f}x stock)")
    rep.say(f"  Trellis fresh-mode call                 {fmt(t['fresh']):>18}")
    rep.say(f"  Trellis pooled call                     {fmt(t['pooled']):>18}"
            f"   fresh/pooled {t['fresh'].best / t['pooled'].best:.1f}x")
    rep.say(f"  => instantiation per fresh call         {over * scale:>11.2f}"
            f"         (fresh − pooled, best batches)")
    rep.say(f"  stock fresh call (instantiate+get+call) {fmt(t['stock_fresh']):>18}"
            f"   stock pooled call {fmt(t['stock_call'])}")
    rep.say()
    rep.targets.append(Target(f"{name}: instantiation per fresh call",
                              over * scale, limit * scale, unit,
                              detail=f"fresh − pooled; _new_slot {t['slot'].best * scale:.2f} "
                                     f"{unit}, stock "
                                     f"{t['stock_new'].best * scale:.2f} {unit}"))


def _loop_time(k: int, fn: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    for _ in range(k):
        fn(*args)
    return time.perf_counter() - started


# --- loading in a new process --------------------------------------------------------------------


def _child(kind: str, path: str) -> None:
    """Runs in a new process: time one load (nothing else), print it as JSON."""
    if kind == "trellis":
        rt = Runtime()
        started = time.perf_counter()
        comp = rt.load(path)
        took = time.perf_counter() - started
        hit = comp.compiled.compile_seconds is None
        rt.close()
    else:
        from trellis.host.runtime.engine import Engine

        engine = Engine().wasmtime  # the same Config the artifact was compiled with
        started = time.perf_counter()
        wc.Component.deserialize_file(engine, path)
        took = time.perf_counter() - started
        hit = True
    print(json.dumps({"seconds": took, "hit": hit}))


def _spawn(kind: str, path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"load child ({kind}) failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _compile_record() -> Path:
    return Path(trellis_cache_dir()) / "bench" / "compile-seconds.json"


def compile_seconds(rep: Report, rt: Runtime, comp: Component, source: Path) -> str:
    """The greeter's compile time: measured by this run's load if it missed the AOT cache, else
    remembered from an earlier run, else (full runs) measured now."""
    key = f"{rt.engine.config.fingerprint()}:{comp.compiled.digest}"
    record = _compile_record()
    try:
        known: dict[str, float] = json.loads(record.read_text())
    except (OSError, ValueError):
        known = {}
    seconds = comp.compiled.compile_seconds
    how = "this run's first load"
    if seconds is None and key in known:
        seconds, how = known[key], "recorded by an earlier run"
    elif seconds is None and rep.s.measure_compile:
        rep.say("  (compiling the greeter once to time it; recorded for later runs…)")
        started = time.perf_counter()
        wc.Component(rt.engine.wasmtime, source.read_bytes())
        seconds, how = time.perf_counter() - started, "measured now"
    if seconds is None:
        return "n/a (AOT cache was warm; a full run measures it)"
    if known.get(key) != seconds:
        known[key] = seconds
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(known, indent=1))
    return f"{seconds:.1f} s ({how})"


def bench_load(rep: Report, rt: Runtime, comp: Component, source: Path) -> None:
    artifact, _ = rt.cache._paths(rt.engine, comp.compiled.digest)
    if not artifact.is_file():
        raise SystemExit(f"no AOT artifact at {artifact}: is the cache disabled?")
    trellis: list[float] = []
    stock: list[float] = []
    for _ in range(rep.s.children):
        r = _spawn("trellis", source)
        if not r["hit"]:
            rep.notes.append("a load child missed the AOT cache (it compiled)")
        trellis.append(r["seconds"])
        stock.append(_spawn("stock", artifact)["seconds"])
    compiled = compile_seconds(rep, rt, comp, source)
    best, med = min(trellis), statistics.median(trellis)
    sbest, smed = min(stock), statistics.median(stock)
    mb = source.stat().st_size / 1e6, artifact.stat().st_size / 1e6
    rep.say(f"greeter load in a new process, warm AOT cache ({rep.s.children} processes each; "
            f"{mb[0]:.1f} MB component, {mb[1]:.1f} MB artifact), ms: best [median]")
    rep.say(f"  Trellis Runtime().load(path)            {best * 1e3:>8.1f} [{med * 1e3:.1f}]")
    rep.say(f"  stock Component.deserialize_file        {sbest * 1e3:>8.1f} [{smed * 1e3:.1f}]"
            f"   Trellis/stock {best / sbest:.1f}x")
    rep.say(f"  compile (cache miss)                    {compiled}")
    rep.say()
    rep.targets.append(Target("greeter: cache-hit load, new process", best * 1e3, 50.0, "ms",
                              detail=f"stock deserialize_file {sbest * 1e3:.1f} ms"))


# --- main ----------------------------------------------------------------------------------------


def print_targets(rep: Report) -> None:
    rep.say("targets")
    for tg in rep.targets:
        op = "≥" if tg.at_least else "≤"
        verdict = "PASS" if tg.ok else "MISS"
        rep.say(f"  {verdict}  {tg.what:<46}{tg.measured:>8.2f} {tg.unit:<2}  target {op} "
                f"{tg.limit:<4g}{tg.unit:<2}  ({tg.detail})")
    missed = sum(not tg.ok for tg in rep.targets)
    rep.say(f"  {len(rep.targets) - missed}/{len(rep.targets)} targets met")
    for note in rep.notes:
        rep.say(f"note: {note}")


def setup(rt: Runtime) -> tuple[dict[str, tuple[Component, Stock]], dict[str, Component], Path]:
    """Pooled and fresh Trellis components and stock embeddings of the echo WAT and greeter."""
    pooled = ComponentConfig(policy=InstancePolicy(mode="pooled"))
    echo = rt.load(ECHO.encode(), name="echo", config=pooled)
    source = build_greeter()
    greeter = rt.load(source, config=pooled)
    engine = rt.engine.wasmtime
    echo_stock = Stock(engine, echo.compiled.wasmtime, wasi=False)
    greeter_stock = Stock(engine, greeter.compiled.wasmtime, wasi=True)
    comps = {f: (echo, echo_stock) for f in ("add", "echo-string", "echo-record", "echo-bytes")}
    comps[GREETER_FUNC] = (greeter, greeter_stock)
    fresh = {
        "echo": rt.load(ECHO.encode(), name="echo"),
        "greeter": rt.load(source),
    }
    return comps, fresh, source


def cases() -> list[Case]:
    return [
        Case("add(u32,u32)->u32", "add", "add", (1, 2), (1, 2), 3, True),
        Case(f"echo string ({len(TEXT.encode())} B)", "string", "echo-string", (TEXT,), (TEXT,),
             TEXT, True),
        Case("echo record{u32,str,f64}", "record", "echo-record", (ITEM,), (stock_record(ITEM),),
             ITEM, True),
        Case("greet(\"Developer\")", "greeter", GREETER_FUNC, ("Developer",), ("Developer",),
             "Hello from Python, Developer! Built with the Component Model.", True),
        Case("echo list<u8> 64 KiB", "64 KiB list<u8>", "echo-bytes", (BLOB,), (BLOB,), BLOB,
             False),
    ]


def run(s: Settings) -> None:
    rep = Report(s)
    load0 = os.getloadavg()[0]
    rep.say(f"Trellis invoke benchmark{' (--quick)' if s is QUICK else ''}: wasmtime-py "
            f"{version('wasmtime')}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"load average {load0:.2f} at start; {s.rounds} interleaved batches of "
            f"~{s.batch * 1e3:.0f} ms per figure")
    rep.say()
    with Runtime() as rt:
        comps, fresh, source = setup(rt)
        loop = asyncio.new_event_loop()
        try:
            bench_calls(rep, loop, rt, comps, cases())
        finally:
            loop.close()
        echo, echo_stock = comps["add"]
        greeter, greeter_stock = comps[GREETER_FUNC]
        bench_instantiation(rep, rt, "tiny WAT", echo, fresh["echo"], echo_stock, ("add", 1, 2),
                            30e-6)
        bench_instantiation(rep, rt, "greeter", greeter, fresh["greeter"], greeter_stock,
                            (GREETER_FUNC, "Developer"), 2e-3)
        bench_load(rep, rt, greeter, source)
    rep.say(f"load average {os.getloadavg()[0]:.2f} at end (started at {load0:.2f}); "
            "treat differences under ~20% as noise")
    rep.say()
    print_targets(rep)


def profile(s: Settings) -> None:
    """Where the time of the Trellis paths goes: cProfile tables, the (c) path taken apart, and
    a step-by-step cache-hit load in a new process."""
    with Runtime() as rt:
        comps, _, source = setup(rt)
        loop = asyncio.new_event_loop()
        for case in cases()[:4]:
            comp, _ = comps[case.function]
            for label, runner in (
                ("(b) Component.call", sync_runner(comp.call, case.function, *case.args)),
                ("(c) await invoke", async_runner(loop, comp.invoke, case.function, *case.args)),
            ):
                runner(100)
                prof = cProfile.Profile()
                prof.enable()
                runner(3000)
                prof.disable()
                _print_profile(f"{case.label} {label}, 3000 calls", prof)
        _decompose(rt, loop, comps, s)
        loop.close()
    print("== greeter cache-hit load in a new process, step by step (ms)", flush=True)
    for _ in range(3):
        done = subprocess.run([sys.executable, __file__, "--child", "steps", str(source)],
                              capture_output=True, text=True, timeout=120, check=True)
        print("  " + done.stdout.strip(), flush=True)


def _decompose(rt: Runtime, loop: asyncio.AbstractEventLoop,
               comps: dict[str, tuple[Component, Stock]], s: Settings) -> None:
    """``add`` through ever more of the stack, timed (not profiled), interleaved."""
    from trellis.host.invocation import Invocation, InvocationChain

    comp, stock = comps["add"]
    mgr = comp.instances
    fn = comp.resolve("add")
    comp.call("add", 1, 2)
    slot = mgr._idle[0]
    ff = slot.func(fn)
    lim = Limits().merged(mgr.defaults)

    async def inline(call: Invocation) -> Any:
        return comp.call("add", 1, 2)

    chain = InvocationChain(rt.interceptors, inline)

    def chain_only() -> Awaitable[Any]:
        pending: Awaitable[Any] = chain.invoke(
            Invocation(component=comp.name, function=fn.key, args=(1, 2)))
        return pending

    t = measure({
        "stock Func.__call__": sync_runner(stock.func(comp, "add"), stock.store, 1, 2),
        "FastFunc.call": sync_runner(ff.call, slot.store, (1, 2)),
        "InstanceManager.run_acquired(slot)": sync_runner(mgr.run_acquired, fn, (1, 2), lim, slot),
        "InstanceManager.call": sync_runner(mgr.call, fn, (1, 2)),
        "Component.call": sync_runner(comp.call, "add", 1, 2),
        "chain + inline Component.call": async_runner(loop, chain_only),
        "worker round trip (noop)": hop_runner(loop, rt),
        "await Component.invoke": async_runner(loop, comp.invoke, "add", 1, 2),
    }, s)
    print("== add(1, 2) through ever more of the stack, µs: best [median]")
    for name, tm in t.items():
        print(f"  {name:<40}{tm.us():>18}")
    print(flush=True)


def _child_steps(path: str) -> None:
    """A cache-hit ``Runtime().load`` with its steps timed by wrapping the functions it calls."""
    from trellis.host.runtime import cache, loader, runtime

    spent: dict[str, float] = {}

    def timed(owner: Any, attr: str, label: str) -> None:
        inner = getattr(owner, attr)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - started

        setattr(owner, attr, wrapper)

    timed(Path, "read_bytes", "read source")
    timed(cache.CompileCache, "file_digest", "digest (memo)")
    timed(cache, "_crc32_file", "crc32 artifact")
    timed(wc.Component, "deserialize_file", "deserialize_file")
    timed(loader, "world_type", "world_type")
    timed(loader, "_index_functions", "index exports")
    timed(runtime, "InstanceManager", "InstanceManager (linker)")
    rt = Runtime()
    started = time.perf_counter()
    rt.load(path)
    total = time.perf_counter() - started
    rt.close()
    parts = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in spent.items())
    print(f"total {total * 1e3:.1f}: {parts}")


def _print_profile(title: str, prof: cProfile.Profile) -> None:
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(14)
    body = out.getvalue()
    start = body.find("   ncalls")
    print(f"== {title}\n{body[start:].rstrip()}\n", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="Per-call latency, instantiation and cache-hit load time of Trellis "
                    "against stock wasmtime-py, with targets marked PASS/MISS.")
    ap.add_argument("--quick", action="store_true",
                    help="short smoke run: fewer, shorter batches; no compile timing")
    ap.add_argument("--profile", action="store_true",
                    help="instead of benchmarking: cProfile tables of the Trellis paths, add() "
                         "through each layer, and a cache-hit load step by step")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        if args.child[0] == "steps":
            _child_steps(args.child[1])
        else:
            _child(*args.child)
        return
    settings = QUICK if args.quick else FULL
    if args.profile:
        profile(settings)
    else:
        run(settings)


if __name__ == "__main__":
    main()
