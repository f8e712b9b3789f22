"""examples/kv-counter: hits counted in NATS JetStream KV, then in Redis after a relink that
does not restart the component (the count continues from what Redis holds), then in NATS again.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats.js.errors
import pytest
import redis.asyncio as aioredis
from _lattice import Hosts, eventually
from trellis.lattice.client import LatticeClient
from trellis.lattice.links import LinkDef

REDIS_URL = "redis://127.0.0.1:6379"
STORE = "hits"  # the store the component opens (examples/kv-counter/app.py)
KEY = "home"

pytestmark = pytest.mark.slow


def kv_link(target: str) -> LinkDef:
    return LinkDef(source_id="counter", target_id=target, wit_namespace="wasi",
                   wit_package="keyvalue", interfaces=["store", "atomics"])


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own in the machine's Redis; its keys are removed after."""
    prefix = f"trellis-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = aioredis.from_url(REDIS_URL)
    try:
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture
async def bucket_prefix(lc: LatticeClient) -> AsyncIterator[str]:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    yield prefix
    try:
        await lc.nc.jetstream().delete_key_value(prefix + STORE)
    except nats.js.errors.NotFoundError:
        pass


async def test_counter_relinked_from_nats_to_redis_and_back_without_restart(
        hosts: Hosts, lc: LatticeClient, kv_counter_wasm: Path, redis_prefix: str,
        bucket_prefix: str) -> None:
    host = await hosts.start("kv-host")
    await lc.put_config("kv-nats", {"bucket_prefix": bucket_prefix})
    await lc.put_config("kv-redis", {"url": REDIS_URL, "key_prefix": redis_prefix})
    await lc.start_provider("keyvalue-nats", "kv-nats", host_id="kv-host", config="kv-nats")
    await lc.start_provider("keyvalue-redis", "kv-redis", host_id="kv-host", config="kv-redis")
    # One pooled instance: if anything restarted the component, a second one would be made.
    await lc.start_component(kv_counter_wasm, "counter", host_id="kv-host", max_instances=1,
                             mode="pooled")
    served = host.rpc.served["counter"]
    component = served.component

    async def bound_to(target: str) -> None:
        """The host has applied the link (a call before that would count in the old store)."""
        bound = host.links.lookup("counter", "wasi:keyvalue/atomics")
        assert bound is not None and bound.target_id == target

    await lc.put_link(kv_link("kv-nats"))
    await eventually(lambda: bound_to("kv-nats"))
    assert [await lc.call("counter", "hit", KEY) for _ in range(3)] == [1, 2, 3]

    # Redis already counts this key (the provider's layout: {key_prefix}{store}:{key}).
    seed = aioredis.from_url(REDIS_URL)
    try:
        await seed.set(f"{redis_prefix}{STORE}:{KEY}", "10")
    finally:
        await seed.aclose()
    await lc.put_link(kv_link("kv-redis"))  # relink: same link key, new target
    await eventually(lambda: bound_to("kv-redis"))
    assert [await lc.call("counter", "hit", KEY) for _ in range(2)] == [11, 12]

    await lc.put_link(kv_link("kv-nats"))
    await eventually(lambda: bound_to("kv-nats"))
    assert await lc.call("counter", "hit", KEY) == 4

    # Not restarted: the same component object, its one instance reused for every call.
    assert host.rpc.served["counter"].component is component
    stats = component.instances.stats
    assert stats.created == 1 and stats.discarded == 0
    assert stats.calls == served.invocations
    inv = await lc.get_inventory("kv-host")
    [info] = inv.components
    assert info.component_id == "counter" and info.invocations == served.invocations == 6
    assert info.errors == 0
