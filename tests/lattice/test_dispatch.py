"""Direct delivery (lattice/dispatch.py) against a real nats-server: the same messages as a
callback subscription, in order; a failing handler never hurts the connection."""

from __future__ import annotations

import asyncio
import logging

import nats
import pytest
from trellis.lattice import dispatch
from trellis.lattice.connection import flush


async def test_messages_reach_the_handler_in_order_with_headers(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        got: list[tuple[str, bytes, str | None, str]] = []

        async def handler(msg: nats.aio.msg.Msg) -> None:
            got.append((msg.subject, msg.data, (msg.headers or {}).get("X-N"), msg.reply))

        sub = await dispatch.subscribe(nc, "direct.>", handler)
        assert dispatch.direct(sub)
        await nc.flush()
        for i in range(100):
            await nc.publish(f"direct.{i % 3}", str(i).encode(), reply="r",
                             headers={"X-N": str(i)} if i % 2 else None)
        await nc.flush()
        async with asyncio.timeout(5):
            while len(got) < 100:
                await asyncio.sleep(0.01)
        assert [int(d) for _, d, _, _ in got] == list(range(100))
        assert got[3] == ("direct.0", b"3", "3", "r") and got[4][2] is None
        # plain subscriptions on the same connection still go through nats-py
        plain: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_plain(msg: nats.aio.msg.Msg) -> None:
            await plain.put(msg.data)

        await nc.subscribe("plain", cb=on_plain)
        await nc.publish("plain", b"ok")
        assert await asyncio.wait_for(plain.get(), 5) == b"ok"
    finally:
        await nc.close()


async def test_a_failing_handler_is_logged_and_delivery_goes_on(
        nats_url: str, caplog: pytest.LogCaptureFixture) -> None:
    nc = await nats.connect(nats_url)
    try:
        got: list[bytes] = []

        async def handler(msg: nats.aio.msg.Msg) -> None:
            if msg.data == b"boom":
                raise ValueError("boom")
            got.append(msg.data)

        sub = await dispatch.subscribe(nc, "fail", handler, queue="q")
        await nc.flush()
        with caplog.at_level(logging.ERROR, logger="trellis.lattice.dispatch"):
            for data in (b"a", b"boom", b"b"):
                await nc.publish("fail", data)
            await nc.flush()
            async with asyncio.timeout(5):
                while len(got) < 2:
                    await asyncio.sleep(0.01)
        assert got == [b"a", b"b"] and nc.is_connected
        assert "handler of fail failed" in caplog.text
        await sub.unsubscribe()
        await nc.publish("fail", b"late")
        await nc.flush()
        await asyncio.sleep(0.1)
        assert got == [b"a", b"b"]  # nothing after unsubscribing
    finally:
        await nc.close()


async def test_replies_are_written_once_the_read_is_parsed(nats_url: str) -> None:
    """What a handler publishes goes out when nats-py has parsed the read that carried the
    request, not a loop iteration later from nats-py's flusher task."""
    server, caller = await nats.connect(nats_url), await nats.connect(nats_url)
    try:
        seen: list[int] = []
        loop = asyncio.get_running_loop()

        async def handler(msg: nats.aio.msg.Msg) -> None:
            # Runs before the flusher task's next step (scheduled after this, by the publish).
            loop.call_soon(lambda: seen.append(len(server._pending)))
            await server.publish(msg.reply, msg.data.upper())

        await dispatch.subscribe(server, "echo.now", handler)
        await flush(server)  # subscribed for real: caller is another connection
        for word in (b"one", b"two", b"three"):
            reply = await caller.request("echo.now", word, timeout=5)
            assert reply.data == word.upper()
        assert seen == [0, 0, 0], "the replies were still queued for the flusher"
        # Bigger than a socket buffer: written all the same, in order.
        big = bytes(range(256)) * 4096
        reply = await caller.request("echo.now", big, timeout=5)
        assert reply.data == big.upper()
    finally:
        await caller.close()
        await server.close()
