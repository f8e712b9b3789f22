"""The wasmtime Engine Trellis runs components on, and the epoch ticker behind deadlines.

One ``Engine`` per process is the norm: compiled components are tied to the engine's
configuration (the AOT cache keys on ``EngineConfig.fingerprint()``), and one ticker thread
serves every deadline. Fuel metering doubles the cost of tight loops (measured in
reference/wasmtime-host-notes.md Q4), so it is an engine option rather than always on.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass
from importlib.metadata import version

import wasmtime

# Deadlines are measured in epoch ticks; 5 ms keeps the overshoot small while costing
# a thread wake-up only when some call is actually running.
DEFAULT_TICK = 0.005
NO_DEADLINE_TICKS = 2**62


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
        """A call with a deadline started: keep ticking until every such call ends."""
        with self._lock:
            self._active += 1
            self._wake.set()

    def end(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self._wake.clear()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def _tick(self) -> None:
        tick = self.config.epoch_tick
        while not self._closed:
            self._wake.wait()
            if self._closed:
                return
            time.sleep(tick)
            self.wasmtime.increment_epoch()
