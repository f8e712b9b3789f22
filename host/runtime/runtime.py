"""``Runtime`` and ``Component``: the embedding API of the Trellis component runtime.

::

    async with Runtime() as rt:
        greeter = rt.load("greeter.wasm")                 # compiled once, then AOT-cached
        print(await greeter.invoke("greet", "Developer"))  # full interceptor chain, off-loop
        print(greeter.call("greet", "Developer"))          # blocking fast path, same rules

Resource handling: the runtime owns one engine, one epoch ticker thread and one worker pool;
``close()`` stops them. ``invoke`` runs a call inline on the event-loop thread when that is
cheap and safe — a warm pooled instance is free, the function's calls are quick, the loop's
inline budget (~1 ms per iteration) is not spent — started with ``func_call_async`` so that it
yields at the next epoch tick: one that has not finished by then moves, suspended, to a worker
thread (``asynccall.py``). Everything else waits for an instance slot on the loop (with the
call's deadline) and runs on a worker thread, where ctypes releases the GIL so calls of
different instances execute in parallel. Host imports of an inline call run on the loop
thread, so they must not block; an import that waits (a provider talking to NATS or Redis)
is a coroutine instead, and the component then runs through ``bridged.py``: suspended on the
loop while the coroutine runs, with no thread per waiting call.

Error handling: every failure is a ``TrellisError`` subclass (see ``lattice/errors.py``); a
trap discards the instance's Store, never the component.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.trace import TracerProvider

from ...lattice.errors import CapacityTimeout, HostStoppedError
from ...lattice.wit import types as t
from ..eager import in_task
from ..invocation import (
    NO_LIMITS,
    Interceptor,
    Invocation,
    InvocationChain,
    LimitsInterceptor,
    TelemetryInterceptor,
)
from .asynccall import MAX_TURNS, NOT_INLINE, InflightCall, budget_left, next_turn
from .cache import CompileCache
from .engine import Engine, EngineConfig, PoolConfig
from .hostcalls import HostLoop
from .imports import HostImports
from .instances import InstanceManager, InstancePolicy, Limits, Session, WasiOptions
from .loader import CompiledComponent, ExportedFunction, Progress, load_component

_NO_LIMITS = NO_LIMITS
"""The limits of an invocation that asks for none (shared: building one costs ~1 µs), the
same object the invocation model defaults to, so host RPC calls skip ``Limits.merged``."""


@dataclass(frozen=True)
class ComponentConfig:
    """How one component runs on this host."""

    policy: InstancePolicy = field(default_factory=InstancePolicy)
    limits: Limits = field(default_factory=Limits)
    """Defaults for every invocation; a call may override them."""
    wasi: WasiOptions = field(default_factory=WasiOptions)
    missing_imports: str = "error"
    """``error``: refuse to run with unsatisfied imports; ``trap``: trap only if called."""


class Runtime:
    """Loads components and runs their invocations. One per process is typical."""

    def __init__(
        self,
        *,
        engine: EngineConfig | None = None,
        pool: PoolConfig | None = None,
        cache_dir: Path | None = None,
        cache: bool = True,
        imports: HostImports | None = None,
        interceptors: Sequence[Interceptor] = (),
        tracer_provider: TracerProvider | None = None,
        max_workers: int = 64,
    ) -> None:
        self.engine = Engine.open(engine, pool)
        self.cache = CompileCache(cache_dir, enabled=cache)
        self.imports = imports or HostImports()
        self.interceptors: tuple[Interceptor, ...] = (
            TelemetryInterceptor(tracer_provider), LimitsInterceptor(), *interceptors,
        )
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="trellis-wasm")
        self._workers = WasmWorkers(max_workers)
        self.host_loop = HostLoop()
        """Where async host imports (providers) run; ``Host`` binds its own loop."""
        self._closed = False

    # -- loading ------------------------------------------------------------------------------

    def load(
        self,
        source: str | Path | bytes,
        *,
        name: str | None = None,
        config: ComponentConfig | None = None,
        imports: HostImports | Callable[[CompiledComponent], HostImports] | None = None,
        progress: Progress | None = None,
    ) -> Component:
        """Load (compile or fetch from cache) and prepare a component. Blocking.

        ``imports`` defaults to the runtime's; a callable gets the compiled component (its
        world) and returns them, as the host does to give each import its link dispatcher."""
        self._check_open()
        compiled = load_component(self.engine, source, cache=self.cache, name=name,
                                  progress=progress)
        if callable(imports):
            imports = imports(compiled)
        return Component(self, compiled, config or ComponentConfig(), imports or self.imports)

    async def load_async(self, source: str | Path | bytes, **kwargs: Any) -> Component:
        """``load`` on a worker thread, so compiles never stall the event loop."""
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self.load(source, **kwargs))

    # -- lifecycle ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise HostStoppedError("runtime is closed")

    def close(self) -> None:
        """Stop the worker pool and the epoch ticker. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._workers.close()
        self.host_loop.close()
        self.engine.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Component:
    """A loaded component on a runtime, with its instances and its invocation chain."""

    def __init__(self, runtime: Runtime, compiled: CompiledComponent, config: ComponentConfig,
                 imports: HostImports) -> None:
        self.runtime = runtime
        self.compiled = compiled
        self.config = config
        self.instances = InstanceManager(
            runtime.engine, compiled, imports, config.policy, config.wasi, config.limits,
            config.missing_imports, runtime.host_loop,
        )
        self.chain = InvocationChain(runtime.interceptors, self._execute)

    @property
    def name(self) -> str:
        return self.compiled.name

    @property
    def world(self) -> t.WorldType:
        return self.compiled.world

    def functions(self) -> list[str]:
        return sorted(self.compiled.functions)

    def resolve(self, function: str) -> ExportedFunction:
        return self.compiled.resolve(function)

    # -- calling ------------------------------------------------------------------------------

    def call(self, function: str, *args: Any, timeout: float | None = None,
             fuel: int | None = None, max_memory: int | None = None) -> Any:
        """Blocking call on the calling thread (no interceptors): the lowest-overhead path."""
        fn = self.compiled.resolve(function)
        unset = timeout is None and fuel is None and max_memory is None
        limits = None if unset else Limits(timeout, fuel, max_memory)
        return self.instances.call(fn, args, limits)

    async def invoke(self, function: str, *args: Any, timeout: float | None = None,
                     fuel: int | None = None, max_memory: int | None = None,
                     caller: str | None = None, **meta: Any) -> Any:
        """Call through the full interceptor chain, off the event loop."""
        fn = self.compiled.resolve(function)
        self.instances.check_args(fn, args)
        unset = timeout is None and fuel is None and max_memory is None
        call = Invocation(
            component=self.name, function=fn.key, args=args, caller=caller,
            limits=_NO_LIMITS if unset else Limits(timeout, fuel, max_memory), **meta,
        )
        return await self.chain.invoke(call)

    async def _execute(self, call: Invocation) -> Any:
        """The chain's last link: inline on the loop thread when a warm instance is free and
        the call is likely quick (a worker round trip costs more than a small call), else
        wait for capacity on the loop and run on a worker thread."""
        self.runtime._check_open()
        fn = self.compiled.resolve(call.function)
        mgr = self.instances
        # Limits are frozen dataclasses (~1 µs to build): reuse the merged defaults if we can.
        limits = mgr._default_limits if call.limits is _NO_LIMITS \
            else call.limits.merged(mgr.defaults)
        if mgr.bridged:  # its host calls wait with timeouts: they need a task of their own
            await in_task()
            return await mgr.invoke_bridged(fn, call.args, limits, call.deadline, self._offload)
        if mgr.policy.mode == "pooled":
            out = mgr.start_inline(fn, call.args, limits, call.deadline)
            # Only the loop's inline budget stands in the way and the function is quick: wait
            # for a turn in a later loop iteration rather than for a worker. A small call
            # gains nothing on a worker and costs GIL hand-offs (in-process at 50 callers:
            # ~190 µs CPU per call on workers against ~50 inline).
            turns = 0
            while (out is NOT_INLINE and turns < MAX_TURNS and not budget_left(turns > 0)
                   and mgr.quick(fn)):
                await next_turn(missed=turns > 0)
                turns += 1
                out = mgr.start_inline(fn, call.args, limits, call.deadline, turn=True)
            if out is not NOT_INLINE:
                if type(out) is InflightCall:
                    return await self._migrate(out)
                return out
        started = time.monotonic()
        if not await mgr.capacity.acquire_async(call.remaining()):
            raise CapacityTimeout(self.name, fn.key, mgr.policy.max_instances,
                                  time.monotonic() - started)
        if call.deadline is not None:
            left = call.deadline - time.monotonic()
            if left <= 0:
                mgr.capacity.release()
                raise CapacityTimeout(self.name, fn.key, mgr.policy.max_instances,
                                      time.monotonic() - started)
            limits = Limits(left, limits.fuel, limits.max_memory)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        try:
            self.runtime._workers.submit(loop, fut, mgr.capacity.release, self._run_held,
                                         fn, call.args, limits)
        except RuntimeError:  # closed between the check and now
            mgr.capacity.release()
            raise HostStoppedError("runtime is closed") from None
        return await fut

    async def _offload(self, fn: Any, *args: Any, on_skip: Any = None) -> Any:
        """Run ``fn(*args)`` on a wasm worker thread and await its result; ``on_skip`` runs
        instead when the caller gave up before a worker took it."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        try:
            self.runtime._workers.submit(loop, fut, on_skip or _nothing, fn, *args)
        except RuntimeError:
            if on_skip is not None:
                on_skip()
            raise HostStoppedError("runtime is closed") from None
        return await fut

    async def _migrate(self, inflight: InflightCall) -> Any:
        """Hand a call suspended after its first poll to a worker, which polls it to the end.
        Cancelling the awaiting task makes the worker trap it at the next epoch tick."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        try:
            self.runtime._workers.submit(loop, fut, inflight.finish_quietly, inflight.finish)
        except RuntimeError:  # closed since the call started
            inflight.abandon()
            raise HostStoppedError("runtime is closed") from None
        try:
            return await fut
        except asyncio.CancelledError:
            inflight.cancel()
            raise

    def _run_held(self, fn: ExportedFunction, args: Sequence[Any], limits: Limits) -> Any:
        try:
            return self.instances.run_acquired(fn, args, limits)
        finally:
            self.instances.capacity.release()

    def session(self, *, timeout: float | None = None) -> Session:
        """Pin one instance for several calls (for resources). Use as a context manager."""
        return self.instances.session(Limits(timeout) if timeout else None)


def _nothing() -> None:
    return None


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # cancelled while the call ran; the result is dropped
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class WasmWorkers:
    """Threads that run wasm and resolve the caller's asyncio future directly: one queue put
    and one ``call_soon_threadsafe`` per call, where ``ThreadPoolExecutor`` + ``wrap_future``
    add a concurrent Future, callback chaining and an idle-semaphore dance (~20 µs)."""

    def __init__(self, max_workers: int) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._max = max_workers
        self._threads = 0
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any],
               on_skip: Any, fn: Any, *args: Any) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("closed")
            if self._idle <= 0 and self._threads < self._max:
                self._threads += 1
                threading.Thread(target=self._work, name="trellis-wasm", daemon=True).start()
            else:
                self._idle -= 1  # an idle worker (or the next one to finish) takes it
            # Under the lock, so no item lands behind close()'s stop markers: an in-flight
            # call that no worker takes would hold its capacity (and Store) forever.
            self._queue.put((loop, fut, on_skip, fn, args))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            n = self._threads
        for _ in range(n):
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, fut, on_skip, fn, args = item
            if fut.cancelled():  # the caller gave up before we started: hand capacity back
                on_skip()
            else:
                try:
                    ok, value = True, fn(*args)
                except BaseException as exc:
                    ok, value = False, exc
                try:
                    loop.call_soon_threadsafe(_settle, fut, ok, value)
                except RuntimeError:  # that loop is closed
                    pass
            # An idle worker must not keep the last call's future, arguments or result alive
            # (a Store in there would keep its instance and host resources).
            item = loop = fut = on_skip = fn = args = ok = value = None
            with self._lock:
                self._idle += 1
