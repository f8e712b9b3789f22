"""The wasmtime Engine Trellis runs components on, and the epoch ticker behind deadlines.

One ``Engine`` per process is the norm: compiled components are tied to the engine's
configuration (the AOT cache keys on ``EngineConfig.fingerprint()``), and one ticker thread
serves every deadline. Fuel metering doubles the cost of tight loops (measured in
reference/wasmtime-host-notes.md Q4), so it is an engine option rather than always on.

Daemons (``trellis host``, ``up``, ``serve``) run on wasmtime's pooling allocator
(``PoolConfig``): instance slots are reserved once and reused, and a slot keeps the memory a
guest touched mapped between instances. A fresh componentize-py instance then costs no page
faults for its memory image, which was most of what a fresh-instance request cost over
``wasmtime serve`` (bench/http.py). The pool reserves address space up front (about 4 GiB
per memory slot, backed only when used), so every Runtime of a process with the same settings
shares one pooled Engine, and a pool that would not fit the address space is not made.

A Store that runs async calls gets a ``StoreDeadline``: an epoch-deadline *callback* rather
than wasmtime's plain epoch trap, so the host decides at each tick whether the running call
traps (its wall-clock deadline passed), yields (an async call, so the thread polling it gets
control back) or goes on (a sync call). One Store serves sync and async calls alike this way;
wasmtime's ``epoch_deadline_async_yield_and_update`` would make it async-only (and wasmtime-py
declares its return type wrongly, which crashes).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import mmap
import resource
import sys
import threading
import time
import weakref
from ctypes import POINTER, c_char_p, c_size_t, c_uint8, c_uint64, c_void_p
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

_LOG = logging.getLogger(__name__)
# Deadlines are measured in epoch ticks; 5 ms keeps the overshoot small while costing
# a thread wake-up only while calls run (and LINGER_TICKS after the last one).
DEFAULT_TICK = 0.005
NO_DEADLINE_TICKS = 2**62
LINGER_TICKS = 40
"""Ticks the ticker goes on after the last call ended: back-to-back calls then cost a counter
update each instead of waking the thread (and contending for the GIL) per call."""


@dataclass(frozen=True)
class EngineConfig:
    """What changes compiled code: each field is part of the AOT cache key."""

    consume_fuel: bool = False
    """Meter fuel so calls can carry a fuel budget (costs ~2x on tight loops)."""
    memory_init_cow: bool = True
    """Copy-on-write memory images: ~8x faster instantiation of big guests."""
    opt_level: str = "speed"
    """Cranelift optimisation level: ``none``, ``speed`` or ``speed_and_size``."""
    epoch_tick: float = DEFAULT_TICK
    """Seconds per epoch tick; a deadline overshoots by at most about one tick."""

    def __post_init__(self) -> None:
        if self.opt_level not in ("none", "speed", "speed_and_size"):
            raise ValueError("opt_level must be one of none, speed, speed_and_size")
        if not 0.0005 <= self.epoch_tick <= 1.0:
            raise ValueError("epoch_tick must be between 0.0005 and 1 second")

    def fingerprint(self) -> str:
        """A short digest of everything a serialized component depends on."""
        key = (
            f"wasmtime={version('wasmtime')};fuel={self.consume_fuel};"
            f"cow={self.memory_init_cow};opt={self.opt_level};epoch=1"
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]


MiB = 2**20
DEFAULT_POOL_INSTANCES = 1000
"""Component instances alive at once in a pooled process (wasmtime serve's default too)."""
DEFAULT_KEEP_RESIDENT = 16 * MiB
"""Bytes of each memory slot kept mapped between instances. A componentize-py hello touches
about 12 MiB per request: `trellis serve` measured 16, 32 and 64 MiB alike and 8 MiB much
slower, while 64 MiB kept a host streaming 50 MB through such a guest 50 MB larger."""
_SLOT_RESERVATION = 4 * 2**30 + 64 * MiB
"""Address space one memory slot reserves (4 GiB plus guard regions; measured ~4.03 GiB)."""
MAX_POOL_RESERVATION = 64 * 2**40
"""Address space all pools of one process may reserve: half of x86-64's 128 TiB. wasmtime
aborts the process (a Rust panic, not an error) when a pool's reservation fails."""
_reserved = 0  # what this process's pools reserve until collected (guarded by _SHARED_LOCK)
_SHARED: dict[tuple[EngineConfig, PoolConfig], Engine] = {}
_SHARED_LOCK = threading.Lock()
_OPEN_LOCK = threading.Lock()  # one build per key in Engine.open (the build takes _SHARED_LOCK)


@dataclass(frozen=True)
class PoolConfig:
    """wasmtime's pooling allocator for an engine (not part of the AOT cache key: it changes
    where instances live, not the compiled code).

    Per component instance the pool holds 20 core instances, 1 memory, 4 tables and 1 async
    stack (a componentize-py guest uses ~14 core instances, 1 memory, 2 tables). A component
    needing more than that per instance lowers how many fit. When every slot is held by a live
    instance, instantiating fails with ``InstancePoolFull`` (a capacity error) at once."""

    instances: int = DEFAULT_POOL_INSTANCES
    """Component instances alive at once over every Runtime sharing the pool."""
    keep_resident: int = DEFAULT_KEEP_RESIDENT
    """Bytes of each memory (and table) slot left mapped between instances: no page faults
    for what the next instance touches again, at the cost of that memory staying resident."""

    def __post_init__(self) -> None:
        if not 1 <= self.instances <= 100_000:
            raise ValueError("pool instances must be between 1 and 100000")
        if self.keep_resident < 0:
            raise ValueError("pool keep_resident must be >= 0 bytes")

    @property
    def reservation(self) -> int:
        """Address space the pool reserves up front (never backed until used)."""
        return self.instances * (_SLOT_RESERVATION + 4 * MiB)  # + an async stack each

    def apply(self, cfg: wasmtime.Config) -> None:
        n = self.instances
        p = ffi.wasmtime_pooling_allocation_config_new()
        try:
            ffi.wasmtime_pooling_allocation_config_total_component_instances_set(p, n)
            ffi.wasmtime_pooling_allocation_config_total_core_instances_set(p, 20 * n)
            ffi.wasmtime_pooling_allocation_config_total_memories_set(p, n)
            ffi.wasmtime_pooling_allocation_config_total_tables_set(p, 4 * n)
            ffi.wasmtime_pooling_allocation_config_total_stacks_set(p, n)
            keep = self.keep_resident
            ffi.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(p, keep)
            ffi.wasmtime_pooling_allocation_config_table_keep_resident_set(p, keep)
            ffi.wasmtime_pooling_allocation_strategy_set(cfg.ptr(), p)
        finally:
            ffi.wasmtime_pooling_allocation_config_delete(p)


def pool_exhausted(exc: BaseException) -> bool:
    """Whether instantiating failed because every slot of the engine's pool is taken."""
    return "maximum concurrent limit of" in str(exc)


def _release(reservation: int) -> None:
    global _reserved
    with _SHARED_LOCK:
        _reserved -= reservation


def _pool_refusal(pool: PoolConfig) -> str | None:
    """Why ``pool`` cannot be reserved in this process (None: it can); call with the lock."""
    if sys.maxsize <= 2**32:
        return "a 32-bit process has no room for it"
    need = pool.reservation
    if _reserved + need > MAX_POOL_RESERVATION:
        return (f"it would take this process's pools to {(_reserved + need) / 2**40:.1f} TiB "
                f"of address space (at most {MAX_POOL_RESERVATION / 2**40:.0f} TiB)")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and need > soft // 2:
        return (f"the address-space limit (ulimit -v, {soft / 2**30:.0f} GiB) is too small "
                f"for its {need / 2**40:.1f} TiB reservation")
    # The limit above assumes x86-64's 128 TiB; a kernel with a smaller address space (an
    # aarch64 one with 39-bit addresses has 512 GiB) says so when asked for the room up front.
    try:
        probe = mmap.mmap(-1, need + need // 4, prot=0, flags=mmap.MAP_PRIVATE
                          | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0))
    except (OSError, ValueError, OverflowError) as exc:
        return (f"the address space has no room for its {need / 2**40:.1f} TiB reservation "
                f"({exc})")
    probe.close()
    return None


class Engine:
    """A configured ``wasmtime.Engine`` plus the ticker that turns seconds into epochs."""

    def __init__(self, config: EngineConfig | None = None,
                 pool: PoolConfig | None = None) -> None:
        global _reserved
        self.config = config or EngineConfig()
        cfg = wasmtime.Config()
        cfg.epoch_interruption = True
        cfg.consume_fuel = self.config.consume_fuel
        cfg.cranelift_opt_level = self.config.opt_level
        # The component model is on by default in wasmtime 50; say so for older builds.
        cfg.wasm_component_model = True
        cfg.memory_init_cow = self.config.memory_init_cow
        if pool is not None:
            with _SHARED_LOCK:
                refusal = _pool_refusal(pool)
                if refusal is None:
                    _reserved += pool.reservation
            if refusal is not None:
                _LOG.warning("instances are allocated on demand, not pooled: %s", refusal)
                pool = None
        self.pool = pool
        """The pool this engine allocates instances from (None: on demand)."""
        try:
            if pool is not None:
                pool.apply(cfg)
            self.wasmtime = wasmtime.Engine(cfg)
        except BaseException:
            if pool is not None:
                _release(pool.reservation)
            raise
        if pool is not None:
            # wasmtime unmaps the pool only once the collector has freed this engine and every
            # Store made with it: until then the reservation still counts.
            weakref.finalize(self.wasmtime, _release, pool.reservation)
        self._users = 1
        self._active = 0
        self._ticking = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._tick, name="trellis-epoch", daemon=True)
        self._thread.start()

    def ticks_for(self, seconds: float | None) -> int:
        """Epoch ticks that cover ``seconds`` (at least one)."""
        if seconds is None:
            return NO_DEADLINE_TICKS
        return max(1, math.ceil(seconds / self.config.epoch_tick))

    def begin(self) -> None:
        """A call that needs ticks started (it has a deadline, or it is an async call that
        yields at each tick): keep ticking until every such call ends."""
        with self._lock:
            self._active += 1
            if not self._ticking:
                self._ticking = True
                self._wake.set()

    def end(self) -> None:
        with self._lock:
            self._active -= 1

    @classmethod
    def open(cls, config: EngineConfig | None = None,
             pool: PoolConfig | None = None) -> Engine:
        """The engine for a Runtime: a new one, or with ``pool`` the one this process shares
        for these settings. A pooled engine stays for the life of the process, reused by every
        later Runtime with the same settings: its pool is reserved once (address space, not
        memory), and one ticker serves all. Each ``open`` is matched by a ``close``."""
        if pool is None:
            return cls(config)
        key = (config or EngineConfig(), pool)
        with _OPEN_LOCK:
            with _SHARED_LOCK:
                engine = _SHARED.get(key)
                if engine is not None:
                    engine._users += 1
                    return engine
            engine = cls(*key)
            if engine.pool is not None:
                with _SHARED_LOCK:
                    _SHARED[key] = engine
        return engine

    def close(self) -> None:
        """Let go of the engine: the last user stops its ticker, unless the engine is the
        process's shared pooled one, which stays for the next Runtime (its ticker sleeps
        while no call runs)."""
        with _SHARED_LOCK:
            self._users -= 1
            if self._users > 0 or self._closed:
                return
            if self.pool is not None and _SHARED.get((self.config, self.pool)) is self:
                return
        self._closed = True
        self._wake.set()

    def _tick(self) -> None:
        tick = self.config.epoch_tick
        idle = 0
        while not self._closed:
            self._wake.wait()
            if self._closed:
                return
            time.sleep(tick)
            self.wasmtime.increment_epoch()
            with self._lock:
                if self._active:
                    idle = 0
                else:
                    idle += 1
                    if idle >= LINGER_TICKS:  # nothing ran for a while: sleep until begin()
                        idle = 0
                        self._ticking = False
                        self._wake.clear()


# --- per-Store deadline callback ---------------------------------------------------------------

# wasmtime_error_t *callback(wasmtime_context_t *, void *env, uint64_t *epoch_deadline_delta,
#                            wasmtime_update_deadline_kind_t *update_kind)
_DeadlineCallback = ctypes.CFUNCTYPE(c_size_t, c_void_p, c_void_p, POINTER(c_uint64),
                                     POINTER(c_uint8))
_set_deadline_callback = ffi.dll["wasmtime_store_epoch_deadline_callback"]
_set_deadline_callback.restype = None
# The finalizer is an Option<extern fn> on the Rust side: NULL means none, so no Python
# thunk has to outlive every Store (interpreter shutdown frees thunks in any order).
_set_deadline_callback.argtypes = (c_void_p, _DeadlineCallback, c_void_p, c_void_p)
_error_new = ffi.dll["wasmtime_error_new"]
_error_new.restype = c_void_p
_error_new.argtypes = (c_char_p,)
_CONTINUE, _YIELD = 0, 1  # wasmtime_update_deadline_kind_t
YIELD_AFTER = 0.0005
"""Seconds an async call runs before a tick makes it yield (the next tick does, at the latest)."""
INTERRUPT = b"wasm trap: interrupt (trellis deadline)"
"""The trap text; ``map_error`` turns ``wasm trap: interrupt`` into ``DeadlineExceeded``."""


class StoreDeadline:
    """What one Store does when its epoch deadline is reached, decided at each tick.

    ``hard`` is the running call's ``time.monotonic()`` deadline (``inf``: none); ``yielding``
    says the call was started with ``func_call_async`` and should give its thread back at
    every tick once it has run ``YIELD_AFTER`` since ``since`` (a tick landing just after a
    short call started would otherwise send it to a worker for nothing). The thread running
    the Store's call writes them."""

    __slots__ = ("hard", "yielding", "since")

    def __init__(self) -> None:
        self.hard = math.inf
        self.yielding = False
        self.since = 0.0

    def attach(self, store: wasmtime.Store) -> None:
        """Install the callback. The ctypes thunk is kept on the Store itself, so it lives
        exactly as long as the Store that may call it (and references only ``self``)."""
        thunk = _DeadlineCallback(self._on_deadline)
        _set_deadline_callback(store.ptr(), thunk, None, None)
        store._trellis_deadline = thunk  # type: ignore[attr-defined]

    def _on_deadline(self, _ctx: Any, _env: Any, delta: Any, kind: Any) -> int:
        # Never let an exception escape into wasmtime: ctypes would print it and return 0.
        try:
            now = time.monotonic()
            if now >= self.hard:
                return _error_new(INTERRUPT) or 0
            delta[0] = 1
            yield_now = self.yielding and now - self.since >= YIELD_AFTER
            kind[0] = _YIELD if yield_now else _CONTINUE
            return 0
        except BaseException:
            return _error_new(b"trellis epoch-deadline callback failed") or 0
