"""The wasmtime Engine Trellis runs components on, and the epoch ticker behind deadlines.

One ``Engine`` per process is the norm: compiled components are tied to the engine's
configuration (the AOT cache keys on ``EngineConfig.fingerprint()``), and one ticker thread
serves every deadline. Fuel metering doubles the cost of tight loops (measured in
reference/wasmtime-host-notes.md Q4), so it is an engine option rather than always on.

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
import math
import threading
import time
from ctypes import POINTER, c_char_p, c_size_t, c_uint8, c_uint64, c_void_p
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

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


class Engine:
    """A configured ``wasmtime.Engine`` plus the ticker that turns seconds into epochs."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        cfg = wasmtime.Config()
        cfg.epoch_interruption = True
        cfg.consume_fuel = self.config.consume_fuel
        cfg.cranelift_opt_level = self.config.opt_level
        # The component model is on by default in wasmtime 50; say so for older builds.
        cfg.wasm_component_model = True
        cfg.memory_init_cow = self.config.memory_init_cow
        self.wasmtime = wasmtime.Engine(cfg)
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

    def close(self) -> None:
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
