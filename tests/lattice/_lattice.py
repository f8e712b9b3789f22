"""Shared pieces of the lattice tests: small WAT components and a factory of in-process hosts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from trellis.host.config import HostConfig
from trellis.host.host import Host
from trellis.host.runtime.imports import HostImports
from trellis.host.runtime.runtime import Runtime
from trellis.lattice.client import LatticeClient
from trellis.lattice.connection import flush
from trellis.lattice.errors import LinkTargetUnavailable, NoLink

REPO = Path(__file__).resolve().parents[2]
CALC_WAT = REPO / "examples" / "calc-wat" / "calc.wat"
ADD = "example:calc/calc@0.1.0#add"

# echo: func(b: list<u8>) -> list<u8> returns its argument where the host lowered it; add(a, b).
ECHO = r"""
(component
  (core module $m
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    (func $realloc (export "cabi_realloc")
      (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $ptr i32) (local $end i32) (local $have i32)
      (local.set $ptr
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $ptr) (local.get $size)))
      (local.set $have (i32.shl (memory.size) (i32.const 16)))
      (if (i32.gt_u (local.get $end) (local.get $have))
        (then
          (if (i32.eq
                (memory.grow
                  (i32.shr_u
                    (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 0xffff))
                    (i32.const 16)))
                (i32.const -1))
            (then unreachable))))
      (global.set $next (local.get $end))
      (local.get $ptr))
    (func (export "echo") (param i32 i32) (result i32)
      (i32.store (i32.const 0) (local.get 0))
      (i32.store (i32.const 4) (local.get 1))
      (i32.const 0))
    (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
    (func (export "reset") (param i32) (global.set $next (i32.const 1024)))
  )
  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $mem))
  (alias core export $i "cabi_realloc" (core func $realloc))
  (alias core export $i "reset" (core func $reset))
  (func (export "echo") (param "b" (list u8)) (result (list u8))
    (canon lift (core func $i "echo") (memory $mem) (realloc $realloc) (post-return $reset)))
  (func (export "add") (param "a" u32) (param "b" u32) (result u32)
    (canon lift (core func $i "add")))
)
"""

# Imports test:host/clock { sleep(ms) } (a Python host function, see ``clock_imports``):
# nap(ms) -> ms sleeps that long; spin() loops until its deadline stops it.
NAP = r"""
(component
  (import "test:host/clock" (instance $clock
    (export "sleep" (func (param "ms" u32)))))
  (core func $sleep (canon lower (func $clock "sleep")))
  (core module $m
    (import "host" "sleep" (func $s (param i32)))
    (func (export "nap") (param i32) (result i32) (call $s (local.get 0)) (local.get 0))
    (func (export "spin") (loop $l (br $l))))
  (core instance $host (export "sleep" (func $sleep)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func (export "nap") (param "ms" u32) (result u32) (canon lift (core func $i "nap")))
  (func (export "spin") (canon lift (core func $i "spin")))
)
"""


def clock_imports() -> HostImports:
    imports = HostImports()
    imports.register("test:host/clock", {"sleep": lambda ms: time.sleep(ms / 1000)})
    return imports


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


class Hosts:
    """In-process hosts for one test, each with its own runtime; all stopped at the end."""

    def __init__(self, nats_url: str, lattice: str, cache_dir: Path, aot_dir: Path | None = None,
                 **runtime_kw: Any) -> None:
        self.nats_url, self.lattice, self.cache_dir = nats_url, lattice, cache_dir
        self.aot_dir = aot_dir or cache_dir / "aot"
        self.runtime_kw = runtime_kw
        self.stack = contextlib.AsyncExitStack()
        self.runtimes: list[Runtime] = []

    async def start(self, host_id: str | None = None, *, runtime_kw: dict[str, Any] | None = None,
                    **config: Any) -> Host:
        kw = {**self.runtime_kw, **(runtime_kw or {})}
        kw.setdefault("imports", clock_imports())
        kw.setdefault("cache_dir", self.aot_dir)
        runtime = Runtime(**kw)
        self.runtimes.append(runtime)
        cfg = HostConfig(nats_url=self.nats_url, lattice=self.lattice, host_id=host_id,
                         cache_dir=self.cache_dir, **config)
        return await self.stack.enter_async_context(Host(cfg, runtime))

    async def aclose(self) -> None:
        await self.stack.aclose()
        for rt in self.runtimes:
            rt.close()


@contextlib.asynccontextmanager
async def client(nats_url: str, lattice: str, **kw: Any) -> AsyncIterator[LatticeClient]:
    async with LatticeClient(nats_url, lattice, **kw) as lc:
        yield lc


class Events:
    """Every event of a lattice, recorded from the moment of ``start``."""

    def __init__(self, nc: Any, lattice: str) -> None:
        self.nc, self.lattice = nc, lattice
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._new = asyncio.Event()

    async def start(self) -> Events:
        import json

        from trellis.lattice import subjects

        async def on(msg: Any) -> None:
            self.seen.append((msg.subject.rsplit(".", 1)[-1], json.loads(msg.data)))
            self._new.set()

        await self.nc.subscribe(subjects.events_all(self.lattice), cb=on)
        await flush(self.nc)
        return self

    def names(self) -> list[str]:
        return [n for n, _ in self.seen]

    async def wait_for(self, name: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The first event ``name`` whose data has ``match`` items (waiting for it)."""
        async with asyncio.timeout(timeout):
            while True:
                for n, ev in self.seen:
                    data = ev.get("data", {})
                    if n == name and all(data.get(k) == v for k, v in match.items()):
                        return ev
                self._new.clear()
                await self._new.wait()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    """Retry ``check`` until it stops raising or ``timeout`` passes (then raise its error):
    link changes reach hosts within about a second."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except (AssertionError, NoLink, LinkTargetUnavailable):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
