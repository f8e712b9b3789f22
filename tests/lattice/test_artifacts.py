"""The artifact store against a real nats-server: round trips, idempotence, verification, the
disk cache, isolation between lattices and NATS failures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from _nats import NatsServers
from nats.aio.client import Client
from trellis.lattice.artifacts import (
    CHUNK_SIZE,
    ArtifactCorrupt,
    ArtifactInfo,
    ArtifactNotFound,
    ArtifactRefError,
    ArtifactStore,
    ArtifactStoreTimeout,
    ArtifactStoreUnavailable,
    artifact_ref,
    parse_ref,
)
from trellis.lattice.errors import LatticeUnavailableError
from trellis.lattice.subjects import SubjectError, artifacts_bucket

WASM = b"\0asm\x0d\x00\x01\x00" + bytes(range(256)) * 40  # not a component; the store won't care
BIG = 20 * 1024 * 1024


@pytest.fixture
async def store(nc: Client, lattice: str) -> AsyncIterator[ArtifactStore]:
    yield ArtifactStore(nc.jetstream(), lattice)
    await drop_bucket(nc, lattice)


async def drop_bucket(nc: Client, lattice: str) -> None:
    """The session server outlives the test: don't leave 20 MB buckets in it."""
    try:
        await nc.jetstream().delete_object_store(artifacts_bucket(lattice))
    except nats.errors.Error:
        pass


async def stream_messages(nc: Client, lattice: str) -> int:
    info = await nc.jetstream().stream_info(f"OBJ_{artifacts_bucket(lattice)}")
    return info.state.messages


# ---------------------------------------------------------------------------------- basics


async def test_put_get_round_trip(store: ArtifactStore) -> None:
    before = datetime.now(UTC)
    ref = await store.put(WASM, name="calc.wasm")
    assert ref == artifact_ref(WASM) == "sha256:" + hashlib.sha256(WASM).hexdigest()
    assert await store.get(ref) == WASM
    assert await store.exists(ref)
    [info] = await store.list()
    assert (info.ref, info.digest, info.size, info.name) == (ref, parse_ref(ref), len(WASM),
                                                            "calc.wasm")
    assert info.modified is not None
    slack = timedelta(seconds=5)
    assert before - slack <= info.modified <= datetime.now(UTC) + slack


async def test_empty_and_unnamed_artifacts(store: ArtifactStore) -> None:
    ref = await store.put(b"")
    assert await store.get(ref) == b""
    assert [(i.ref, i.size, i.name) for i in await store.list()] == [(ref, 0, None)]


async def test_put_is_idempotent(store: ArtifactStore, nc: Client, lattice: str) -> None:
    ref = await store.put(WASM, name="first.wasm")
    stored = await stream_messages(nc, lattice)
    assert await store.put(bytearray(WASM), name="second.wasm") == ref
    assert await stream_messages(nc, lattice) == stored  # nothing was uploaded again
    assert [(i.ref, i.name) for i in await store.list()] == [(ref, "first.wasm")]


async def test_concurrent_puts_of_the_same_bytes(store: ArtifactStore) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 5)
    refs = await asyncio.gather(*(store.put(data) for _ in range(4)))
    assert set(refs) == {artifact_ref(data)}
    assert await store.get(refs[0]) == data


async def test_objects_follow_the_nats_object_store_layout(store: ArtifactStore,
                                                           nc: Client) -> None:
    """Other NATS clients (and ``nats object get``) read our artifacts, and we read theirs."""
    ref = await store.put(WASM, name="calc.wasm")
    obj = await nc.jetstream().object_store(store.bucket)
    got = await obj.get(parse_ref(ref))
    assert got.data == WASM
    assert (got.info.description, got.info.size) == ("calc.wasm", len(WASM))

    other = os.urandom(CHUNK_SIZE * 2 + 1)
    await obj.put(parse_ref(artifact_ref(other)), other)
    assert await store.get(artifact_ref(other)) == other


async def test_delete(store: ArtifactStore) -> None:
    ref = await store.put(WASM)
    await store.delete(ref)
    assert not await store.exists(ref)
    assert await store.list() == []
    with pytest.raises(ArtifactNotFound):
        await store.get(ref)
    with pytest.raises(ArtifactNotFound):
        await store.delete(ref)
    assert await store.put(WASM) == ref  # and it can come back
    assert await store.get(ref) == WASM


async def test_bucket_deleted_under_a_store(store: ArtifactStore, nc: Client,
                                            lattice: str) -> None:
    ref = await store.put(WASM)
    await drop_bucket(nc, lattice)
    assert not await store.exists(ref)
    assert await store.list() == []
    with pytest.raises(ArtifactNotFound):
        await store.get(ref)
    assert await store.put(WASM) == ref  # the bucket is created again
    assert await store.get(ref) == WASM


async def test_list_ignores_objects_not_named_by_digest(store: ArtifactStore, nc: Client) -> None:
    ref = await store.put(WASM)
    obj = await nc.jetstream().object_store(store.bucket)
    await obj.put("readme.txt", b"not an artifact")
    assert [i.ref for i in await store.list()] == [ref]


# ------------------------------------------------------------------------- verification


async def test_tampered_artifact_is_corrupt(store: ArtifactStore, nc: Client) -> None:
    ref = await store.put(WASM)
    evil = WASM.replace(b"asm", b"ASM")
    obj = await nc.jetstream().object_store(store.bucket)
    await obj.put(parse_ref(ref), evil)  # a well-formed object, under the wrong name

    with pytest.raises(ArtifactCorrupt) as info:
        await store.get(ref)
    assert info.value.ref == ref
    assert info.value.actual == artifact_ref(evil)
    assert f"artifact {ref}" in str(info.value) and artifact_ref(evil) in str(info.value)
    assert await store.exists(ref)  # exists() does not read the bytes

    assert await store.put(WASM) == ref  # putting the real bytes repairs it
    assert await store.get(ref) == WASM


async def test_garbled_entry_is_corrupt(store: ArtifactStore, nc: Client) -> None:
    ref = await store.put(WASM)
    meta = f"$O.{store.bucket}.M.{base64.urlsafe_b64encode(parse_ref(ref).encode()).decode()}"
    await nc.jetstream().publish(meta, b"{not json", headers={"Nats-Rollup": "sub"})
    with pytest.raises(ArtifactCorrupt, match="entry is not valid JSON"):
        await store.get(ref)
    assert await store.exists(ref)
    assert await store.list() == []
    assert await store.put(WASM) == ref
    assert await store.get(ref) == WASM


async def test_missing_chunks_fail_fast(store: ArtifactStore, nc: Client) -> None:
    """Chunks purged from under an entry: an error at once, not a wait for the deadline."""
    ref = await store.put(os.urandom(3 * CHUNK_SIZE))
    await nc.jetstream().purge_stream(f"OBJ_{store.bucket}", subject=f"$O.{store.bucket}.C.>")
    started = time.monotonic()
    with pytest.raises(ArtifactCorrupt, match="0 of its 3 chunks"):
        await store.get(ref, timeout=10)
    assert time.monotonic() - started < 2


BAD_REFS = [
    ("", "expected 'sha256:'"),
    ("sha256:", "expected 'sha256:'"),
    ("sha256:" + "a" * 63, "64 lowercase hex"),
    ("sha256:" + "a" * 65, "64 lowercase hex"),
    ("sha256:" + "g" * 64, "64 lowercase hex"),
    ("sha256:" + "AB" * 32, "write the digest in lowercase: 'sha256:" + "ab" * 32),
    ("ab" * 32, "did you mean 'sha256:" + "ab" * 32),
    ("sha512:" + "a" * 64, "expected 'sha256:'"),
    (" sha256:" + "a" * 64, "expected 'sha256:'"),
    (None, "None is not an artifact reference"),
]


@pytest.mark.parametrize(("ref", "message"), BAD_REFS, ids=[str(r)[:12] for r, _ in BAD_REFS])
async def test_bad_refs(store: ArtifactStore, tmp_path: Path, ref: str, message: str) -> None:
    for call in (store.get, store.exists, store.delete,
                 lambda r: store.fetch_to_cache(r, tmp_path)):
        with pytest.raises(ArtifactRefError, match="is not an artifact reference") as info:
            await call(ref)
        assert message in str(info.value)
        assert isinstance(info.value, ValueError)


async def test_not_found(store: ArtifactStore, lattice: str) -> None:
    ref = artifact_ref(b"never stored")
    # no bucket yet: reads don't create one
    assert not await store.exists(ref)
    assert await store.list() == []
    with pytest.raises(ArtifactNotFound) as info:
        await store.get(ref)
    assert (info.value.ref, info.value.lattice) == (ref, lattice)
    assert str(info.value).startswith(f"artifact {ref} is not in lattice {lattice!r}")
    assert isinstance(info.value, LookupError)
    # with a bucket
    await store.put(WASM)
    with pytest.raises(ArtifactNotFound):
        await store.get(ref)
    assert not await store.exists(ref)


# ------------------------------------------------------------------------------- big ones


async def test_twenty_megabyte_artifact(store: ArtifactStore, nc: Client, lattice: str) -> None:
    data = os.urandom(BIG)
    started = time.perf_counter()
    ref = await store.put(data, name="guest.wasm")
    put_s = time.perf_counter() - started
    started = time.perf_counter()
    assert await store.get(ref) == data
    get_s = time.perf_counter() - started
    assert await stream_messages(nc, lattice) == -(-BIG // CHUNK_SIZE) + 1  # chunks + entry
    assert put_s < 10 and get_s < 10, (put_s, get_s)


async def test_timed_out_put_leaves_no_chunks(store: ArtifactStore, nc: Client,
                                              lattice: str) -> None:
    await store.put(WASM)  # the bucket exists: the deadline hits the upload itself
    stored = await stream_messages(nc, lattice)
    with pytest.raises(ArtifactStoreTimeout, match=r"not done within its 0\.02s deadline") as info:
        await store.put(os.urandom(BIG), timeout=0.02)
    assert isinstance(info.value, TimeoutError)
    assert await stream_messages(nc, lattice) == stored


async def test_timed_out_get_leaves_no_subscription(store: ArtifactStore, nc: Client) -> None:
    ref = await store.put(os.urandom(BIG))
    subscriptions = len(nc._subs)
    with pytest.raises(ArtifactStoreTimeout, match=f"get artifact {ref}"):
        await store.get(ref, timeout=0.02)
    assert len(nc._subs) == subscriptions
    assert len(await store.get(ref)) == BIG


# --------------------------------------------------------------------------------- cache


async def test_fetch_to_cache(store: ArtifactStore, tmp_path: Path) -> None:
    ref = await store.put(WASM)
    path = await store.fetch_to_cache(ref, tmp_path)
    assert path == tmp_path / "artifacts" / f"{parse_ref(ref)}.wasm"
    assert path.read_bytes() == WASM

    await store.delete(ref)  # a verified file is reused: no fetch, so no need for the store
    assert await store.fetch_to_cache(ref, tmp_path) == path

    path.write_bytes(WASM[:-1] + b"!")  # same size, different bytes
    with pytest.raises(ArtifactNotFound):  # so it must fetch, and the store no longer has it
        await store.fetch_to_cache(ref, tmp_path)
    await store.put(WASM)
    assert await store.fetch_to_cache(ref, tmp_path) == path
    assert path.read_bytes() == WASM
    assert os.listdir(path.parent) == [path.name]  # no temporary files left behind


async def test_fetch_to_cache_big_and_concurrent(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(BIG)
    ref = await store.put(data)
    paths = await asyncio.gather(*(store.fetch_to_cache(ref, tmp_path) for _ in range(3)))
    assert len(set(paths)) == 1
    assert paths[0].read_bytes() == data
    assert os.listdir(paths[0].parent) == [paths[0].name]


async def test_fetch_to_cache_does_not_cache_corrupt_bytes(store: ArtifactStore, nc: Client,
                                                           tmp_path: Path) -> None:
    ref = await store.put(WASM)
    obj = await nc.jetstream().object_store(store.bucket)
    await obj.put(parse_ref(ref), b"evil")
    with pytest.raises(ArtifactCorrupt):
        await store.fetch_to_cache(ref, tmp_path)
    assert not (tmp_path / "artifacts" / f"{parse_ref(ref)}.wasm").exists()


# ------------------------------------------------------------------------ lattices, NATS


async def test_lattices_are_isolated(nc: Client) -> None:
    a, b = ArtifactStore(nc.jetstream(), "iso-a-" + os.urandom(4).hex()), \
        ArtifactStore(nc.jetstream(), "iso-b-" + os.urandom(4).hex())
    try:
        ref = await a.put(WASM)
        with pytest.raises(ArtifactNotFound, match=b.lattice):
            await b.get(ref)
        assert await b.list() == []
        assert await b.put(WASM) == ref
        await a.delete(ref)
        assert await b.get(ref) == WASM
        assert await a.list() == []
        assert [i.ref for i in await b.list()] == [ref]
        assert a.bucket != b.bucket
    finally:
        await drop_bucket(nc, a.lattice)
        await drop_bucket(nc, b.lattice)


def test_lattice_name_is_checked(nc: Client) -> None:
    with pytest.raises(SubjectError, match="lattice name 'a.b'"):
        ArtifactStore(nc.jetstream(), "a.b")


async def test_without_jetstream(nats_server_factory: NatsServers) -> None:
    server = await nats_server_factory.server(jetstream=False)
    client = await nats.connect(server.url)
    try:
        store = ArtifactStore(client.jetstream(timeout=1), "plain")
        with pytest.raises(ArtifactStoreUnavailable, match="is JetStream enabled") as info:
            await store.put(WASM)
        assert isinstance(info.value, LatticeUnavailableError)  # the lattice-wide error
        assert isinstance(info.value.__cause__, nats.errors.Error)
        assert "cannot put artifact sha256:" in str(info.value)
    finally:
        await client.close()


async def test_closed_connection(nats_url: str, lattice: str) -> None:
    client = await nats.connect(nats_url)
    store = ArtifactStore(client.jetstream(), lattice)
    ref = await store.put(WASM)
    try:
        await client.close()
        with pytest.raises(LatticeUnavailableError, match="connection is closed"):
            await store.get(ref)
        with pytest.raises(LatticeUnavailableError, match="connection is closed"):
            await store.put(b"more")
    finally:
        async with await nats.connect(nats_url) as other:
            await drop_bucket(other, lattice)


def test_artifact_info_digest() -> None:
    ref = artifact_ref(b"x")
    assert ArtifactInfo(ref, 1, None, None).digest == parse_ref(ref)
