"""NATS for tests: the session server, private servers and clusters, and interest-aware requests.

One nats-server per session (``--nats-url`` reuses a running one instead), a unique lattice per
test, and a private server only for a test that restarts or breaks it (STYLE §7). The fixtures in
``conftest.py`` are thin; the machinery lives here so a test module can use it directly.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from trellis.lattice.nats_server import NatsServer, start_cluster, stop_all

NATS_URL_OPTION = "--nats-url"


def add_nats_options(parser: pytest.Parser) -> None:
    parser.addoption(
        NATS_URL_OPTION, dest="nats_url", default=None, metavar="URL",
        help="run the tests against this nats-server (JetStream enabled) instead of starting one",
    )


def unique_lattice() -> str:
    """Tests share one server; a lattice name of their own keeps subjects and buckets apart."""
    return f"test-{uuid.uuid4().hex[:8]}"


class NatsServers:
    """Private servers and clusters for one test, all stopped when the test ends."""

    def __init__(self) -> None:
        self._started: list[NatsServer] = []

    async def server(self, **kwargs: Any) -> NatsServer:
        """A fresh started server (free port, temp JetStream store); ``kwargs`` go to NatsServer."""
        server = NatsServer(**kwargs)
        self._started.append(server)  # before start: a failed start still gets stop()ped
        return await server.start()

    async def cluster(self, n: int = 3, **kwargs: Any) -> list[NatsServer]:
        """A fresh n-node loopback cluster with its routes up (see ``start_cluster``)."""
        servers: list[NatsServer] = await start_cluster(n, **kwargs)
        self._started.extend(servers)
        return servers

    async def aclose(self) -> None:
        await stop_all(self._started)
        self._started.clear()


async def request_until_answered(
    nc: Client, subject: str, payload: bytes = b"", *, timeout: float = 5.0, **kwargs: Any
) -> Msg:
    """``nc.request`` retried while nobody answers yet. A subscription made on one cluster node
    reaches the others asynchronously, even after the subscriber's flush."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await nc.request(subject, payload, timeout=0.5, **kwargs)
        except (NoRespondersError, NatsTimeoutError):
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.02)
