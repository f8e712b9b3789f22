"""wasi:io (error, poll, streams) in Python, and the WASI interfaces that mention its resources.

Why Python: wasmtime's native WASI cannot hand a Python-made request to a guest, and native
interfaces that mention ``input-stream``/``output-stream``/``pollable`` are type-checked against
the guest's imports, so every such interface is shadowed here as a whole (wasmtime-host-notes
Q1): streams/poll/error, ``wasi:clocks/monotonic-clock``, ``wasi:cli`` stdin/stdout/stderr,
``wasi:filesystem`` and ``wasi:sockets`` (the last two as "not available" traps — a proxy
component has no business there; CPython's runtime imports them but never calls them).

All functions are synchronous: the ~2 µs fast path. Blocking ones (``blocking-read``,
``pollable.block``…) block the guest's worker thread (see ``pipe.py``), never the loop.

wasmtime 50 limitation: a host function receiving two or more ``borrow`` handles in one call
traps ("deferred host scope has no call context"). That hits ``poll`` with two or more
pollables and ``output-stream.splice``; guests using plain blocking reads/writes (or polling
one pollable at a time) are unaffected.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from wasmtime import WasmtimeError

from ...lattice.wit.values import Case, Err, Ok
from .pipe import Exchange, Pipe, PipeClosed, RequestDeadline

Sink = Callable[[bytes], None]
STREAM_PERMIT = 1 << 20
"""``check-write`` permit of streams with no buffer of their own (stdout, stderr)."""
_CLOSED = Err(Case("closed"))

_local = threading.local()


def current_exchange() -> Exchange | None:
    """The exchange the guest on this thread serves (set as it touches its request)."""
    ex: Exchange | None = getattr(_local, "exchange", None)
    return ex


def enter_exchange(ex: Exchange | None) -> None:
    _local.exchange = ex


# --- wasi:io/error ----------------------------------------------------------------------------

class Error:
    """``wasi:io/error.error``: an opaque error with a debug string."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        self.message = message
        self.cause = cause

    def to_debug_string(self) -> str:
        return self.message


def _failed(exc: BaseException) -> Err:
    return Err(Case("last-operation-failed", Error(str(exc) or type(exc).__name__, exc)))


class IoError:
    """``wasi:io/error``."""

    Error = Error


# --- wasi:io/poll -----------------------------------------------------------------------------

class Pollable:
    """``wasi:io/poll.pollable``: readiness plus a way to wait for it (on a worker thread)."""

    def __init__(self, is_ready: Callable[[], bool], wait: Callable[[], None]) -> None:
        self._is_ready = is_ready
        self._wait = wait

    def ready(self) -> bool:
        return self._is_ready()

    def block(self) -> None:
        if not self._is_ready():
            self._wait()


def ready_pollable() -> Pollable:
    return Pollable(lambda: True, lambda: None)


def pipe_pollable(pipe: Pipe, readiness: Callable[[], bool]) -> Pollable:
    def wait() -> None:
        try:
            pipe.wait_sync(readiness)
        except PipeClosed:
            pass  # ready in the sense that the next operation reports the closed stream
    return Pollable(readiness, wait)


def clock_pollable(when_ns: int) -> Pollable:
    def ready() -> bool:
        return time.monotonic_ns() >= when_ns

    def wait() -> None:
        while True:
            left = (when_ns - time.monotonic_ns()) / 1e9
            if left <= 0:
                return
            ex = current_exchange()
            if ex is not None:
                rem = ex.remaining()
                if rem is not None and rem <= 0:
                    raise RequestDeadline("the request's deadline passed while the guest slept")
                if ex.aborted is not None:
                    raise PipeClosed(str(ex.aborted))
            time.sleep(min(left, 0.05))
    return Pollable(ready, wait)


def event_pollable(event: threading.Event, exchange: Exchange | None = None) -> Pollable:
    """Ready once ``event`` is set (by the loop, say); waits give up at the deadline of
    ``exchange`` (else of the exchange the guest serves) or when it is aborted."""
    def wait() -> None:
        while not event.is_set():
            ex = exchange or current_exchange()
            left = ex.remaining() if ex is not None else None
            if ex is not None and left is not None and left <= 0:
                raise RequestDeadline("the request's deadline passed while the guest waited")
            if ex is not None and ex.aborted is not None:
                raise PipeClosed(str(ex.aborted))
            event.wait(0.25 if left is None else min(left, 0.25))
    return Pollable(event.is_set, wait)


class Poll:
    """``wasi:io/poll``."""

    Pollable = Pollable

    @staticmethod
    def poll(pollables: list[Pollable]) -> list[int]:
        if not pollables:
            raise WasmtimeError("wasi:io/poll#poll: the list of pollables must not be empty")
        while True:
            ready = [i for i, p in enumerate(pollables) if p.ready()]
            if ready:
                return ready
            if len(pollables) == 1:
                pollables[0].block()
            else:  # several sources: no common condition to wait on, so re-check soon
                time.sleep(0.001)


# --- wasi:io/streams --------------------------------------------------------------------------

class InputStream:
    """``input-stream`` over a ``Pipe`` (a request body, stdin)."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def read(self, n: int) -> Ok | Err:
        pipe = self.pipe
        data = pipe.take(n) if n else b""
        if data:
            return Ok(data)
        if pipe.error is not None:
            return _failed(pipe.error)
        if pipe.eof:
            return _CLOSED
        return Ok(b"")

    def blocking_read(self, n: int) -> Ok | Err:
        if n:
            self.pipe.wait_sync(self.pipe.readable)
        return self.read(n)

    def skip(self, n: int) -> Ok | Err:
        out = self.read(n)
        return Ok(len(out.value)) if isinstance(out, Ok) else out

    def blocking_skip(self, n: int) -> Ok | Err:
        out = self.blocking_read(n)
        return Ok(len(out.value)) if isinstance(out, Ok) else out

    def subscribe(self) -> Pollable:
        return pipe_pollable(self.pipe, self.pipe.readable)

    def close(self) -> None:
        self.pipe.close_reader()


class OutputStream:
    """``output-stream`` into a ``Pipe`` (a response body) or a sink callable (stdout)."""

    def __init__(self, pipe: Pipe | None = None, sink: Sink | None = None) -> None:
        self.pipe = pipe
        self.sink = sink

    def _state(self) -> Err | None:
        pipe = self.pipe
        if pipe is None:
            return None
        if pipe.consumer_gone or pipe.eof:
            return _CLOSED
        if pipe.error is not None:
            return _failed(pipe.error)
        return None

    def check_write(self) -> Ok | Err:
        bad = self._state()
        if bad is not None:
            return bad
        return Ok(STREAM_PERMIT if self.pipe is None else self.pipe.space())

    def write(self, data: bytes) -> Ok | Err:
        bad = self._state()
        if bad is not None:
            return bad
        if self.pipe is None:
            if self.sink is not None and data:
                self.sink(bytes(data))
            return Ok(None)
        try:
            self.pipe.put(data)
        except PipeClosed:
            return _CLOSED
        return Ok(None)

    def _wait_writable(self) -> None:
        if self.pipe is not None:
            try:
                self.pipe.wait_sync(self.pipe.writable)
            except PipeClosed:
                pass  # the write that follows reports it

    def blocking_write_and_flush(self, data: bytes) -> Ok | Err:
        if len(data) > 4096:
            raise WasmtimeError("blocking-write-and-flush: at most 4096 bytes per call")
        self._wait_writable()
        return self.write(data)

    def flush(self) -> Ok | Err:
        return self._state() or Ok(None)

    def blocking_flush(self) -> Ok | Err:
        self._wait_writable()
        return self.flush()

    def subscribe(self) -> Pollable:
        if self.pipe is None:
            return ready_pollable()
        pipe = self.pipe
        return pipe_pollable(pipe, pipe.writable)

    def write_zeroes(self, n: int) -> Ok | Err:
        return self.write(bytes(n))

    def blocking_write_zeroes_and_flush(self, n: int) -> Ok | Err:
        if n > 4096:
            raise WasmtimeError("blocking-write-zeroes-and-flush: at most 4096 bytes per call")
        self._wait_writable()
        return self.write(bytes(n))

    def splice(self, src: InputStream, n: int) -> Ok | Err:
        check = self.check_write()
        if isinstance(check, Err):
            return check
        got = src.read(min(n, check.value))
        if isinstance(got, Err):
            return got
        out = self.write(got.value)
        return Ok(len(got.value)) if isinstance(out, Ok) else out

    def blocking_splice(self, src: InputStream, n: int) -> Ok | Err:
        self._wait_writable()
        check = self.check_write()
        if isinstance(check, Err):
            return check
        got = src.blocking_read(min(n, max(check.value, 1)))
        if isinstance(got, Err):
            return got
        out = self.write(got.value)
        return Ok(len(got.value)) if isinstance(out, Ok) else out


class Streams:
    """``wasi:io/streams``."""

    InputStream = InputStream
    OutputStream = OutputStream
    Error = Error
    Pollable = Pollable


# --- the interfaces that mention wasi:io resources ----------------------------------------------

class MonotonicClock:
    """``wasi:clocks/monotonic-clock`` (nanoseconds of ``time.monotonic_ns``)."""

    Pollable = Pollable

    @staticmethod
    def now() -> int:
        return time.monotonic_ns()

    @staticmethod
    def resolution() -> int:
        return 1

    @staticmethod
    def subscribe_instant(when: int) -> Pollable:
        return clock_pollable(when)

    @staticmethod
    def subscribe_duration(duration: int) -> Pollable:
        return clock_pollable(time.monotonic_ns() + duration)


def sink_for(option: Sink | str, fallback: Any) -> Sink | None:
    """A WasiOptions-style stdout/stderr setting as a sink: ``inherit`` writes to ``fallback``
    (the host's own stream), ``discard`` drops, a callable receives each chunk."""
    if callable(option):
        return option
    if option == "inherit":
        def write(data: bytes) -> None:
            stream = getattr(fallback, "buffer", fallback)
            stream.write(data)
            stream.flush()
        return write
    if option == "discard":
        return None
    raise ValueError("stdout/stderr must be 'inherit', 'discard' or a callable")


class Stdio:
    """``wasi:cli/stdin``, ``stdout`` and ``stderr`` (one object serves all three)."""

    InputStream = InputStream
    OutputStream = OutputStream

    def __init__(self, stdout: Sink | str = "discard", stderr: Sink | str = "discard") -> None:
        self._stdout = sink_for(stdout, sys.stdout)
        self._stderr = sink_for(stderr, sys.stderr)

    def get_stdin(self) -> InputStream:
        pipe = Pipe(Exchange(None, None))
        pipe.finish()
        return InputStream(pipe)

    def get_stdout(self) -> OutputStream:
        return OutputStream(sink=self._stdout)

    def get_stderr(self) -> OutputStream:
        return OutputStream(sink=self._stderr)


class _TrapAll(type):
    """Class-level attribute lookup of an ``Unsupported`` resource: every method traps."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _trap(f"{cls.__qualname__}.{name}")


def _trap(what: str) -> Callable[..., Any]:
    def unsupported(*_args: Any) -> Any:
        raise WasmtimeError(f"{what} is not available to wasi:http components on Trellis")
    return unsupported


class Unsupported:
    """An interface whose every function and resource method traps when called (filesystem,
    sockets): it must exist for the guest to link, and it must be ours, because its
    signatures mention wasi:io resources."""

    resources = None

    def __init__(self, interface: str, **functions: Callable[..., Any]) -> None:
        self._interface = interface
        self._functions = functions

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self._functions:
            return self._functions[name]
        if name[:1].isupper():
            return _TrapAll(f"{self._interface}#{name}", (), {})
        return _trap(f"{self._interface}#{name}")
