"""Direct delivery for the subscriptions on the invocation path.

nats-py hands every message of a callback subscription to that subscription's own task
through an ``asyncio.Queue``: ~5 µs per message, and when the loop is idle one more loop
iteration before the callback runs. A call crosses two such hops (the host's component
subscription, the caller's reply inbox). ``subscribe`` delivers a subscription's messages
from nats-py's read loop straight to the handler instead, with nats-py's own header parsing
and ``Msg`` (the same values a callback would get).

What handlers publish while nats-py parses one read (a host's replies) is written as soon as
that read is parsed, in one write, rather than a loop iteration later by nats-py's flusher
task: ~40 µs less per call across hosts (bench/lattice.py, 1 caller), the same batching.

The handler runs inside the connection's read loop, so it must not wait for long: nothing else
on the connection is read meanwhile (a reply the handler waits for would never arrive). It may
yield for a loop iteration; anything longer belongs in a task it starts. An exception it raises
is logged and the subscription keeps going.

Only for the nats-py versions whose internals this relies on (``Client._process_msg``,
``_process_headers``, ``_build_message``, ``_subs``); with any other, ``subscribe`` makes a
plain callback subscription, which behaves the same, only slower.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

_LOG = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]
_ATTR = "_trellis_direct"
"""Attribute of a ``Subscription`` holding its direct handler."""
_HOOKED = "_trellis_direct_hook"
_SUPPORTED = all(callable(getattr(Client, name, None))
                 for name in ("_process_msg", "_process_headers", "_build_message"))


async def subscribe(nc: Client, subject: str, handler: Handler, *, queue: str = ""
                    ) -> Subscription:
    """Subscribe ``handler`` to ``subject`` (in queue group ``queue``) for direct delivery.
    Unsubscribe (with a limit too), drain and reconnect work as for any nats-py subscription;
    nats-py's pending limits do not apply (nothing waits in its queue). Messages that arrive
    before this returns may still go through the callback, concurrently with later ones."""
    sub = await nc.subscribe(subject, queue=queue, cb=handler)
    if _hook(nc):
        # From now on the hook delivers; the callback (nats-py's usual task) only sees what
        # arrived before this line, if anything.
        setattr(sub, _ATTR, handler)
    return sub


def _hook(nc: Client) -> bool:
    """Route messages of direct subscriptions past nats-py's queue (once per client)."""
    if getattr(nc, _HOOKED, False):
        return True
    if not _SUPPORTED or not isinstance(getattr(nc, "_subs", None), dict):
        return False
    original = nc._process_msg
    subs = nc._subs
    stats = nc.stats

    async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes,
                          headers: bytes | None) -> None:
        sub = subs.get(sid)
        handler = getattr(sub, _ATTR, None)
        if handler is None or sub is None:
            await original(sid, subject, reply, data, headers)  # type: ignore[arg-type]
            return
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        sub._received += 1
        if 0 < sub._max_msgs <= sub._received:  # unsubscribe(limit=N) reached: as nats-py
            subs.pop(sid, None)
        hdr = await nc._process_headers(headers) if headers else None
        msg = nc._build_message(sid, subject, reply, data, hdr)
        try:
            await handler(msg)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the read loop itself is being stopped
            _LOG.error("handler of %s raised a stray cancellation", msg.subject)
        except Exception:  # never into the read loop: that would end the connection
            _LOG.exception("handler of %s failed", msg.subject)

    nc._process_msg = process_msg  # type: ignore[method-assign]
    _flush_after_reads(nc)
    setattr(nc, _HOOKED, True)
    return True


def _flush_after_reads(nc: Client) -> None:
    """Write what handlers queued while nats-py parsed one read (replies, mostly) as soon as
    the read is parsed: one write per read, as before, but without waiting a loop iteration
    for nats-py's flusher task (which then finds nothing left to do)."""
    parser = getattr(nc, "_ps", None)
    parse = getattr(parser, "parse", None)
    if parse is None:
        return

    async def parse_then_write(data: bytes) -> None:
        await parse(data)
        if nc._pending_data_size and nc.is_connected:
            _write_now(nc)

    parser.parse = parse_then_write  # type: ignore[union-attr]


def _write_now(nc: Client) -> None:
    transport = nc._transport
    writer = getattr(transport, "_io_writer", None)  # a plain TCP or TLS connection
    if writer is None or writer.transport.get_write_buffer_size():
        return  # the socket is backed up (or not plain): the flusher waits for it to drain
    pending = nc._pending
    nc._pending = []
    nc._pending_data_size = 0
    transport.writelines(pending)  # type: ignore[union-attr]


def direct(sub: Subscription) -> bool:
    """Whether ``sub`` gets direct delivery (for tests)."""
    return getattr(sub, _ATTR, None) is not None

