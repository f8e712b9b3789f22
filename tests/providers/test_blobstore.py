"""The wasi:blobstore providers (local directory, NATS object store) on real backends: called
directly, and through wasmtime from a WAT guest declaring the imports it uses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from _wat import WASI_BLOBSTORE
from trellis.host.runtime.imports import HostImports
from trellis.host.runtime.runtime import Runtime
from trellis.lattice.wit.values import Err, Ok
from trellis.providers.blobstore.common import (
    STREAMS_UNSUPPORTED,
    BlobstoreService,
    Container,
    IncomingValue,
    OutgoingValue,
)
from trellis.providers.blobstore.fs import FsBlobstore
from trellis.providers.blobstore.nats import NatsBlobstore, escape, unescape
from trellis.providers.registry import provider_class
from trellis.providers.sdk import Link, Provider, ProviderContext, ProviderError

LINK = Link(source="test-component", target="blobs", namespace="wasi", package="blobstore",
            interfaces=("blobstore", "container", "types"))
U64_MAX = 2**64 - 1


def _ok(result: Any) -> Any:
    assert isinstance(result, Ok), result
    return result.value


def _err(result: Any) -> str:
    assert isinstance(result, Err), result
    return str(result.value)


@pytest.fixture(params=["fs", "nats"])
async def provider(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Provider]:
    """A started blobstore provider: a fresh root directory, or a unique bucket prefix."""
    if request.param == "fs":
        root = tmp_path / "blobs"
        root.mkdir()
        fs = FsBlobstore({"root": str(root)})
        await fs.start(ProviderContext("blobs"))
        yield fs
        await fs.stop()
        return
    nc = await nats.connect(request.getfixturevalue("nats_url"))
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    js = nc.jetstream()
    ns = NatsBlobstore({"prefix": prefix})
    try:
        await ns.start(ProviderContext("blobs", lattice=request.getfixturevalue("lattice"),
                                       nc=nc))
        yield ns
        await ns.stop()
    finally:
        for stream in (await js.streams_info()):
            if stream.config.name and stream.config.name.startswith(f"OBJ_{prefix}"):
                await js.delete_stream(stream.config.name)
        await nc.close()


def service(provider: Provider) -> BlobstoreService:
    impl = provider.implementation("blobstore", LINK)
    assert impl is provider.implementation("container", LINK)  # one object, three interfaces
    assert isinstance(impl, BlobstoreService)
    return impl


async def _put(container: Container, name: str, data: bytes) -> None:
    """The guest's write order: new, write-data, body, finish."""
    value = OutgoingValue.new_outgoing_value()
    _ok(await container.write_data(name, value))
    _ok(value.outgoing_value_write_body_sync(data))
    _ok(await OutgoingValue.finish(value))


async def _get(container: Container, name: str, start: int = 0, end: int = U64_MAX) -> bytes:
    value = _ok(await container.get_data(name, start, end))
    assert isinstance(value, IncomingValue)
    data: bytes = _ok(IncomingValue.incoming_value_consume_sync(value))
    return data


# -- containers ----------------------------------------------------------------------------------


async def test_container_lifecycle(provider: Provider) -> None:
    svc = service(provider)
    assert _ok(await svc.container_exists("photos")) is False
    assert "does not exist" in _err(await svc.get_container("photos"))
    before = int(time.time()) - 2
    created = _ok(await svc.create_container("photos"))
    assert "already exists" in _err(await svc.create_container("photos"))
    assert _ok(await svc.container_exists("photos")) is True
    got = _ok(await svc.get_container("photos"))
    assert _ok(Container.name(got)) == "photos"
    info = _ok(await Container.info(created))
    assert info["name"] == "photos"
    assert before <= info["created-at"] <= int(time.time()) + 2
    await _put(got, "a", b"1")
    _ok(await svc.delete_container("photos"))
    assert _ok(await svc.container_exists("photos")) is False
    assert "does not exist" in _err(await svc.delete_container("photos"))
    assert _err(await Container.info(got))  # a handle to a deleted container reports it


# -- objects -------------------------------------------------------------------------------------


async def test_write_read_ranges_and_metadata(provider: Provider) -> None:
    svc = service(provider)
    box = _ok(await svc.create_container("box"))
    await _put(box, "dir/sub/hello.txt", b"hello, world")
    assert await _get(box, "dir/sub/hello.txt") == b"hello, world"
    assert await _get(box, "dir/sub/hello.txt", 0, 4) == b"hello"  # end is inclusive
    assert await _get(box, "dir/sub/hello.txt", 7, 100) == b"world"  # clamped to the object
    assert await _get(box, "dir/sub/hello.txt", 50, 60) == b""
    assert "before start" in _err(await box.get_data("dir/sub/hello.txt", 5, 4))
    assert "not found" in _err(await box.get_data("missing", 0, 10))

    value = _ok(await box.get_data("dir/sub/hello.txt", 0, U64_MAX))
    assert value.size() == 12
    assert _err(IncomingValue.incoming_value_consume_async(value)) == STREAMS_UNSUPPORTED

    assert _ok(await box.has_object("dir/sub/hello.txt")) is True
    assert _ok(await box.has_object("dir/sub")) is False
    assert _ok(await box.has_object("nope")) is False
    meta = _ok(await box.object_info("dir/sub/hello.txt"))
    assert meta["name"] == "dir/sub/hello.txt" and meta["container"] == "box"
    assert meta["size"] == 12 and abs(meta["created-at"] - time.time()) < 60
    assert "not found" in _err(await box.object_info("nope"))

    await _put(box, "dir/sub/hello.txt", b"replaced")  # overwrite
    assert await _get(box, "dir/sub/hello.txt") == b"replaced"
    await _put(box, "empty", b"")
    assert await _get(box, "empty") == b""
    await _put(box, "ünïcode name", "ü".encode())
    assert await _get(box, "ünïcode name") == "ü".encode()


async def test_outgoing_value_rules(provider: Provider) -> None:
    svc = service(provider)
    a = _ok(await svc.create_container("a"))
    b = _ok(await svc.create_container("b"))
    value = OutgoingValue.new_outgoing_value()
    _ok(await a.write_data("x", value))
    _ok(await b.write_data("y", value))  # one value may go to several objects
    value.write(b"12")
    _ok(value.outgoing_value_write_body_sync(b"34"))
    assert _ok(await a.has_object("x")) is False  # nothing is stored before finish
    _ok(await OutgoingValue.finish(value))
    assert await _get(a, "x") == b"1234" and await _get(b, "y") == b"1234"
    assert "already finished" in _err(await OutgoingValue.finish(value))
    assert "already finished" in _err(value.outgoing_value_write_body_sync(b"5"))
    assert "already finished" in _err(await a.write_data("z", value))
    assert value.outgoing_value_write_body() == Err(None)  # output-stream: not from Python

    gone = OutgoingValue.new_outgoing_value()
    _ok(await a.write_data("w", gone))
    _ok(await svc.delete_container("a"))
    assert "does not exist" in _err(await OutgoingValue.finish(gone))


async def test_list_delete_and_clear(provider: Provider) -> None:
    svc = service(provider)
    box = _ok(await svc.create_container("list"))
    assert _ok(_ok(await box.list_objects()).read_stream_object_names(10)) == ([], True)
    names = [f"n{i}" for i in range(5)] + ["d/e/f"]
    for name in names:
        await _put(box, name, name.encode())
    stream = _ok(await box.list_objects())
    assert _ok(stream.read_stream_object_names(2)) == (["d/e/f", "n0"], False)
    assert _ok(stream.skip_stream_object_names(2)) == (2, False)
    assert _ok(stream.read_stream_object_names(10)) == (["n3", "n4"], True)
    assert _ok(stream.skip_stream_object_names(5)) == (0, True)

    _ok(await box.delete_object("n0"))
    _ok(await box.delete_object("n0"))  # deleting a missing object is fine
    _ok(await box.delete_objects(["n1", "n2", "never"]))
    _ok(await box.delete_object("d/e/f"))
    assert _ok(_ok(await box.list_objects()).read_stream_object_names(10)) == (["n3", "n4"],
                                                                              True)
    _ok(await box.clear())
    assert _ok(_ok(await box.list_objects()).read_stream_object_names(10)) == ([], True)
    assert _ok(await svc.container_exists("list")) is True
    await _put(box, "after", b"clear")  # a cleared container still takes writes
    assert await _get(box, "after") == b"clear"


async def test_copy_and_move(provider: Provider) -> None:
    svc = service(provider)
    src = _ok(await svc.create_container("src"))
    dst = _ok(await svc.create_container("dst"))
    await _put(src, "a", b"payload")
    _ok(await svc.copy_object({"container": "src", "object": "a"},
                              {"container": "dst", "object": "copies/a"}))
    assert await _get(dst, "copies/a") == b"payload"
    assert await _get(src, "a") == b"payload"
    _ok(await svc.move_object({"container": "src", "object": "a"},
                              {"container": "dst", "object": "moved"}))
    assert await _get(dst, "moved") == b"payload"
    assert _ok(await src.has_object("a")) is False
    _ok(await svc.move_object({"container": "dst", "object": "moved"},
                              {"container": "dst", "object": "moved"}))  # onto itself
    assert await _get(dst, "moved") == b"payload"
    assert "not found" in _err(await svc.copy_object({"container": "src", "object": "a"},
                                                     {"container": "dst", "object": "b"}))
    assert "does not exist" in _err(await svc.copy_object(
        {"container": "dst", "object": "moved"}, {"container": "nope", "object": "b"}))
    assert "does not exist" in _err(await svc.move_object(
        {"container": "dst", "object": "moved"}, {"container": "nope", "object": "b"}))
    assert await _get(dst, "moved") == b"payload"  # a failed move keeps the source


async def test_registry_names_both_providers() -> None:
    assert provider_class("blobstore-fs") is FsBlobstore
    assert provider_class("blobstore-nats") is NatsBlobstore


# -- blobstore-fs: the root and path safety ---------------------------------------------------


async def fs_service(root: Path) -> BlobstoreService:
    fs = FsBlobstore({"root": str(root)})
    await fs.start(ProviderContext("blobs"))
    return service(fs)


async def test_fs_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="root="):
        await FsBlobstore({}).start(ProviderContext("blobs"))
    with pytest.raises(ProviderError, match="not a directory"):
        await FsBlobstore({"root": str(tmp_path / "nope")}).start(ProviderContext("blobs"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ProviderError, match="not a directory"):
        await FsBlobstore({"root": str(tmp_path / "file")}).start(ProviderContext("blobs"))
    with pytest.raises(ProviderError, match="timeout"):
        await FsBlobstore({"root": str(tmp_path), "timeout": "0"}).start(
            ProviderContext("blobs"))
    with pytest.raises(ProviderError, match="not started"):
        FsBlobstore({"root": str(tmp_path)}).implementation("blobstore", LINK)


@pytest.mark.parametrize("name", [
    "..", "../outside", "a/../../outside", "a/..", "/etc/passwd", "/abs",
])
async def test_fs_refuses_path_traversal(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    svc = await fs_service(root)
    box = _ok(await svc.create_container("box"))
    assert "path traversal refused" in _err(await box.get_data(name, 0, 10))
    assert "path traversal refused" in _err(await box.has_object(name))
    assert "path traversal refused" in _err(await box.object_info(name))
    assert "path traversal refused" in _err(await box.delete_object(name))
    value = OutgoingValue.new_outgoing_value()
    _ok(await box.write_data(name, value))
    value.write(b"evil")
    assert "path traversal refused" in _err(await OutgoingValue.finish(value))
    assert "path traversal refused" in _err(await svc.copy_object(
        {"container": "box", "object": name}, {"container": "box", "object": "x"}))
    assert "path traversal refused" in _err(await svc.move_object(
        {"container": "box", "object": "x"}, {"container": "box", "object": name}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]  # nothing written outside


@pytest.mark.parametrize("name", ["..", ".", "a/b", "/tmp", "", "nul\x00"])
async def test_fs_refuses_bad_container_names(tmp_path: Path, name: str) -> None:
    svc = await fs_service(tmp_path)
    assert _err(await svc.create_container(name))
    assert _err(await svc.get_container(name))
    assert _err(await svc.delete_container(name))
    assert _err(await svc.container_exists(name))
    assert list(tmp_path.iterdir()) == []


async def test_fs_refuses_nul_and_odd_segments(tmp_path: Path) -> None:
    svc = await fs_service(tmp_path)
    box = _ok(await svc.create_container("box"))
    assert "NUL" in _err(await box.get_data("a\x00b", 0, 1))
    assert "NUL" in _err(await box.has_object("\x00"))
    for odd in ("", "a//b", "a/./b", "trailing/", ".trellis-tmp-x"):
        assert "invalid" in _err(await box.has_object(odd)) or "empty" in _err(
            await box.has_object(odd))


async def test_fs_refuses_symlinks_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    svc = await fs_service(root)
    box = _ok(await svc.create_container("box"))
    os.symlink(outside / "secret", root / "box" / "link")
    os.symlink(outside, root / "box" / "dir")
    os.symlink(outside, root / "escape")  # a container that is a symlink out

    for name in ("link", "dir/secret", "dir/new"):
        assert "path traversal refused" in _err(await box.get_data(name, 0, 100))
        assert "path traversal refused" in _err(await box.has_object(name))
    value = OutgoingValue.new_outgoing_value()
    _ok(await box.write_data("dir/new", value))
    value.write(b"evil")
    assert "path traversal refused" in _err(await OutgoingValue.finish(value))
    value = OutgoingValue.new_outgoing_value()
    _ok(await box.write_data("dir/deeper/new", value))  # must not mkdir through the link
    assert "path traversal refused" in _err(await OutgoingValue.finish(value))
    assert "path traversal refused" in _err(await svc.get_container("escape"))
    assert "path traversal refused" in _err(await svc.delete_container("escape"))
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"secret"
    # Listing skips what points out of the root; links inside it are fine.
    await _put(box, "real", b"r")
    os.symlink(root / "box" / "real", root / "box" / "alias")
    assert await _get(box, "alias") == b"r"
    names, _ = _ok(_ok(await box.list_objects()).read_stream_object_names(10))
    assert names == ["alias", "real"]


async def test_fs_writes_are_atomic_and_tidy(tmp_path: Path) -> None:
    svc = await fs_service(tmp_path)
    box = _ok(await svc.create_container("box"))
    await _put(box, "deep/er/obj", b"v1")
    value = OutgoingValue.new_outgoing_value()
    _ok(await box.write_data("deep/er", value))  # a "directory" is in the way
    value.write(b"x")
    assert "directory is in the way" in _err(await OutgoingValue.finish(value))

    # Concurrent readers see a whole old or a whole new object, never a torn one.
    old, new = b"a" * 300_000, b"b" * 300_000
    await _put(box, "big", old)

    async def reader() -> set[bytes]:
        seen = set()
        for _ in range(20):
            seen.add(await _get(box, "big"))
        return seen

    writes = [_put(box, "big", new if i % 2 else old) for i in range(10)]
    results = await asyncio.gather(reader(), *writes)
    assert results[0] <= {old, new}
    leftovers = [p.name for p in (tmp_path / "box").rglob("*") if p.name.startswith(".trellis")]
    assert leftovers == []
    _ok(await box.delete_object("deep/er/obj"))
    assert not (tmp_path / "box" / "deep").exists()  # emptied directories are pruned


# -- blobstore-nats ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "my.container", "x_y-z", "ünï/..", "UPPER lower"])
def test_nats_bucket_names_escape_reversibly(name: str) -> None:
    escaped = escape(name)
    assert escaped.replace("_", "").isalnum() and escaped.isascii()
    assert unescape(escaped) == name


async def test_nats_config_errors() -> None:
    with pytest.raises(ProviderError, match="NATS connection"):
        await NatsBlobstore({}).start(ProviderContext("blobs"))
    with pytest.raises(ProviderError, match="prefix"):
        await NatsBlobstore({"prefix": "a.b"}).start(ProviderContext("blobs", nc=object()))
    with pytest.raises(ProviderError, match="replicas"):
        await NatsBlobstore({"replicas": "0"}).start(ProviderContext("blobs", nc=object()))


async def test_nats_standalone_url_and_lattice_prefix(nats_url: str, lattice: str) -> None:
    ns = NatsBlobstore({"url": nats_url})
    await ns.start(ProviderContext("blobs", lattice=lattice))
    try:
        svc = service(ns)
        _ok(await svc.create_container("c.1"))
        nc = ns._own_nc
        info = await nc.jetstream().stream_info(f"OBJ_trellis-blob-{escape(lattice)}-c_2e1")
        assert info.config.name
        _ok(await svc.delete_container("c.1"))
    finally:
        await ns.stop()


async def test_nats_outage_is_an_error_not_a_hang(nats_server_factory: Any) -> None:
    server = await nats_server_factory.server()
    async def quiet(_exc: Exception) -> None:  # the outage is the point of the test
        return None

    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1,
                            error_cb=quiet)
    try:
        ns = NatsBlobstore({"timeout": "1", "prefix": "outage-"})
        await ns.start(ProviderContext("blobs", nc=nc))
        svc = service(ns)
        box = _ok(await svc.create_container("c"))
        await server.stop()
        started = time.monotonic()
        assert _err(await box.has_object("x"))
        assert _err(await svc.container_exists("c"))
        assert time.monotonic() - started < 5
    finally:
        with contextlib.suppress(ConnectionResetError):  # nats-py drains a dead socket
            await nc.close()


# -- end to end through wasmtime ---------------------------------------------------------------


def _imports(provider: Provider) -> HostImports:
    imports = HostImports()
    for iface in ("blobstore", "container", "types"):
        imports.register(f"wasi:blobstore/{iface}", provider.implementation(iface, LINK))
    return imports


async def test_guest_creates_and_reads(provider: Provider, tmp_path: Path) -> None:
    svc = service(provider)
    async with Runtime(imports=_imports(provider), cache_dir=tmp_path / "cache") as rt:
        comp = rt.load(WASI_BLOBSTORE.encode())
        assert await comp.invoke("create", "guest") == Ok(None)
        assert "already exists" in _err(await comp.invoke("create", "guest"))
        box = _ok(await svc.get_container("guest"))
        await _put(box, "dir/obj", b"\x00\x01binary\xff")
        assert await comp.invoke("get", "guest", "dir/obj") == Ok(b"\x00\x01binary\xff")
        assert "not found" in _err(await comp.invoke("get", "guest", "missing"))
        assert "does not exist" in _err(await comp.invoke("get", "nope", "x"))
        results = await asyncio.gather(*(comp.invoke("get", "guest", "dir/obj")
                                         for _ in range(10)))
        assert results == [Ok(b"\x00\x01binary\xff")] * 10


@pytest.mark.xfail(strict=True, raises=Exception, reason=(
    "wasmtime 50 traps on a host function with two borrow parameters ('BUG: deferred host "
    "scope has no call context'), and container.write-data takes two"))
async def test_guest_writes(provider: Provider, tmp_path: Path) -> None:
    svc = service(provider)
    async with Runtime(imports=_imports(provider), cache_dir=tmp_path / "cache") as rt:
        comp = rt.load(WASI_BLOBSTORE.encode())
        assert await comp.invoke("create", "w") == Ok(None)
        assert await comp.invoke("put", "w", "obj", b"from the guest") == Ok(None)
        assert await _get(_ok(await svc.get_container("w")), "obj") == b"from the guest"
        assert await comp.invoke("get", "w", "obj") == Ok(b"from the guest")
