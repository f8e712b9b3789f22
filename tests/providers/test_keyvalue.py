"""The wasi:keyvalue providers (memory, NATS JetStream KV, Redis) on real backends: called
directly, through wasmtime from a componentize-py draft2 guest, and from a WAT draft guest."""

from __future__ import annotations

import asyncio
import importlib.util
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from _wat import KV_DRAFT
from trellis.host.build import build_python_component
from trellis.host.runtime.imports import HostImports
from trellis.host.runtime.runtime import Runtime
from trellis.lattice.wit.values import Case, Err, Ok
from trellis.providers.keyvalue.common import DRAFT, DRAFT2, Bucket, Cas
from trellis.providers.keyvalue.memory import MemoryKeyValue
from trellis.providers.keyvalue.nats import NatsKeyValue
from trellis.providers.keyvalue.redis import RedisKeyValue
from trellis.providers.registry import provider_class
from trellis.providers.sdk import Link, Provider, ProviderContext, ProviderError

REPO = Path(__file__).resolve().parents[2]
GUEST_DIR = REPO / "tests" / "guests" / "kv-draft2"
REDIS_URL = "redis://127.0.0.1:6379"
LINK = Link(source="test-component", target="kv", namespace="wasi", package="keyvalue",
            interfaces=("store", "atomics", "batch"))


def _uid() -> str:
    return uuid.uuid4().hex[:10]


@dataclass
class Backend:
    """A started provider plus what a test needs to clean up after it."""

    kind: str
    provider: Provider
    cleanup: list[Any] = field(default_factory=list)

    def impl(self, interface: str, **link_config: str) -> Any:
        link = LINK if not link_config else Link(**{**LINK.__dict__,
                                                    "target_config": link_config})
        return self.provider.implementation(interface, link)

    async def open(self, identifier: str = "s", version: str = DRAFT2, **link_config: str
                   ) -> Bucket:
        result = await self.impl(f"store@{version}", **link_config).open(identifier)
        assert isinstance(result, Ok), result
        bucket: Bucket = result.value
        return bucket


async def _start(kind: str, nats_url: str, **config: str) -> Backend:
    tag = _uid()
    if kind == "memory":
        provider: Provider = MemoryKeyValue(config)
    elif kind == "nats":
        provider = NatsKeyValue({"url": nats_url, "bucket_prefix": f"t{tag}_", **config})
    else:
        provider = RedisKeyValue({"url": REDIS_URL, "key_prefix": f"trellis-test-{tag}:",
                                  **config})
    await provider.start(ProviderContext(provider_id=f"kv-{kind}"))
    return Backend(kind, provider)


async def _stop(backend: Backend, nats_url: str) -> None:
    provider = backend.provider
    if isinstance(provider, NatsKeyValue):
        prefix = provider.config["bucket_prefix"]
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            for stream in await js.streams_info():
                name = stream.config.name or ""
                if name.startswith(f"KV_{prefix}"):
                    await js.delete_key_value(name[3:])
        finally:
            await nc.close()
    elif isinstance(provider, RedisKeyValue):
        client, _ = provider._client(provider.config)
        prefix = provider.config["key_prefix"]
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
    await provider.stop()


@pytest.fixture(params=["memory", "nats", "redis"])
async def kv(request: pytest.FixtureRequest, nats_url: str) -> AsyncIterator[Backend]:
    backend = await _start(str(request.param), nats_url)
    try:
        yield backend
    finally:
        await _stop(backend, nats_url)


@pytest.fixture
async def kv_factory(nats_url: str) -> AsyncIterator[Any]:
    """``await make(kind, **config)``: more providers in one test, all stopped at the end."""
    made: list[Backend] = []

    async def make(kind: str, **config: str) -> Backend:
        made.append(await _start(kind, nats_url, **config))
        return made[-1]

    try:
        yield make
    finally:
        for backend in made:
            await _stop(backend, nats_url)


# -- provider level ------------------------------------------------------------------------------


def test_registry_names_the_three_providers() -> None:
    assert provider_class("keyvalue-memory") is MemoryKeyValue
    assert provider_class("keyvalue-nats") is NatsKeyValue
    assert provider_class("keyvalue-redis") is RedisKeyValue


async def test_get_set_exists_delete(kv: Backend) -> None:
    bucket = await kv.open("data")
    assert await bucket.get("k") == Ok(None)
    assert await bucket.exists("k") == Ok(False)
    assert await bucket.set("k", b"\x00value\xff") == Ok()
    assert await bucket.get("k") == Ok(b"\x00value\xff")
    assert await bucket.exists("k") == Ok(True)
    assert await bucket.set("k", b"") == Ok()
    assert await bucket.get("k") == Ok(b"")  # an empty value is still a value
    assert await bucket.delete("k") == Ok()
    assert await bucket.get("k") == Ok(None)
    assert await bucket.delete("k") == Ok()  # deleting a missing key is fine
    other = await kv.open("other")
    await bucket.set("shared-name", b"1")
    assert await other.get("shared-name") == Ok(None)  # identifiers are separate stores


@pytest.mark.parametrize("version", [DRAFT2, DRAFT])
async def test_list_keys_pages_with_a_cursor(kv: Backend, version: str) -> None:
    bucket = await kv.open("list", version, page_size="3")
    assert await bucket.list_keys(None) == Ok({"keys": [], "cursor": None})
    names = {f"key-{i}" for i in range(10)}
    for name in names:
        await bucket.set(name, b"x")
    seen: list[str] = []
    cursor: Any = None
    for _ in range(100):
        page = await bucket.list_keys(cursor)
        assert isinstance(page, Ok), page
        seen += page.value["keys"]
        cursor = page.value["cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str if version == DRAFT2 else int)
    assert set(seen) == names


async def test_increment_is_atomic_and_stored_as_decimal(kv: Backend) -> None:
    store = kv.impl("store")
    atomics = kv.impl("atomics")
    bucket = (await store.open("counters")).value
    assert await atomics.increment(bucket, "n", 5) == Ok(5)
    results = await asyncio.gather(*(atomics.increment(bucket, "n", 1) for _ in range(30)))
    assert sorted(r.value for r in results) == list(range(6, 36))
    assert await bucket.get("n") == Ok(b"35")
    assert await atomics.increment(bucket, "n", -40) == Ok(-5)
    draft = kv.impl("atomics@0.2.0-draft")
    assert await draft.increment(bucket, "m", 2**40) == Ok(2**40)
    await bucket.set("text", b"hello")
    result = await atomics.increment(bucket, "text", 1)
    assert isinstance(result, Err) and result.value.name == "other"


async def test_cas_swap_uses_revisions(kv: Backend) -> None:
    bucket = await kv.open("cas")
    atomics = kv.impl("atomics")
    cas = (await Cas.new(bucket, "k")).value
    assert cas.current() == Ok(None)
    assert await atomics.swap(cas, b"first") == Ok()  # created: it was absent
    assert await bucket.get("k") == Ok(b"first")

    stale = (await Cas.new(bucket, "k")).value
    assert stale.current() == Ok(b"first")
    await bucket.set("k", b"someone else")
    failed = await atomics.swap(stale, b"mine")
    assert isinstance(failed, Err) and failed.value.name == "cas-failed"
    fresh = failed.value.value
    assert fresh.current() == Ok(b"someone else")  # the retry handle is up to date
    assert await atomics.swap(fresh, b"mine") == Ok()
    assert await bucket.get("k") == Ok(b"mine")

    gone = (await Cas.new(bucket, "k")).value
    await bucket.delete("k")
    assert (await atomics.swap(gone, b"late")).value.name == "cas-failed"
    recreate = (await Cas.new(bucket, "k")).value
    assert recreate.current() == Ok(None)
    assert await atomics.swap(recreate, b"again") == Ok()  # a deleted key can come back
    assert await bucket.get("k") == Ok(b"again")


async def test_batch_shapes_of_both_versions(kv: Backend) -> None:
    bucket = await kv.open("batch")
    batch2 = kv.impl("batch")
    draft = kv.impl("wasi:keyvalue/batch@0.2.0-draft")
    assert await batch2.set_many(bucket, [("a", b"1"), ("b", b"2")]) == Ok()
    assert await batch2.get_many(bucket, ["a", "zz", "b"]) == Ok(
        [("a", b"1"), ("zz", None), ("b", b"2")])
    assert await draft.get_many(bucket, ["a", "zz", "b"]) == Ok([("a", b"1"), None, ("b", b"2")])
    assert await draft.delete_many(bucket, ["a", "zz"]) == Ok()
    assert await batch2.get_many(bucket, ["a", "b"]) == Ok([("a", None), ("b", b"2")])


async def test_unknown_version_or_interface_is_a_config_error(kv: Backend) -> None:
    with pytest.raises(ProviderError, match="0.3.0"):
        kv.impl("store@0.3.0")
    with pytest.raises(ProviderError, match="watcher"):
        kv.impl("watcher")


async def test_memory_stores_setting_limits_identifiers(kv_factory: Any) -> None:
    backend = await kv_factory("memory", stores="a, b")
    store = backend.impl("store")
    assert isinstance(await store.open("a"), Ok)
    assert await store.open("c") == Err(Case("no-such-store"))
    with pytest.raises(ProviderError, match="page_size"):
        MemoryKeyValue({"page_size": "lots"})


async def test_nats_missing_bucket_without_create_is_no_such_store(kv_factory: Any) -> None:
    backend = await kv_factory("nats", create_buckets="false")
    store = backend.impl("store")
    assert await store.open("nothing-here") == Err(Case("no-such-store"))
    bad = await store.open("has.dots")
    assert isinstance(bad, Err) and bad.value.name == "other" and "bucket" in bad.value.value
    created = await backend.open("made", create_buckets="true")  # link config overrides
    assert await created.set("k", b"v") == Ok()


async def test_nats_value_is_shared_between_provider_instances(kv_factory: Any) -> None:
    writer = await kv_factory("nats")
    prefix = writer.provider.config["bucket_prefix"]
    reader = await kv_factory("nats", bucket_prefix=prefix)
    wb, rb = await writer.open("shared"), await reader.open("shared")
    assert await wb.set("greeting", b"hello") == Ok()
    assert await rb.get("greeting") == Ok(b"hello")
    atomics_w, atomics_r = writer.impl("atomics"), reader.impl("atomics")
    counts = await asyncio.gather(*(a.increment(b, "c", 1) for a, b in
                                    [(atomics_w, wb), (atomics_r, rb)] * 10))
    assert sorted(c.value for c in counts) == list(range(1, 21))  # no lost update across them


async def test_nats_uses_the_hosts_connection(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    provider = NatsKeyValue({"bucket_prefix": f"t{_uid()}_"})
    try:
        await provider.start(ProviderContext(provider_id="kv", nc=nc))
        backend = Backend("nats", provider)
        bucket = await backend.open("ctx")
        assert await bucket.set("k", b"v") == Ok()
        assert await bucket.get("k") == Ok(b"v")
        await _stop(backend, nats_url)
        assert nc.is_connected  # the host's connection is not the provider's to close
    finally:
        await nc.close()


async def test_nats_without_connection_is_a_config_error() -> None:
    with pytest.raises(ProviderError, match="url=nats://"):
        await NatsKeyValue().start(ProviderContext(provider_id="kv"))
    with pytest.raises(ProviderError, match="url='nats://127.0.0.1:1'"):
        await NatsKeyValue({"url": "nats://127.0.0.1:1", "timeout": "1"}).start(
            ProviderContext(provider_id="kv"))


async def test_redis_down_is_an_error_quickly() -> None:
    provider = RedisKeyValue({"url": "redis://127.0.0.1:1", "timeout": "1"})
    await provider.start(ProviderContext(provider_id="kv"))
    try:
        backend = Backend("redis", provider)
        bucket = await backend.open("down")  # opening needs no round trip
        started = time.monotonic()
        for result in (await bucket.get("k"), await bucket.set("k", b"v"),
                       await backend.impl("atomics").increment(bucket, "k", 1)):
            assert isinstance(result, Err) and result.value.name == "other", result
            assert "Connect" in result.value.value or "refused" in result.value.value
        assert time.monotonic() - started < 5
        assert not (await provider.health()).ok
    finally:
        await provider.stop()
    with pytest.raises(ProviderError, match="url="):
        RedisKeyValue({"url": "http://nope"}).implementation("store", LINK)


# -- through wasmtime ------------------------------------------------------------------------------


def _imports(backend: Backend, version: str | None = None) -> HostImports:
    imports = HostImports()
    for iface in ("store", "atomics", "batch"):
        name = f"{iface}@{version}" if version else iface
        imports.register(f"wasi:keyvalue/{name}", backend.impl(name))
    return imports


@pytest.fixture(scope="module")
def kv_aot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled-component cache for the module: the 18 MB guest compiles once."""
    return tmp_path_factory.mktemp("kv-aot")


@pytest.fixture(scope="session")
def kv_guest_wasm() -> Path:
    spec = importlib.util.find_spec("spin_sdk")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("spin-sdk is not installed: it provides the wasi:keyvalue draft2 WIT")
    deps = Path(next(iter(spec.submodule_search_locations))) / "wit" / "deps"
    return build_python_component(GUEST_DIR, wit_deps=[deps / "keyvalue-2024-10-17"])


@pytest.mark.slow
async def test_draft2_guest_end_to_end(kv: Backend, kv_guest_wasm: Path, kv_aot: Path) -> None:
    async with Runtime(imports=_imports(kv), cache_dir=kv_aot) as rt:
        comp = rt.load(kv_guest_wasm)
        assert [await comp.invoke("hit", "web", "visits") for _ in range(3)] == [1, 2, 3]
        await comp.invoke("put", "web", "name", "trellis")
        assert await comp.invoke("get", "web", "name") == "trellis"
        assert await comp.invoke("get", "web", "missing") is None
        assert sorted(await comp.invoke("keys", "web")) == ["name", "visits"]
        assert await comp.invoke("swap", "web", "name", "trellis", "lattice") is True
        assert await comp.invoke("swap", "web", "name", "trellis", "again") is False
        assert await comp.invoke("swap", "web", "fresh", None, "new") is True
        await comp.invoke("set-many", "web", [("x", "1"), ("y", "2")])
        assert await comp.invoke("get-many", "web", ["x", "nope", "y"]) == ["1", None, "2"]
        assert await comp.invoke("open-error", "web") == "ok"
    bucket = await kv.open("web")  # the guest's writes are in the backend
    assert await bucket.get("name") == Ok(b"lattice")
    assert await bucket.get("visits") == Ok(b"3")


@pytest.mark.slow
async def test_draft2_guest_sees_open_errors(kv_factory: Any, kv_guest_wasm: Path,
                                             kv_aot: Path) -> None:
    backend = await kv_factory("memory", stores="only")
    async with Runtime(imports=_imports(backend), cache_dir=kv_aot) as rt:
        comp = rt.load(kv_guest_wasm)
        assert await comp.invoke("open-error", "only") == "ok"
        assert await comp.invoke("open-error", "other") == "Error_NoSuchStore"


async def test_draft_wat_guest_binds_to_the_same_provider(kv: Backend, kv_aot: Path) -> None:
    """wasmCloud's wasi:keyvalue@0.2.0-draft naming reaches the same provider and data."""
    async with Runtime(imports=_imports(kv, DRAFT), cache_dir=kv_aot) as rt:
        comp = rt.load(KV_DRAFT.encode())
        assert await comp.invoke("put", "wat", "k", b"\x01\x02 bytes") == 0
        assert await comp.invoke("get", "wat", "k") == b"\x01\x02 bytes"
        assert await comp.invoke("get", "wat", "missing") == b""
    bucket = await kv.open("wat", DRAFT)
    assert await bucket.get("k") == Ok(b"\x01\x02 bytes")


async def test_listing_leaves_out_deleted_keys_without_waiting(kv: Backend) -> None:
    bucket = await kv.open("listdel")
    for i in range(5):
        await bucket.set(f"k{i}", b"x")
    await bucket.delete("k1")
    await bucket.delete("k4")  # the newest message is a delete marker
    started = time.monotonic()
    page = await bucket.list_keys(None)
    assert isinstance(page, Ok) and sorted(page.value["keys"]) == ["k0", "k2", "k3"]
    assert time.monotonic() - started < 1.5  # it knew where the end was: no quiet spell
