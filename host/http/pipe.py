"""Bounded byte pipes between the event loop (sockets) and the guest's worker thread.

A request body flows socket → loop → pipe → guest (``blocking-read`` on a wasm worker thread);
a response body flows the other way. Both ends of a pipe may block, each in its own way: the
guest's thread on a ``threading.Condition`` (sync host functions are the ~2 µs fast path, and a
worker thread may block), the loop's side on an asyncio future resolved thread-safely. The
buffer is bounded (``limit``), so a 50 MB body never sits in host memory: a full pipe stops
the producer until the consumer drains it — backpressure in both directions.

Every blocking wait on the guest side carries the request's deadline (``Exchange``): the epoch
deadline cannot interrupt a guest suspended in a host function, so the wait itself gives up and
raises ``RequestDeadline``, which the server maps to 504.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any

DEFAULT_LIMIT = 1 << 20
"""Bytes buffered per pipe at most (a single write may overshoot it once)."""


class RequestDeadline(TimeoutError):
    """A guest waited in a host function past its request's deadline."""


class PipeClosed(Exception):
    """The other end went away (the client disconnected, or the guest dropped its stream)."""


class Exchange:
    """What one HTTP exchange's host objects share: the loop, the deadline, abortion."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None, deadline: float | None) -> None:
        self.loop = loop
        self.deadline = deadline
        self.aborted: BaseException | None = None

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()


class Pipe:
    """A bounded FIFO of byte chunks; one producer, one consumer, either on the loop or not."""

    def __init__(self, exchange: Exchange, limit: int = DEFAULT_LIMIT) -> None:
        self.exchange = exchange
        self.limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self.eof = False
        """The producer finished (no more data after what is buffered)."""
        self.error: BaseException | None = None
        """The pipe failed: both ends see it (consumer after the buffered data)."""
        self.consumer_gone = False
        self.total = 0
        """Bytes the producer put in so far."""
        self.trailers: Any = None
        self._cond = threading.Condition(threading.Lock())
        self._waiter: asyncio.Future[None] | None = None
        self._hook: Any = None
        self._hook_at = 0

    # -- state ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    def space(self) -> int:
        return max(0, self.limit - self._size)

    def readable(self) -> bool:
        return bool(self._chunks) or self.eof or self.error is not None

    def writable(self) -> bool:
        return self._size < self.limit or self.consumer_gone or self.error is not None

    def _changed(self) -> None:
        """Wake both kinds of waiters (call with the lock held)."""
        self._cond.notify_all()
        if self._hook is not None and self._held():
            hook, self._hook = self._hook, None
            hook()
        fut, self._waiter = self._waiter, None
        if fut is not None and not fut.done():
            loop = fut.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut)

    def _held(self) -> bool:
        return self.eof or self.error is not None or self._size >= self._hook_at

    def call_when_held(self, size: int, hook: Any) -> bool:
        """Have ``hook()`` called (once, from the producer's thread, with the pipe's lock held:
        it must not block) as soon as ``size`` bytes are buffered, the producer finished or the
        pipe failed. ``False`` if that is already so (``hook`` is not called): a consumer that
        looks at the body only then need not be woken before."""
        with self._cond:
            self._hook_at = size
            if self._held():
                return False
            self._hook = hook
            return True

    # -- producer ------------------------------------------------------------------------

    def put(self, data: bytes) -> None:
        """Append without waiting (the caller checked ``space``; one overshoot is allowed)."""
        with self._cond:
            if self.consumer_gone:
                raise PipeClosed("the reader went away")
            if self.error is not None:
                raise PipeClosed(str(self.error))
            if data:
                self._chunks.append(bytes(data))
                self._size += len(data)
                self.total += len(data)
                self._changed()

    def finish(self, trailers: Any = None) -> None:
        with self._cond:
            self.trailers = trailers
            self.eof = True
            self._changed()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            if self.error is None and not self.eof:
                self.error = exc
            self._changed()

    def close_reader(self) -> None:
        """The consumer will read no more: producers stop, buffered data is dropped."""
        with self._cond:
            self.consumer_gone = True
            self._chunks.clear()
            self._size = 0
            self._changed()

    # -- consumer ------------------------------------------------------------------------

    def take(self, n: int) -> bytes:
        """Up to ``n`` buffered bytes, without waiting (``b""`` if none)."""
        with self._cond:
            if not self._chunks:
                return b""
            head = self._chunks[0]
            if len(head) <= n:
                self._chunks.popleft()
                out = head
                # Small chunks: hand over several at once, up to n.
                while self._chunks and len(out) + len(self._chunks[0]) <= n:
                    out += self._chunks.popleft()
            else:
                out, self._chunks[0] = head[:n], head[n:]
            self._size -= len(out)
            self._changed()
            return out

    # -- blocking waits (guest worker thread) --------------------------------------------

    def wait_sync(self, ready: Any) -> None:
        """Block this (non-loop) thread until ``ready()``, the deadline, or an abort."""
        ex = self.exchange
        with self._cond:
            while not ready():
                if ex.aborted is not None:
                    raise PipeClosed(str(ex.aborted))
                left = ex.remaining()
                if left is not None and left <= 0:
                    raise RequestDeadline("the request's deadline passed while the guest waited")
                self._cond.wait(0.25 if left is None else min(left, 0.25))

    # -- waits on the event loop ----------------------------------------------------------

    async def wait_async(self, ready: Any) -> None:
        while True:
            with self._cond:
                if ready():
                    return
                fut = self._waiter
                if fut is None or fut.done():
                    fut = self._waiter = asyncio.get_running_loop().create_future()
            await fut

    async def read_async(self, n: int = 65536) -> bytes:
        """The next data on the loop side; ``b""`` at the end. Raises the pipe's error."""
        await self.wait_async(self.readable)
        data = self.take(n)
        if data:
            return data
        if self.error is not None:
            raise self.error
        return b""

    async def write_async(self, data: bytes) -> None:
        """Put ``data`` once there is room (backpressure towards the socket reader)."""
        await self.wait_async(self.writable)
        self.put(data)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
