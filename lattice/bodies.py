"""Bodies too big for one NATS message, streamed between two clients with credit-based flow
control (docs/protocol.md §8, "Streamed bodies").

One stream carries one body, one way::

    sender                                        receiver
    subscribe control inbox C
    announce the body: Trellis-Body-Stream: C  →  (in the message that starts the exchange)
                                                  subscribe data inbox D
                                    C  ←  Trellis-Stream-To: D, Trellis-Stream-Credit: N
    chunk 0, 1, … (Trellis-Stream-Seq)   →  D    (never past the credit)
                                    C  ←  Trellis-Stream-Credit: N' (as the receiver consumes)
    end: Trellis-Stream-End: eof | abort  →  D
                                    C  ←  Trellis-Stream-End: cancel (the receiver gives up)

Credit is a cumulative byte offset (a lost or repeated grant cannot wedge the stream), so at
most ``window`` bytes (plus one chunk) are in flight per stream, whatever the body's size:
a slow reader stops the writer instead of filling memory. Core NATS delivers one publisher's
messages to one subscriber in order; a gap in ``Trellis-Stream-Seq`` is ``StreamBroken``.

Error handling: every wait ends at the stream's deadline (``StreamTimeout``, so a dead peer
costs at most that); an ``abort`` reaches the receiver as ``StreamAborted``, a ``cancel`` the
sender as ``StreamCancelled``. Resource handling: each end owns one subscription, dropped by
``close()``, which callers run in ``finally``; nothing is stored on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError

from .errors import LatticeError

DEFAULT_WINDOW = 2 << 20
"""Bytes a receiver lets the sender have in flight (it re-grants at half)."""
DEFAULT_CHUNK = 256 << 10
"""Bytes per data message at most (and never above the connection's ``max_payload``)."""
ABORT_GRACE = 1.0
"""Seconds an aborting sender waits for a receiver that has not asked yet, to tell it."""
_HEADER_ROOM = 1024


class StreamHeaders:
    """NATS header names of a streamed body."""

    BODY = "Trellis-Body-Stream"
    """On the message that announces a body: the sender's control inbox (the body follows)."""
    TO = "Trellis-Stream-To"
    """Receiver → sender, first grant: the data inbox to publish chunks to."""
    CREDIT = "Trellis-Stream-Credit"
    """Receiver → sender: the byte offset the sender may send up to (cumulative, decimal)."""
    SEQ = "Trellis-Stream-Seq"
    """Sender → receiver: the message's number in the stream, from 0 (decimal)."""
    END = "Trellis-Stream-End"
    """``eof`` or ``abort`` (sender → receiver), ``cancel`` (receiver → sender)."""
    ERROR = "Trellis-Stream-Error"
    """Why, with ``abort`` and ``cancel``."""


EOF, ABORT, CANCEL = "eof", "abort", "cancel"


class StreamError(LatticeError):
    """A streamed body did not arrive whole."""


class StreamTimeout(StreamError, TimeoutError):
    """The peer did not send (or grant credit) before the stream's deadline."""


class StreamAborted(StreamError):
    """The sender gave up mid-body (its client went away, its guest failed)."""


class StreamCancelled(StreamError):
    """The receiver wants no more of the body."""


class StreamBroken(StreamError):
    """A message of the stream was lost or malformed."""


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class BodySender:
    """Sends one body to whoever takes the announcement, within the credit it grants.

    ``deadline`` is on the event loop's clock (``loop.time()``).
    """

    def __init__(self, nc: Client, deadline: float, *, chunk: int = DEFAULT_CHUNK) -> None:
        self.nc, self.deadline = nc, deadline
        self.chunk = max(1, min(chunk, nc.max_payload - _HEADER_ROOM))
        self.control = ""
        self.sent = 0
        """Body bytes published so far."""
        self._to: str | None = None
        self._credit = 0
        self._seq = 0
        self._cancelled: str | None = None
        self._ended = False
        self._answered = False
        self._changed = asyncio.Event()
        self._sub: Subscription | None = None

    async def open(self) -> str:
        """Subscribe the control inbox; its subject goes in ``StreamHeaders.BODY``."""
        self.control = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self.control, cb=self._on_control)
        return self.control

    async def _on_control(self, msg: Msg) -> None:
        hdrs = msg.headers or {}
        if hdrs.get(StreamHeaders.END) == CANCEL:
            self._cancelled = hdrs.get(StreamHeaders.ERROR) or "the receiver cancelled"
        else:
            if self._to is None:
                self._to = hdrs.get(StreamHeaders.TO) or None
            try:
                self._credit = max(self._credit, int(hdrs.get(StreamHeaders.CREDIT, "0")))
            except ValueError:
                self._cancelled = "malformed credit from the receiver"
        self._changed.set()

    async def _wait(self, ready: Callable[[], bool], deadline: float | None = None) -> None:
        try:
            async with asyncio.timeout_at(self.deadline if deadline is None else deadline):
                while True:
                    if self._cancelled is not None:
                        raise StreamCancelled(self._cancelled)
                    if ready():
                        return
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            what = "took the body" if self._to is None else "granted credit"
            raise StreamTimeout(f"no receiver {what} in time ({self.sent} bytes sent)") from None

    async def send(self, data: bytes) -> None:
        """Publish ``data`` in chunks, each once there is credit for it. Raises
        ``StreamCancelled`` or ``StreamTimeout``."""
        view = memoryview(data)
        for i in range(0, len(view), self.chunk):
            part = bytes(view[i:i + self.chunk])
            await self._wait(lambda: self._to is not None and self.sent < self._credit)
            assert self._to is not None
            await self.nc.publish(self._to, part, headers={StreamHeaders.SEQ: str(self._seq)})
            self._seq += 1
            self.sent += len(part)

    async def finish(self, headers: Mapping[str, str] | None = None) -> None:
        """The end of the body; ``headers`` travel with it (e.g. trailers)."""
        await self._wait(lambda: self._to is not None)
        await self._end(EOF, headers or {})

    def answered(self) -> None:
        """The exchange got its answer: a receiver that has not asked by now never will, so
        ``abort`` no longer waits ``ABORT_GRACE`` for one (it tells only a receiver that
        asked)."""
        self._answered = True
        self._changed.set()

    async def abort(self, reason: str) -> None:
        """Tell the receiver the body will not be complete (never raises). A receiver that has
        not asked yet gets up to ``ABORT_GRACE`` to, unless the exchange was ``answered``."""
        if self._ended or self._cancelled is not None:
            return
        with contextlib.suppress(Exception):
            await self._wait(lambda: self._to is not None or self._answered,
                             min(self.deadline, _loop_time() + ABORT_GRACE))
            if self._to is not None:
                await self._end(ABORT, {StreamHeaders.ERROR: _one_line(reason)})

    async def _end(self, how: str, headers: Mapping[str, str]) -> None:
        assert self._to is not None
        self._ended = True
        await self.nc.publish(self._to, b"", headers={
            StreamHeaders.SEQ: str(self._seq), StreamHeaders.END: how, **headers})

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class BodyReceiver:
    """Takes a body announced with ``StreamHeaders.BODY: control``, granting credit as the
    caller reads. ``deadline`` is on the event loop's clock."""

    def __init__(self, nc: Client, control: str, deadline: float, *,
                 window: int = DEFAULT_WINDOW) -> None:
        self.nc, self.control, self.deadline, self.window = nc, control, deadline, window
        self.received = 0
        """Body bytes returned by ``read`` so far."""
        self.ended = False
        self.end_headers: dict[str, str] = {}
        """The headers of the ``eof`` message (e.g. trailers)."""
        self._granted = 0
        self._seq = 0
        self._sub: Subscription | None = None

    async def open(self) -> None:
        """Subscribe the data inbox and grant the first window. When the grant cannot go out
        (e.g. the announced control inbox is not a valid subject), the subscription is
        dropped before the error propagates: a failed ``open`` leaves nothing behind."""
        inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(inbox)
        self._granted = self.window
        try:
            await self.nc.publish(self.control, b"", headers={
                StreamHeaders.TO: inbox, StreamHeaders.CREDIT: str(self._granted)})
        except BaseException:
            self.ended = True
            await self.close()
            raise

    async def read(self) -> bytes:
        """The next chunk; ``b""`` at the end. Raises ``StreamTimeout``, ``StreamAborted`` or
        ``StreamBroken``. Everything returned before counts as consumed (credit for it goes
        out now)."""
        if self.ended:
            return b""
        assert self._sub is not None, "open() first"
        if self.received + self.window - self._granted >= self.window // 2:
            self._granted = self.received + self.window
            await self.nc.publish(self.control, b"", headers={
                StreamHeaders.CREDIT: str(self._granted)})
        left = self.deadline - _loop_time()
        try:
            if left <= 0:
                raise NatsTimeoutError
            msg = await self._sub.next_msg(timeout=left)
        except NatsTimeoutError:
            raise StreamTimeout(f"the body stopped after {self.received} bytes: nothing "
                                "came before the deadline") from None
        hdrs = msg.headers or {}
        if hdrs.get(StreamHeaders.SEQ) != str(self._seq):
            self.ended = True
            raise StreamBroken(f"expected message {self._seq} of the body, got "
                               f"{hdrs.get(StreamHeaders.SEQ)!r} (lost on the way?)")
        self._seq += 1
        end = hdrs.get(StreamHeaders.END)
        if end == EOF:
            self.ended, self.end_headers = True, dict(hdrs)
            return b""
        if end is not None:
            self.ended = True
            raise StreamAborted(hdrs.get(StreamHeaders.ERROR) or f"the sender ended with {end}")
        self.received += len(msg.data)
        return msg.data

    async def cancel(self, reason: str) -> None:
        """Tell the sender to stop (never raises); no-op once the body ended."""
        if self.ended:
            return
        self.ended = True
        with contextlib.suppress(Exception):
            await self.nc.publish(self.control, b"", headers={
                StreamHeaders.END: CANCEL, StreamHeaders.ERROR: _one_line(reason)})

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500] or "unknown"


def announced(headers: Mapping[str, str] | None) -> str | None:
    """The control inbox of a body announced in ``headers`` (else ``None``)."""
    return (headers or {}).get(StreamHeaders.BODY) or None


__all__ = [
    "DEFAULT_CHUNK", "DEFAULT_WINDOW", "BodyReceiver", "BodySender", "StreamAborted",
    "StreamBroken", "StreamCancelled", "StreamError", "StreamHeaders", "StreamTimeout",
    "announced",
]
