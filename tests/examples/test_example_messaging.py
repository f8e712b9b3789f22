"""examples/messaging: a handler component answers plain NATS requests through messaging-nats.

Two links, the wasmCloud way: provider → component (``handler``, with the subjects in the
provider-side config) delivers messages; component → provider (``consumer``) lets it reply.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import nats
import pytest
from _lattice import Hosts, eventually
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from trellis.lattice.client import LatticeClient
from trellis.lattice.links import LinkDef

pytestmark = pytest.mark.slow


def messaging_link(source: str, target: str, interface: str, **kw: str) -> LinkDef:
    return LinkDef(source_id=source, target_id=target, wit_namespace="wasmcloud",
                   wit_package="messaging", interfaces=[interface], **kw)


async def test_handler_replies_to_a_plain_nats_request(
        hosts: Hosts, nats_url: str, lc: LatticeClient, messaging_wasm: Path) -> None:
    base = f"demo{uuid.uuid4().hex[:8]}"
    host = await hosts.start("msg-host")
    await lc.start_provider("messaging-nats", "messaging", host_id="msg-host")
    await lc.start_component(messaging_wasm, "shouter", host_id="msg-host")
    await lc.put_config("shouter-subjects", {"subscriptions": f"{base}.*"})
    await lc.put_link(messaging_link("shouter", "messaging", "consumer"))
    await lc.put_link(messaging_link("messaging", "shouter", "handler",
                                     source_config="shouter-subjects"))

    nc = await nats.connect(nats_url)
    try:
        async def answered() -> None:
            try:
                reply = await nc.request(f"{base}.greet", b"hello world", timeout=2)
            except (NoRespondersError, NatsTimeoutError) as exc:  # not subscribed yet
                raise AssertionError(exc) from exc
            assert reply.data == f"HELLO WORLD! (2 words on {base}.greet)".encode()
        await eventually(answered, timeout=10)

        reply = await nc.request(f"{base}.other", b"again", timeout=5)
        assert reply.data == f"AGAIN! (1 word on {base}.other)".encode()
        # Other subjects are not subscribed.
        with pytest.raises(NoRespondersError):
            await nc.request(f"{base}x.greet", b"nobody", timeout=2)
    finally:
        await nc.close()
    # Delivered in-process by the provider (not through the lattice RPC), so counted by the
    # component's instances rather than the inventory's RPC counters.
    assert host.rpc.served["shouter"].component.instances.stats.calls >= 2
