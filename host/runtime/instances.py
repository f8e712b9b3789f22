"""Instances of one compiled component: creation, pooling, limits and error mapping.

Rules that come from wasmtime's behaviour (wasmtime-host-notes Q4):

- A trap poisons the whole ``Store``, so every instance gets its own Store and a Store that
  saw any error is dropped, never reused.
- Limits are per Store: a memory cap is fixed when the Store is made (so pooled instances are
  matched by cap), the epoch deadline and the fuel budget are reset before every call.
- ``fresh`` (the default) makes a Store + instance per invocation — isolation, as in Spin and
  wasmCloud; ``pooled`` keeps warm instances for stateless hot paths.

``max_instances`` bounds live instances; callers wait for a free one until their deadline.
The waiting works from threads and from asyncio alike (``Capacity``).

Async invocations on a warm pooled instance start inline on the event-loop thread
(``start_inline``, see ``asynccall.py``); the rest run here on worker threads (``run_acquired``).
A Store gets its epoch callback (``StoreDeadline``) before its first async call; from then on
sync calls on it set the callback's wall-clock deadline, async calls also make it yield at each
tick. Stores that only ever see sync calls keep wasmtime's plain epoch trap: installing the
callback costs ~2 µs, a tenth of a tiny fresh-mode instantiation.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import wasmtime
from wasmtime import WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime import component as wc

from ...lattice.errors import (
    ArgumentError,
    CapacityTimeout,
    DeadlineExceeded,
    GuestTrap,
    InstancePoolFull,
    InvocationError,
    ResourceLimitExceeded,
    WitValueError,
)
from ...lattice.wit.types import ResultType, type_label
from ...lattice.wit.values import Ok, Resource
from . import bridged
from .asynccall import NOT_INLINE, FuncHistory, InflightCall, budget_left, charge
from .convert import AsyncCall, FastFunc
from .engine import NO_DEADLINE_TICKS, Engine, StoreDeadline, pool_exhausted
from .hostcalls import HostLoop
from .hostresources import TABLE, context_address
from .imports import HostImportFailed, HostImports, build_linker, take_host_exception
from .loader import CompiledComponent, ExportedFunction

Output = Callable[[bytes], None]
Offload = Callable[..., Awaitable[Any]]
"""Runs ``fn(*args)`` on a worker thread and awaits it (``Component._offload``)."""
DEFAULT_FUEL = 2**62

# Store.set_epoch_deadline without wasmtime-py's wrapper layers (a new function object, so
# wasmtime-py's own prototype keeps its argtypes).
_set_epoch_deadline = ffi.dll["wasmtime_context_set_epoch_deadline"]
_set_epoch_deadline.restype = None
_set_epoch_deadline.argtypes = (ctypes.c_void_p, ctypes.c_uint64)


@dataclass(frozen=True)
class Limits:
    """Per-invocation limits. ``None`` means unlimited (or: use the component default)."""

    timeout: float | None = None
    """Wall-clock seconds; enforced by epoch interruption, the instance is then discarded."""
    fuel: int | None = None
    """Fuel budget (needs an engine with ``consume_fuel``)."""
    max_memory: int | None = None
    """Linear memory cap in bytes for the instance's Store."""

    def __post_init__(self) -> None:
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        if self.fuel is not None and self.fuel < 0:
            raise ValueError("fuel must be >= 0")
        if self.max_memory is not None and self.max_memory < 65536:
            raise ValueError("max_memory must be at least one 64 KiB page")

    def merged(self, defaults: Limits) -> Limits:
        return Limits(
            self.timeout if self.timeout is not None else defaults.timeout,
            self.fuel if self.fuel is not None else defaults.fuel,
            self.max_memory if self.max_memory is not None else defaults.max_memory,
        )


@dataclass(frozen=True)
class WasiOptions:
    """What a component sees of WASI: arguments, environment, directories, stdio."""

    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    preopens: tuple[tuple[str, str], ...] = ()
    """(host directory, guest path) pairs."""
    stdout: Output | str = "discard"
    """``"inherit"``, ``"discard"`` or a callable receiving each chunk the guest writes."""
    stderr: Output | str = "discard"

    def build(self) -> wasmtime.WasiConfig:
        cfg = wasmtime.WasiConfig()
        # argv, env and the *_custom hooks are write-only properties in wasmtime-py.
        if self.args:
            cfg.argv = list(self.args)
        if self.env:
            cfg.env = [list(p) for p in self.env]
        for host_dir, guest in self.preopens:
            cfg.preopen_dir(host_dir, guest)
        if self.stdout == "inherit":
            cfg.inherit_stdout()
        elif callable(self.stdout):
            cfg.stdout_custom = self.stdout
        if self.stderr == "inherit":
            cfg.inherit_stderr()
        elif callable(self.stderr):
            cfg.stderr_custom = self.stderr
        return cfg


@dataclass(frozen=True)
class InstancePolicy:
    mode: str = "fresh"
    """``fresh``: a new instance per invocation (default); ``pooled``: reuse warm instances."""
    max_instances: int = 16
    """Live instances at most; further callers wait until their deadline."""
    max_idle: int | None = None
    """Warm instances kept in ``pooled`` mode (default: ``max_instances``)."""
    inline: bool = True
    """Pooled calls may start on the event-loop thread (``start_inline``). ``False`` for
    components whose sync host imports block until the loop delivers data (wasi:http bodies):
    on the loop thread that would deadlock."""

    def __post_init__(self) -> None:
        if self.mode not in ("fresh", "pooled"):
            raise ValueError("instance mode must be 'fresh' or 'pooled'")
        if self.max_instances < 1:
            raise ValueError("max_instances must be >= 1")


class Capacity:
    """A counting semaphore that threads and asyncio tasks can both wait on, with deadlines."""

    def __init__(self, n: int) -> None:
        self.size = n
        self._free = n
        self._lock = threading.Lock()
        self._waiters: collections.deque[Any] = collections.deque()

    @property
    def in_use(self) -> int:
        return self.size - self._free

    def try_acquire(self) -> bool:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            return False

    def acquire(self, timeout: float | None) -> bool:
        if self.try_acquire():
            return True
        ev = threading.Event()
        entry = [ev, False]  # [event, granted]
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            self._waiters.append(entry)
        if ev.wait(timeout):
            return True
        with self._lock:
            if entry[1]:
                return True
            self._waiters.remove(entry)
            return False

    async def acquire_async(self, timeout: float | None) -> bool:
        if self.try_acquire():
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            self._waiters.append((loop, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except (TimeoutError, asyncio.CancelledError) as exc:
            with self._lock:
                # _grant runs on this loop's thread, so "done" cannot change under us.
                granted = fut.done() and not fut.cancelled()
                if not granted:
                    fut.cancel()
                    try:
                        self._waiters.remove((loop, fut))
                    except ValueError:
                        pass  # popped by release(): its _grant sees the cancel, passes it on
            if isinstance(exc, asyncio.CancelledError):
                if granted:  # the unit reached us just as we were cancelled: hand it back
                    self.release()
                raise
            return granted  # a timeout racing the grant still got the unit

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                w = self._waiters.popleft()
                if isinstance(w, list):
                    w[1] = True
                    w[0].set()
                    return
                loop, fut = w
                if not fut.cancelled():
                    try:
                        loop.call_soon_threadsafe(self._grant, fut)
                        return
                    except RuntimeError:  # that loop is closed
                        continue
            self._free += 1

    def _grant(self, fut: asyncio.Future[None]) -> None:
        if fut.done():
            self.release()  # the waiter gave up in the meantime: pass the slot on
        else:
            fut.set_result(None)


class Slot:
    """One Store with one live instance, and the functions bound on it."""

    __slots__ = ("store", "instance", "funcs", "memory_cap", "broken", "uses", "ticks",
                 "deadline")

    def __init__(self, store: wasmtime.Store, instance: wc.Instance, memory_cap: int | None,
                 ticks: int, deadline: StoreDeadline | None = None) -> None:
        self.store = store
        self.instance = instance
        self.funcs: dict[str, FastFunc] = {}
        self.memory_cap = memory_cap
        self.broken = False
        self.uses = 0
        self.ticks = ticks
        """The epoch deadline last set, in ticks from then (``NO_DEADLINE_TICKS``: none)."""
        self.deadline = deadline
        """The Store's epoch callback, once an async call needed it (see ``armed``)."""

    def armed(self) -> StoreDeadline:
        """The Store's epoch callback, installed on first use."""
        deadline = self.deadline
        if deadline is None:
            deadline = self.deadline = StoreDeadline()
            deadline.attach(self.store)
        return deadline

    def func(self, fn: ExportedFunction) -> FastFunc:
        ff = self.funcs.get(fn.key)
        if ff is None:
            idx = fn.path[-1]
            raw = self.instance.get_func(self.store, idx)
            if raw is None:
                raise InvocationError("component", fn.key, "export is not a function")
            ff = self.funcs[fn.key] = FastFunc(raw, fn.type, owner=self)
        return ff


class SpareSlots:
    """Fresh instances made ahead of demand, on a thread of their own.

    Each is used by exactly one invocation and then dropped, like one made on demand: only
    its instantiation (~1.5 ms for a componentize-py guest, native code with the GIL
    released) leaves the request's critical path and runs on another core meanwhile. Made
    with the component's default limits; a call with another memory cap makes its own. The
    thread holds the manager weakly; ``close`` (or the manager's end) drops the spares.
    """

    def __init__(self, manager: InstanceManager, target: int) -> None:
        self.target = target
        self.limits = manager._default_limits
        self._slots: collections.deque[Slot] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        ref = weakref.ref(manager)
        weakref.finalize(manager, self.close)
        threading.Thread(target=self._fill, args=(ref,), name="trellis-spares",
                         daemon=True).start()

    def take(self, memory_cap: int | None) -> Slot | None:
        if memory_cap != self.limits.max_memory:
            return None
        try:
            slot = self._slots.popleft()
        except IndexError:
            slot = None
        if not self._slots:  # none left for the next call: make one now
            self.refill()
        return slot

    def refill(self) -> None:
        """Make up for the spares taken. Called when a call *ended* (``_give_back``) while
        some are left, so the instantiation's mmaps do not contend with a guest's page
        faults in the same process."""
        if len(self._slots) < self.target:
            with self._cond:
                self._cond.notify_all()

    def wait_filled(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: self._closed or len(self._slots) >= self.target, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._slots.clear()
            self._cond.notify_all()

    def _fill(self, ref: Callable[[], InstanceManager | None]) -> None:
        backoff = 0.5
        while True:
            with self._cond:
                while not self._closed and len(self._slots) >= self.target:
                    self._cond.wait()
                if self._closed:
                    return
            manager = ref()
            if manager is None:
                return
            try:
                slot = manager._new_slot(self.limits)
            except InstancePoolFull:
                # The pool is shared: leave freed slots to calls for a while (longer each time
                # it is still full), rather than take them for instances nobody asked for yet.
                manager = None  # not held while waiting
                backoff = min(backoff * 2, 30.0)
                with self._cond:
                    self._cond.wait_for(lambda: self._closed, backoff)
                continue
            except Exception:  # the call that needs one makes it itself and reports why
                self.close()
                return
            finally:
                manager = None
            backoff = 0.5
            with self._cond:
                if self._closed:
                    return
                self._slots.append(slot)
                self._cond.notify_all()
            slot = None


@dataclass
class InstanceStats:
    created: int = 0
    reused: int = 0
    discarded: int = 0
    active: int = 0
    idle: int = 0
    calls: int = 0
    errors: int = 0
    inline: int = 0
    """Async invocations that finished in their first poll on the event-loop thread."""
    migrated: int = 0
    """Async invocations started inline and handed, suspended, to a worker thread."""


@dataclass
class InstanceManager:
    """Owns every instance of one component on this host."""

    engine: Engine
    component: CompiledComponent
    imports: HostImports = field(default_factory=HostImports)
    policy: InstancePolicy = field(default_factory=InstancePolicy)
    wasi: WasiOptions = field(default_factory=WasiOptions)
    defaults: Limits = field(default_factory=Limits)
    missing_imports: str = "error"
    host_loop: HostLoop | None = None
    """Runs async host imports (providers); default: the running loop, else a private one."""

    def __post_init__(self) -> None:
        self.linker, self._callbacks, self.unsatisfied = build_linker(
            self.engine.wasmtime, self.component, self.imports, missing=self.missing_imports,
            loop=self.host_loop,
        )
        self.bridged = any(cb.is_async for cb in self._callbacks)
        """Some import is an async host function: instantiate and call through ``bridged``."""
        self.capacity = Capacity(self.policy.max_instances)
        self._default_limits = Limits().merged(self.defaults)
        self._idle: list[Slot] = []
        self._idle_lock = threading.Lock()
        self._uses_wasi = any(i.name.startswith("wasi:") for i in self.component.world.imports)
        self._history: dict[str, FuncHistory] = {}
        self.stats = InstanceStats()
        self._spares: SpareSlots | None = None
        self._retired = False
        if self.defaults.fuel is not None and not self.engine.config.consume_fuel:
            raise ValueError("a fuel limit needs an engine created with consume_fuel=True")

    # -- slots -----------------------------------------------------------------------------

    def _new_slot(self, limits: Limits) -> Slot:
        store = wasmtime.Store(self.engine.wasmtime)
        ctx = context_address(store._context())
        # Host resources die with their Store (unless a new Store took its address first).
        weakref.finalize(store, TABLE.forget_claimed, ctx, TABLE.claim(ctx))
        if self._uses_wasi:
            store.set_wasi(self.wasi.build())
        if limits.max_memory is not None:
            store.set_limits(memory_size=limits.max_memory)
        ticks = self.engine.ticks_for(limits.timeout)
        store.set_epoch_deadline(ticks)
        if self.engine.config.consume_fuel:
            store.set_fuel(limits.fuel if limits.fuel is not None else DEFAULT_FUEL)
        try:
            if self.bridged:
                instance = bridged.instantiate(self.linker, store, self.component.wasmtime)
            else:
                instance = self.linker.instantiate(store, self.component.wasmtime)
        except Exception as exc:
            if pool_exhausted(exc):
                raise InstancePoolFull(self.component.name, "(instantiate)", str(exc)) from None
            raise
        self.stats.created += 1
        return Slot(store, instance, limits.max_memory, ticks)

    def _take(self, limits: Limits) -> Slot:
        if self.policy.mode == "pooled" and self._idle:
            slot = self._take_idle(limits.max_memory)
            if slot is not None:
                return slot
        spares = self._spares
        if spares is not None:
            slot = spares.take(limits.max_memory)
            if slot is not None:
                return slot
        return self._new_slot(limits)

    def prepare(self, n: int, wait: float = 0.0) -> None:
        """Keep up to ``n`` never-used instances made ahead of demand (``SpareSlots``); 0
        stops and drops them. Blocks up to ``wait`` seconds until the first ``n`` are made."""
        if self._spares is not None:
            self._spares.close()
            self._spares = None
        if n > 0:
            self._spares = SpareSlots(self, n)
            if wait > 0:
                self._spares.wait_filled(wait)

    def _take_idle(self, memory_cap: int | None) -> Slot | None:
        with self._idle_lock:
            for i in range(len(self._idle) - 1, -1, -1):
                if self._idle[i].memory_cap == memory_cap:
                    self.stats.reused += 1
                    return self._idle.pop(i)
        return None

    def retire(self) -> None:
        """Nothing new will call this manager (its component was stopped or replaced): drop
        its spare and idle instances now, and each running call's when it ends, so that their
        slots go back to a pool other components share."""
        self._retired = True
        self.prepare(0)
        self.clear()

    def _give_back(self, slot: Slot) -> None:
        if self._retired:
            self.stats.discarded += 1
            return
        if slot.broken or self.policy.mode != "pooled":
            if slot.broken:
                self.stats.discarded += 1
            if self._spares is not None:
                self._spares.refill()
            return
        keep = self.policy.max_idle
        if keep is None:
            keep = self.policy.max_instances
        for hook in TABLE.on_idle:
            hook(context_address(slot.store._context()))
        with self._idle_lock:
            if len(self._idle) < keep:
                self._idle.append(slot)
                return
        self.stats.discarded += 1

    def idle_count(self) -> int:
        return len(self._idle)

    def clear(self) -> None:
        with self._idle_lock:
            self._idle.clear()

    # -- calls -------------------------------------------------------------------------------

    def check_args(self, fn: ExportedFunction, args: Sequence[Any]) -> None:
        params = fn.type.params
        if len(args) != len(params):
            names = ", ".join(f"{n}: {type_label(t)}" for n, t in params)
            raise ArgumentError(
                f"{fn.key} takes {len(params)} argument(s) ({names}), got {len(args)}"
            )

    def call(self, fn: ExportedFunction, args: Sequence[Any], limits: Limits | None = None,
             *, wait: float | None = None) -> Any:
        """Run one invocation on this thread (blocking). Waits for capacity up to ``wait``."""
        # Limits are frozen dataclasses (~1 µs each to build): reuse the merged defaults.
        lim = self._default_limits if limits is None else limits.merged(self.defaults)
        self.check_args(fn, args)
        if not self.capacity.try_acquire():  # the clock is only read when we have to wait
            started = time.monotonic()
            if not self.capacity.acquire(wait if wait is not None else lim.timeout):
                raise CapacityTimeout(self.component.name, fn.key, self.policy.max_instances,
                                      time.monotonic() - started)
        try:
            return self.run_acquired(fn, args, lim)
        finally:
            self.capacity.release()

    def run_acquired(self, fn: ExportedFunction, args: Sequence[Any], lim: Limits,
                     slot: Slot | None = None) -> Any:
        """The hot path, once capacity is held: take an instance, call, map errors."""
        engine = self.engine
        timed = lim.timeout is not None
        if timed:
            engine.begin()
        own_slot = slot is None
        self.stats.active += 1
        self.stats.calls += 1
        try:
            if slot is None:
                slot = self._take(lim)
            store = slot.store
            # An untimed call after an untimed call keeps its "never" deadline: the epoch only
            # advances while timed calls run, so 2**62 ticks stay out of reach.
            if timed or slot.ticks != NO_DEADLINE_TICKS:
                slot.ticks = engine.ticks_for(lim.timeout)
                store.set_epoch_deadline(slot.ticks)
                if timed and slot.deadline is not None:  # its callback traps after this
                    slot.deadline.hard = time.monotonic() + lim.timeout  # type: ignore[operator]
            if engine.config.consume_fuel:
                store.set_fuel(lim.fuel if lim.fuel is not None else DEFAULT_FUEL)
            slot.uses += 1
            if self.bridged:
                return self._call_blocking(slot, fn, args, lim)
            return slot.func(fn).call(slot.store, args)
        except wasmtime.ExitTrap as exc:
            if slot is not None:
                slot.broken = True
            if exc.code == 0:  # exit(ok): the guest finished successfully
                return Ok(None) if isinstance(fn.type.result, ResultType) else None
            self.stats.errors += 1
            raise GuestExit(self.component.name, fn.key, exc.code) from exc
        except WasmtimeError as exc:
            if slot is not None:
                slot.broken = True
            self.stats.errors += 1
            mapped = self.map_error(exc, fn, lim)
            raise mapped from (mapped.__cause__ or exc)
        except WitValueError as exc:
            self.stats.errors += 1
            raise ArgumentError(f"{fn.key}: {exc}") from exc
        finally:
            self.stats.active -= 1
            if timed:
                engine.end()
            if own_slot and slot is not None:
                self._give_back(slot)

    # -- async calls (event-loop thread first) -------------------------------------------------

    def quick(self, fn: ExportedFunction) -> bool:
        """Whether ``fn``'s recent inline calls (if any: a function not yet called is taken
        for quick, as ``start_inline`` takes it) all finished in their first poll, and a warm
        instance is idle to run the next one inline."""
        history = self._history.get(fn.key)
        return ((history is None or history.backoff == 0) and bool(self._idle)
                and self.policy.inline)

    def start_inline(self, fn: ExportedFunction, args: Sequence[Any], lim: Limits,
                     deadline: float | None, *, turn: bool = False) -> Any:
        """Try to run an async invocation here, on the event-loop thread.

        Only when it can start at once: pooled mode, a warm instance idle, capacity free
        without waiting, this function's recent calls quick and the loop's inline budget not
        spent. Returns ``NOT_INLINE`` (nothing held: run it the usual way), the result
        (errors raised as ``run_acquired`` raises them), or an ``InflightCall`` to hand to a
        worker when the first poll did not finish it (it holds the slot and the capacity)."""
        if not self._idle or not budget_left(turn) or not self.policy.inline:
            return NOT_INLINE
        history = self._history.get(fn.key)
        if history is None:
            history = self._history[fn.key] = FuncHistory()
        elif not history.allow():
            return NOT_INLINE
        now = time.monotonic()
        if deadline is None:
            deadline = math.inf if lim.timeout is None else now + lim.timeout
        elif deadline <= now:
            return NOT_INLINE  # the usual path reports it
        if not self.capacity.try_acquire():
            return NOT_INLINE
        slot = self._take_idle(lim.max_memory)
        if slot is None:
            self.capacity.release()
            return NOT_INLINE
        started = time.perf_counter()
        call = self._begin_async(slot, fn, args, lim, deadline, now)
        try:
            done = call.poll()
        except BaseException:  # only a signal can land here; nothing may keep the future
            InflightCall(self, slot, call, fn, lim).abandon()
            raise
        try:
            if done:
                self.stats.inline += 1
                try:
                    return call.result()
                except BaseException as exc:
                    slot.broken = True
                    return self._failed(exc, fn, lim)  # on this thread: host exceptions
        finally:
            if done:
                call.close()
                self._end_async(slot)
            spent = time.perf_counter() - started
            charge(spent)
            # An inline call that held the loop for a tick (a blocking import, say) counts as
            # a miss too; shorter outliers are left alone (an OS preemption is no signal).
            history.record(done and spent < self.engine.config.epoch_tick)
        self.stats.migrated += 1
        return InflightCall(self, slot, call, fn, lim)

    def _begin_async(self, slot: Slot, fn: ExportedFunction, args: Sequence[Any], lim: Limits,
                     deadline: float, now: float) -> AsyncCall:
        """Arm the slot for an async call and start it; on failure everything is released."""
        engine = self.engine
        engine.begin()  # async calls need ticks to yield, deadline or not
        self.stats.active += 1
        self.stats.calls += 1
        slot.uses += 1
        try:
            store = slot.store
            policy = slot.armed()
            policy.hard = deadline
            policy.since = now
            policy.yielding = True
            slot.ticks = 1  # the next untimed sync call must reset it to "never"
            _set_epoch_deadline(store._context(), 1)  # a fresh Store's 0 would yield at once
            if engine.config.consume_fuel:
                store.set_fuel(lim.fuel if lim.fuel is not None else DEFAULT_FUEL)
            return slot.func(fn).call_async(store, args)
        except BaseException as exc:
            self._end_async(slot)
            if isinstance(exc, WitValueError):
                self.stats.errors += 1
                raise ArgumentError(f"{fn.key}: {exc}") from exc
            raise

    def _end_async(self, slot: Slot) -> None:
        """After the future is deleted: disarm the slot, give it and the capacity back."""
        policy = slot.deadline
        if policy is not None:
            policy.yielding = False
            policy.hard = math.inf
        self.engine.end()
        self.stats.active -= 1
        self._give_back(slot)
        self.capacity.release()

    def _failed(self, exc: BaseException, fn: ExportedFunction, lim: Limits) -> Any:
        """Raise what ``run_acquired`` raises for a failed call (``exit(0)`` is a result)."""
        if isinstance(exc, wasmtime.ExitTrap):
            if exc.code == 0:
                return Ok(None) if isinstance(fn.type.result, ResultType) else None
            self.stats.errors += 1
            raise GuestExit(self.component.name, fn.key, exc.code) from exc
        self.stats.errors += 1
        if isinstance(exc, WasmtimeError):
            mapped = self.map_error(exc, fn, lim)
            raise mapped from (mapped.__cause__ or exc)
        raise exc

    # -- bridged calls (components with async host imports, see bridged.py) ------------------

    def _trap_soon(self, slot: Slot) -> Callable[[], None]:
        """Make the Store trap at its next epoch check (a void async import failed)."""
        policy, ctx = slot.armed(), slot.store._context()

        def trap() -> None:
            policy.hard = 0.0
            _set_epoch_deadline(ctx, 0)
        return trap

    def _timeout(self, fn: ExportedFunction, lim: Limits,
                 seconds: float | None = None) -> Callable[[], BaseException]:
        span = seconds if seconds is not None else (lim.timeout or 0.0)
        return lambda: DeadlineExceeded(self.component.name, fn.key, round(span, 3))

    def _host_failure(self, failure: BaseException, fn: ExportedFunction) -> BaseException:
        self.stats.errors += 1
        if isinstance(failure, HostImportFailed):
            cause = failure.cause
            # Typed failures of the import itself (no link, deadline, a remote target's
            # error) reach the caller as they are; anything else is a trap it caused.
            if isinstance(cause, (InvocationError, asyncio.CancelledError)):
                return cause
            err = GuestTrap(self.component.name, fn.key, str(failure))
            err.__cause__ = cause
            return err
        return failure

    def _call_blocking(self, slot: Slot, fn: ExportedFunction, args: Sequence[Any],
                       lim: Limits) -> Any:
        """``run_acquired``'s call for a bridged component, on this (non-loop) thread."""
        policy = slot.armed()
        now = time.monotonic()
        hard = math.inf if lim.timeout is None else now + lim.timeout
        policy.hard, policy.since, policy.yielding = hard, now, False
        call = slot.func(fn).call_async(slot.store, args)
        try:
            failure = bridged.drive_blocking(call.poll, hard, trap_soon=self._trap_soon(slot),
                                             on_timeout=self._timeout(fn, lim))
            if failure is not None:
                slot.broken = True
                raise self._host_failure(failure, fn)
            return call.result()
        finally:
            call.close()
            policy.hard = math.inf

    async def invoke_bridged(self, fn: ExportedFunction, args: Sequence[Any], lim: Limits,
                             deadline: float | None, offload: Offload) -> Any:
        """An async invocation of a bridged component: polled on the loop while it waits for
        providers; on a worker (``offload``) once it computes past an epoch tick."""
        started = time.monotonic()
        if deadline is None:
            deadline = math.inf if lim.timeout is None else started + lim.timeout
        left = None if deadline == math.inf else max(0.0, deadline - started)
        if not await self.capacity.acquire_async(left):
            raise CapacityTimeout(self.component.name, fn.key, self.policy.max_instances,
                                  time.monotonic() - started)
        if not self.policy.inline:
            # Its sync imports block until the loop delivers (wasi:http bodies): polled on the
            # loop it would wait for itself. The whole call runs on a worker; provider
            # coroutines are handed to the loop from there.
            now = time.monotonic()
            whole = Limits(None if deadline == math.inf else max(0.001, deadline - now),
                           lim.fuel, lim.max_memory)

            def run() -> Any:
                try:
                    return self.run_acquired(fn, args, whole)
                finally:
                    self.capacity.release()
            return await offload(run, on_skip=self.capacity.release)
        try:
            slot = self._take_idle(lim.max_memory) if self.policy.mode == "pooled" else None
            if slot is None:
                slot = await offload(self._new_slot, lim)
        except BaseException:
            self.capacity.release()
            raise
        call = self._begin_async(slot, fn, args, lim, deadline, time.monotonic())
        trap_soon = self._trap_soon(slot)
        on_timeout = self._timeout(fn, lim, None if deadline == math.inf else deadline - started)
        try:
            done, failure = await bridged.drive_async(call.poll, deadline, trap_soon=trap_soon,
                                                      on_timeout=on_timeout)
        except BaseException:
            slot.broken = True
            call.close()
            self._end_async(slot)
            raise
        if done:
            return self._complete(slot, call, fn, lim, failure)
        slot.armed().yielding = False  # on a worker now: compute until done or a wait

        def rest() -> Any:
            more = bridged.drive_blocking(call.poll, deadline, trap_soon=trap_soon,
                                          on_timeout=on_timeout)
            return self._complete(slot, call, fn, lim, failure or more)

        return await offload(rest)

    def _complete(self, slot: Slot, call: AsyncCall, fn: ExportedFunction, lim: Limits,
                  failure: BaseException | None) -> Any:
        try:
            if failure is not None:
                slot.broken = True
                raise self._host_failure(failure, fn)
            try:
                return call.result()
            except BaseException as exc:
                slot.broken = True
                return self._failed(exc, fn, lim)
        finally:
            call.close()
            self._end_async(slot)

    def map_error(self, exc: WasmtimeError, fn: ExportedFunction, lim: Limits) -> Exception:
        name = self.component.name
        text = str(exc)
        host_exc = take_host_exception()
        lowered = text.lower()
        if "wasm trap: interrupt" in lowered:
            return DeadlineExceeded(name, fn.key, lim.timeout or 0.0)
        if "all fuel consumed" in lowered:
            return ResourceLimitExceeded(name, fn.key, "fuel", f"budget of {lim.fuel} exhausted")
        if lim.max_memory is not None and _looks_like_oom(lowered):
            cap = lim.max_memory / 2**20
            return ResourceLimitExceeded(
                name, fn.key, "memory",
                f"cap of {cap:g} MiB reached (memory.grow was refused, then: {_trap_reason(text)})",
            )
        err = GuestTrap(name, fn.key, _trap_reason(text), backtrace=_backtrace(text))
        if host_exc is not None:
            err.__cause__ = host_exc
        return err

    # -- sessions (resources live inside one instance) ----------------------------------------

    def session(self, limits: Limits | None = None) -> Session:
        return Session(self, (limits or Limits()).merged(self.defaults))


class GuestExit(InvocationError):
    """The guest called ``exit(code)`` (``wasi:cli/exit``); ``code`` is kept for the CLI."""

    def __init__(self, component: str, function: str, code: int) -> None:
        self.code = code
        super().__init__(component, function, f"exited with code {code}")


class Session:
    """Several calls on one pinned instance, so resources returned by one call can be passed
    to the next. Holds one unit of capacity until closed.
    """

    def __init__(self, manager: InstanceManager, limits: Limits) -> None:
        self.manager = manager
        self.limits = limits
        self._slot: Slot | None = None

    def __enter__(self) -> Session:
        m = self.manager
        if not m.capacity.acquire(self.limits.timeout):
            raise CapacityTimeout(m.component.name, "session", m.policy.max_instances,
                                  self.limits.timeout or 0.0)
        try:
            self._slot = m._new_slot(self.limits)
        except BaseException:
            m.capacity.release()
            raise
        return self

    def call(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        if self._slot is None:
            raise RuntimeError("session is not open (use it as a context manager)")
        if self._slot.broken:
            raise InvocationError(self.manager.component.name, name,
                                  "this session's instance trapped earlier and was discarded")
        fn = self.manager.component.resolve(name)
        self.manager.check_args(fn, args)
        for a in args:
            if isinstance(a, Resource) and a.owner is not self._slot:
                raise ArgumentError(f"{a!r} belongs to another instance; resources cannot cross")
        lim = Limits(timeout, self.limits.fuel, self.limits.max_memory).merged(self.limits)
        return self.manager.run_acquired(fn, args, lim, slot=self._slot)

    def __exit__(self, *exc: object) -> None:
        self._slot = None
        self.manager.capacity.release()


def _trap_reason(text: str) -> str:
    """The most specific line of a wasmtime error: the last 'Caused by' entry if any."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Caused by:" in lines:
        tail = lines[lines.index("Caused by:") + 1:]
        if tail:
            return tail[-1].lstrip("0123456789: ")
    return lines[0] if lines else "trap"


def _backtrace(text: str) -> str:
    lines = text.splitlines()
    frames = [ln for ln in lines if ln.strip()[:1].isdigit() and ":" in ln]
    return "\n".join(frames)


def _looks_like_oom(lowered: str) -> bool:
    return any(k in lowered for k in (
        "unreachable", "memory", "out of memory", "allocation", "borrow handles still remain",
    ))
