"""lattice/bodies.py on a real nats-server: a streamed body arrives whole and in order, the
sender never runs ahead of the receiver's credit, and every failure is a typed error within
the deadline (no receiver, an abort, a cancel, a lost message), with no subscription left
(even when opening fails), and an abort after the exchange was answered does not wait."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from nats.aio.client import Client
from nats.errors import BadSubjectError
from trellis.lattice.bodies import (
    ABORT_GRACE,
    BodyReceiver,
    BodySender,
    StreamAborted,
    StreamBroken,
    StreamCancelled,
    StreamHeaders,
    StreamTimeout,
)


def _deadline(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_a_body_arrives_whole_in_order_with_end_headers(nc: Client) -> None:
    data = bytes(range(256)) * 40_000  # ~10 MB: many chunks, many credit grants
    sender = BodySender(nc, _deadline(30), chunk=100_000)
    control = await sender.open()
    receiver = BodyReceiver(nc, control, _deadline(30), window=300_000)

    async def send() -> None:
        await sender.send(data)
        await sender.finish({"Trellis-Http-Trailers": '[["x-sum","1"]]'})

    task = asyncio.create_task(send())
    await receiver.open()
    got = hashlib.sha256()
    while chunk := await receiver.read():
        got.update(chunk)
    await task
    assert got.digest() == hashlib.sha256(data).digest() and receiver.received == len(data)
    assert receiver.end_headers["Trellis-Http-Trailers"] == '[["x-sum","1"]]'
    await sender.close()
    await receiver.close()
    assert not nc._subs  # type: ignore[attr-defined]


async def test_the_sender_waits_for_credit(nc: Client) -> None:
    sender = BodySender(nc, _deadline(5), chunk=10_000)
    receiver = BodyReceiver(nc, await sender.open(), _deadline(5), window=50_000)
    await receiver.open()
    pump = asyncio.create_task(sender.send(b"x" * 1_000_000))
    await asyncio.sleep(0.3)  # the receiver reads nothing meanwhile
    assert not pump.done() and sender.sent <= 50_000
    while receiver.received < 1_000_000:
        await receiver.read()
    await pump
    await receiver.cancel("done reading")
    await sender.close()
    await receiver.close()


async def test_no_receiver_is_a_timeout_at_the_deadline(nc: Client) -> None:
    sender = BodySender(nc, _deadline(0.3))
    await sender.open()
    with pytest.raises(StreamTimeout, match="no receiver took the body"):
        await sender.send(b"data")
    await sender.close()
    receiver = BodyReceiver(nc, nc.new_inbox(), _deadline(0.3))
    await receiver.open()
    with pytest.raises(StreamTimeout, match="nothing came before the deadline"):
        await receiver.read()
    await receiver.close()
    assert not nc._subs  # type: ignore[attr-defined]


async def test_abort_and_cancel_reach_the_other_end(nc: Client) -> None:
    sender = BodySender(nc, _deadline(5))
    receiver = BodyReceiver(nc, await sender.open(), _deadline(5))
    await receiver.open()
    await sender.send(b"part")
    await sender.abort("the client went away")
    assert await receiver.read() == b"part"
    with pytest.raises(StreamAborted, match="the client went away"):
        await receiver.read()

    sender = BodySender(nc, _deadline(5))
    receiver = BodyReceiver(nc, await sender.open(), _deadline(5), window=10)
    await receiver.open()
    await sender.send(b"0123456789")  # uses up the window
    await receiver.cancel("the guest stopped reading")
    with pytest.raises(StreamCancelled, match="the guest stopped reading"):
        await sender.send(b"more")


async def test_a_lost_message_is_detected(nc: Client) -> None:
    sender = BodySender(nc, _deadline(5))
    receiver = BodyReceiver(nc, await sender.open(), _deadline(5))
    await receiver.open()
    await sender.send(b"first")
    assert await receiver.read() == b"first"
    inbox = sender._to  # a message with a skipped sequence number, as if one was dropped
    assert inbox is not None
    await nc.publish(inbox, b"late", headers={StreamHeaders.SEQ: "5"})
    with pytest.raises(StreamBroken, match="expected message 1"):
        await receiver.read()


async def test_a_failed_open_leaves_no_subscription(nc: Client) -> None:
    # The grant cannot go out (the announced control inbox is no subject) after the data
    # inbox was subscribed: open drops that subscription before the error propagates.
    receiver = BodyReceiver(nc, "not a subject", _deadline(5))
    with pytest.raises(BadSubjectError):
        await receiver.open()
    assert not nc._subs  # type: ignore[attr-defined]
    await receiver.close()  # idempotent


async def test_an_answered_exchange_aborts_without_waiting_for_a_receiver(nc: Client) -> None:
    loop = asyncio.get_running_loop()
    sender = BodySender(nc, _deadline(10))
    await sender.open()
    sender.answered()  # nobody took the body, and nobody will
    started = loop.time()
    await asyncio.wait_for(sender.abort("the exchange is over"), 5)
    assert loop.time() - started < ABORT_GRACE / 2
    await sender.close()

    sender = BodySender(nc, _deadline(10))  # an abort already waiting is woken by it
    await sender.open()
    started = loop.time()
    waiting = asyncio.create_task(sender.abort("the client went away"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    sender.answered()
    await asyncio.wait_for(waiting, 5)
    assert loop.time() - started < ABORT_GRACE / 2
    await sender.close()

    sender = BodySender(nc, _deadline(10))  # a receiver that asked still hears of it
    receiver = BodyReceiver(nc, await sender.open(), _deadline(10))
    await receiver.open()
    await sender.send(b"part")
    sender.answered()
    await sender.abort("cut")
    assert await receiver.read() == b"part"
    with pytest.raises(StreamAborted, match="cut"):
        await receiver.read()
    await sender.close()
    await receiver.close()
    assert not nc._subs  # type: ignore[attr-defined]
