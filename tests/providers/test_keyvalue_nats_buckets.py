"""keyvalue-nats keeps opened buckets: ``open`` costs no round trip after the first, and a
bucket deleted behind its back is reported clearly, then looked up again on the next open."""

from __future__ import annotations

import uuid

import pytest
from nats.aio.client import Client
from trellis.lattice.wit.values import Case, Err, Ok
from trellis.providers.keyvalue.nats import NatsKeyValue
from trellis.providers.sdk import Link, ProviderContext

LINK = Link(source="test-component", target="kv", namespace="wasi", package="keyvalue",
            interfaces=("store",))


async def _provider(nc: Client, **config: str) -> NatsKeyValue:
    provider = NatsKeyValue(config)
    await provider.start(ProviderContext(provider_id="kv", nc=nc))
    return provider


async def test_open_is_served_from_the_kept_bucket(nc: Client) -> None:
    name = f"t{uuid.uuid4().hex[:8]}"
    provider = await _provider(nc)
    store = provider.implementation("store@0.2.0-draft", LINK)
    try:
        first = await store.open(name)
        assert isinstance(first, Ok)
        requests = nc.stats["out_msgs"]
        again = await store.open(name)
        assert isinstance(again, Ok)
        assert nc.stats["out_msgs"] == requests  # no JetStream request for the second open
        assert again.value._kv is first.value._kv
    finally:
        await nc.jetstream().delete_key_value(name)
        await provider.stop()


@pytest.mark.parametrize("create", ["true", "false"])
async def test_a_deleted_bucket_is_a_clear_error_then_reopened(nc: Client, create: str) -> None:
    name = f"t{uuid.uuid4().hex[:8]}"
    js = nc.jetstream()
    await js.create_key_value(bucket=name)
    provider = await _provider(nc, create_buckets=create)
    store = provider.implementation("store@0.2.0-draft", LINK)
    try:
        bucket = (await store.open(name)).value
        assert await bucket.set("k", b"v") == Ok()
        await js.delete_key_value(name)
        for result in (await bucket.get("k"), await bucket.set("k", b"w")):
            assert isinstance(result, Err) and result.value.name == "other"
            assert f"store {name!r} is gone" in result.value.value
        reopened = await store.open(name)
        if create == "false":
            assert reopened == Err(Case("no-such-store"))
        else:  # made anew, empty
            assert await reopened.value.get("k") == Ok(None)
            assert await reopened.value.set("k", b"again") == Ok()
    finally:
        try:
            await js.delete_key_value(name)
        except Exception:  # already gone (create_buckets=false)
            pass
        await provider.stop()
