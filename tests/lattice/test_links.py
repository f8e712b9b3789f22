"""Links and named config in JetStream KV: the store, its watch (snapshot, live, NATS restarts),
the client methods and the `trellis link` / `trellis config` CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from _nats import NatsServers
from click.testing import CliRunner
from nats.aio.client import Client
from pydantic import ValidationError
from trellis.host.cli import main
from trellis.lattice.client import LatticeClient
from trellis.lattice.connection import NatsOptions, connect
from trellis.lattice.errors import ConfigNotFound, LinkStoreTimeout, LinkStoreUnavailable
from trellis.lattice.links import (
    ConfigDef,
    LinkDef,
    LinkStore,
    link_key,
    split_package,
)
from trellis.lattice.linkwatch import Change, LinkWatch
from trellis.lattice.subjects import config_bucket, links_bucket


def kv_link(source: str = "web", target: str = "kv-nats", *, name: str = "default",
            interfaces: tuple[str, ...] = ("store",), **kwargs: str) -> LinkDef:
    return LinkDef(source_id=source, target_id=target, wit_namespace="wasi",
                   wit_package="keyvalue", interfaces=list(interfaces), name=name, **kwargs)


async def drop_buckets(nc: Client, lattice: str) -> None:
    js = nc.jetstream(timeout=2.0)
    for bucket in (links_bucket(lattice), config_bucket(lattice)):
        with contextlib.suppress(Exception):
            await js.delete_key_value(bucket)


@pytest.fixture
async def store(nats_url: str, lattice: str) -> AsyncIterator[LinkStore]:
    nc = await nats.connect(nats_url)
    try:
        yield LinkStore(nc, lattice)
    finally:
        await drop_buckets(nc, lattice)
        await nc.close()


async def next_change(watch: LinkWatch, timeout: float = 1.0) -> Change:
    async with asyncio.timeout(timeout):
        return await anext(watch)


async def until_synced(watch: LinkWatch, timeout: float = 1.0) -> list[Change]:
    seen = []
    while (change := await next_change(watch, timeout)).op != "synced":
        seen.append(change)
    return seen


# -- the models ----------------------------------------------------------------------------------


def test_link_model_validates_and_normalises() -> None:
    link = kv_link(interfaces=("store", "atomics", "store"))
    assert link.interfaces == ["atomics", "store"]
    assert link.key == ("web", "wasi:keyvalue", "default")
    assert link.package == "wasi:keyvalue"
    bad_fields: list[tuple[dict[str, object], str]] = [
        (dict(source_id=""), "source_id"),
        (dict(target_id=" kv"), "leading or trailing"),
        (dict(wit_namespace="WASI"), "lowercase WIT identifier"),
        (dict(wit_package="key_value"), "lowercase WIT identifier"),
        (dict(interfaces=[]), "at least one interface"),
        (dict(interfaces=["wasi:keyvalue/store"]), "give the bare name"),
        (dict(name=""), "name"),
        (dict(extra="x"), "extra"),
    ]
    for bad, words in bad_fields:
        fields = {**kv_link().model_dump(), **bad}
        with pytest.raises(ValidationError, match=words):
            LinkDef.model_validate(fields)
    with pytest.raises(ValidationError, match="keys must not be empty"):
        ConfigDef(name="c", values={"": "x"})


def test_split_package_says_the_fix() -> None:
    assert split_package("wasi:keyvalue") == ("wasi", "keyvalue")
    with pytest.raises(ValueError, match="without interface or version"):
        split_package("wasi:keyvalue@0.2.0")
    with pytest.raises(ValueError, match="without interface or version"):
        split_package("wasi:keyvalue/store")
    with pytest.raises(ValueError, match="NAMESPACE:PACKAGE"):
        split_package("keyvalue")


def test_keys_escape_ids_so_prefixes_never_collide() -> None:
    assert link_key("web", "wasi:keyvalue") == "web.wasi.keyvalue.default"
    assert link_key("a.b c", "wasi:keyvalue", "x>*") == "a=2Eb=20c.wasi.keyvalue.x=3E=2A"
    assert link_key("é", "wasi:keyvalue") == "=C3=A9.wasi.keyvalue.default"


# -- the store -----------------------------------------------------------------------------------


async def test_empty_lattice_has_nothing_and_creates_nothing(store: LinkStore) -> None:
    assert await store.list_links() == []
    assert await store.get_link("web", "wasi:keyvalue") is None
    assert await store.del_link("web", "wasi:keyvalue") is False
    assert await store.list_configs() == []
    assert await store.get_config("cache") is None
    assert await store.del_config("cache") is False
    with pytest.raises(Exception, match="not found"):
        await store.nc.jetstream().stream_info(f"KV_{links_bucket(store.lattice)}")


async def test_links_put_get_list_replace_delete(store: LinkStore) -> None:
    web = kv_link(target_config="cache")
    other_name = kv_link(name="sessions", target="kv-redis")
    dotted = kv_link("web.v2", interfaces=("store", "atomics"))
    for link in (web, other_name, dotted):
        await store.put_link(link)
    assert await store.get_link("web", "wasi:keyvalue") == web
    assert await store.list_links() == [web, other_name, dotted]
    assert await store.list_links("web") == [web, other_name]  # not web.v2: keys are escaped
    assert await store.list_links("web.v2") == [dotted]

    relinked = kv_link(target="kv-other")  # same source, package and name: replaces
    await store.put_link(relinked)
    assert await store.get_link("web", "wasi:keyvalue") == relinked
    assert len(await store.list_links("web")) == 2

    assert await store.del_link("web", "wasi:keyvalue") is True
    assert await store.del_link("web", "wasi:keyvalue") is False
    assert await store.get_link("web", "wasi:keyvalue") is None
    assert await store.list_links() == [other_name, dotted]


async def test_configs_put_get_list_delete_and_resolve(store: LinkStore) -> None:
    await store.put_config("cache", {"bucket": "sessions", "url": "nats://x"})
    await store.put_config("web cfg", {})
    assert await store.get_config("cache") == {"bucket": "sessions", "url": "nats://x"}
    assert [c.name for c in await store.list_configs()] == ["cache", "web cfg"]
    await store.put_config("cache", {"bucket": "other"})  # replaces every value
    assert await store.get_config("cache") == {"bucket": "other"}

    link = kv_link(source_config="web cfg", target_config="cache")
    assert await store.resolve(link) == ({}, {"bucket": "other"})
    assert await store.resolve(kv_link()) == ({}, {})
    assert await store.del_config("cache") is True
    with pytest.raises(ConfigNotFound, match="'cache'.*trellis config put cache") as err:
        await store.resolve(link)
    assert err.value.name == "cache" and "web -> kv-nats" in str(err.value)
    assert [c.name for c in await store.list_configs()] == ["web cfg"]


async def test_without_jetstream_every_operation_fails_fast_and_typed(
        nats_server_factory: NatsServers, lattice: str) -> None:
    server = await nats_server_factory.server(jetstream=False)
    nc = await nats.connect(server.url)
    try:
        store = LinkStore(nc, lattice, timeout=1.0)
        started = time.monotonic()
        with pytest.raises(LinkStoreUnavailable, match="JetStream"):
            await store.put_link(kv_link())
        with pytest.raises(LinkStoreUnavailable):
            await store.list_configs()
        with pytest.raises(LinkStoreUnavailable):
            await store.watch().start()
        assert time.monotonic() - started < 5.0
    finally:
        await nc.close()


async def test_a_silent_server_is_a_timeout(lattice: str) -> None:
    """A peer that accepts the connection but never answers JetStream requests."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"server_id":"x","version":"2.10.0","max_payload":1048576,'
                     b'"headers":true,"proto":1}\r\n')
        await writer.drain()
        with contextlib.suppress(Exception):
            while line := await reader.readline():
                if line.startswith(b"PING"):
                    writer.write(b"PONG\r\n")
                    await writer.drain()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
    try:
        with pytest.raises(LinkStoreTimeout, match="0.3s"):
            await LinkStore(nc, lattice).get_config("x", timeout=0.3)
    finally:
        await nc.close()
        server.close()
        await server.wait_closed()


# -- watching ------------------------------------------------------------------------------------


async def test_watch_gives_snapshot_then_live_changes_within_a_second(store: LinkStore) -> None:
    await store.put_config("cache", {"bucket": "b"})
    first = kv_link(target_config="cache")
    await store.put_link(first)
    async with store.watch() as watch:
        snapshot = await until_synced(watch)
        assert snapshot == [Change("put", config=ConfigDef(name="cache", values={"bucket": "b"})),
                            Change("put", link=first)]
        assert watch.links == {first.key: first}
        assert watch.resolve(first) == ({}, {"bucket": "b"})

        relinked = kv_link(target="kv-redis", target_config="cache")
        started = time.monotonic()
        await store.put_link(relinked)
        assert await next_change(watch) == Change("put", link=relinked)
        await store.put_config("cache", {"bucket": "c"})
        assert await next_change(watch) == Change(
            "put", config=ConfigDef(name="cache", values={"bucket": "c"}))
        await store.put_link(relinked)  # unchanged: not reported again
        await store.del_link("web", "wasi:keyvalue")
        assert await next_change(watch) == Change("del", link=relinked)
        await store.del_config("cache")
        assert await next_change(watch) == Change(
            "del", config=ConfigDef(name="cache", values={"bucket": "c"}))
        assert time.monotonic() - started < 2.0
        assert watch.links == {} and watch.configs == {}
    with pytest.raises(StopAsyncIteration):
        await next_change(watch)


async def test_watch_of_an_empty_lattice_creates_the_buckets(store: LinkStore) -> None:
    async with store.watch() as watch:
        assert await until_synced(watch) == []
        await store.put_link(kv_link())
        assert (await next_change(watch)).op == "put"


async def test_resync_reports_only_the_difference(store: LinkStore) -> None:
    """What a resync after a reconnect does, forced: the watch believes a stale state."""
    kept, gone = kv_link(), kv_link("api")
    await store.put_link(kept)
    await store.put_config("cache", {"a": "1"})
    async with store.watch() as watch:
        await until_synced(watch)
        # pretend it reported a link that was deleted meanwhile and missed a config change
        watch._links[link_key(*gone.key)] = gone
        watch._configs["cache"] = ConfigDef(name="cache", values={"a": "0"})
        store.nc.stats["reconnects"] += 1  # what nats-py does after reconnecting
        changes = await until_synced(watch, timeout=3.0)
        assert changes == [Change("put", config=ConfigDef(name="cache", values={"a": "1"})),
                           Change("del", link=gone)]
        assert watch.resyncs == 1
        await store.put_link(kv_link("third"))
        assert (await next_change(watch)).link == kv_link("third")


async def test_watch_survives_a_nats_restart_and_catches_up(
        nats_server_factory: NatsServers, lattice: str) -> None:
    server = await nats_server_factory.server()
    # the watcher waits 2 s before reconnecting: the writer changes things while it is away
    nc = await connect(NatsOptions(url=server.url, reconnect_wait=2.0))
    try:
        store = LinkStore(nc, lattice, timeout=2.0)
        await store.put_link(kv_link())
        await store.put_link(kv_link("api"))
        async with store.watch() as watch:
            assert len(await until_synced(watch)) == 2
            await server.restart()
            async with LatticeClient(server.url, lattice) as writer:
                await writer.del_link("api", "wasi:keyvalue")
                await writer.put_link(kv_link("new"))
            got: list[Change] = []
            while len(got) < 2:
                if (change := await next_change(watch, timeout=15.0)).op != "synced":
                    got.append(change)
            assert got == [Change("del", link=kv_link("api")), Change("put", link=kv_link("new"))]
            assert watch.resyncs >= 1
            await store.put_link(kv_link("after"))
            while (change := await next_change(watch, timeout=5.0)).op == "synced":
                pass
            assert change == Change("put", link=kv_link("after"))
    finally:
        await nc.close()


async def test_watch_ends_with_an_error_when_the_connection_closes(
        nats_url: str, lattice: str) -> None:
    nc = await nats.connect(nats_url)
    watch = await LinkStore(nc, lattice).watch().start()
    try:
        assert await until_synced(watch) == []
        await nc.close()
        with pytest.raises(LinkStoreUnavailable, match="closed"):
            await next_change(watch, timeout=2.0)
    finally:
        await watch.stop()
        nc2 = await nats.connect(nats_url)
        await drop_buckets(nc2, lattice)
        await nc2.close()


# -- the client ----------------------------------------------------------------------------------


async def test_client_methods(lc: LatticeClient) -> None:
    try:
        await lc.put_config("cache", {"bucket": "b"})
        await lc.put_link(kv_link(target_config="cache"))
        assert await lc.list_links() == [kv_link(target_config="cache")]
        assert await lc.list_links("nobody") == []
        assert await lc.get_link("web", "wasi:keyvalue") == kv_link(target_config="cache")
        assert await lc.get_config("cache") == {"bucket": "b"}
        assert [c.name for c in await lc.list_configs()] == ["cache"]
        assert await lc.del_link("web", "wasi:keyvalue") is True
        assert await lc.del_config("cache") is True
        assert await lc.list_links() == [] and await lc.list_configs() == []
    finally:
        await drop_buckets(lc.nc, lc.lattice)


# -- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli(nats_url: str, lattice: str) -> Iterator[CliRunner]:
    yield CliRunner(env={"TRELLIS_NATS_URL": nats_url, "TRELLIS_LATTICE": lattice})

    async def cleanup() -> None:
        nc = await nats.connect(nats_url)
        await drop_buckets(nc, lattice)
        await nc.close()

    asyncio.run(cleanup())


def test_cli_round_trip(cli: CliRunner) -> None:
    def ok(*args: str) -> str:
        result = cli.invoke(main, list(args))
        assert result.exit_code == 0, (result.output, result.stderr)
        return result.stdout

    assert "1 value" in ok("config", "put", "cache", "bucket=sessions=x")
    assert ok("config", "get", "cache") == "bucket=sessions=x\n"
    assert json.loads(ok("config", "get", "cache", "--json")) == {"bucket": "sessions=x"}
    result = cli.invoke(main, ["link", "put", "web", "kv-nats", "wasi:keyvalue", "-i", "store",
                               "--interface", "atomics", "--target-config", "cache",
                               "--source-config", "missing"])
    assert result.exit_code == 0, result.output
    assert "web -> kv-nats wasi:keyvalue/{atomics,store}" in result.stdout
    assert "config 'missing' does not exist yet" in result.stderr
    ok("link", "put", "api", "kv-redis", "wasi:keyvalue", "-i", "store", "--name", "sessions")

    table = ok("link", "list").splitlines()
    assert table[0].split() == ["SOURCE", "PACKAGE", "INTERFACES", "NAME", "TARGET", "CONFIG"]
    assert table[1].split() == ["api", "wasi:keyvalue", "store", "sessions", "kv-redis"]
    assert table[2].split()[:5] == ["web", "wasi:keyvalue", "atomics,store", "default",
                                    "kv-nats"]
    listed = json.loads(ok("link", "list", "--source", "web", "--json"))
    assert [li["source_id"] for li in listed] == ["web"]
    assert listed[0]["target_config"] == "cache" and listed[0]["source_config"] == "missing"
    assert ok("config", "list").split() == ["NAME", "KEYS", "cache", "bucket"]

    ok("link", "del", "api", "wasi:keyvalue", "--name", "sessions")
    gone = cli.invoke(main, ["link", "del", "api", "wasi:keyvalue", "--name", "sessions"])
    assert gone.exit_code == 1 and "no link 'sessions' of 'api'" in gone.stderr
    ok("config", "del", "cache")
    for args in (["config", "get", "cache"], ["config", "del", "cache"]):
        missing = cli.invoke(main, args)
        assert missing.exit_code == 1 and "no config 'cache'" in missing.stderr


def test_cli_usage_errors_say_the_fix(cli: CliRunner) -> None:
    cases = [
        (["config", "put", "c", "novalue"], "expected KEY=VALUE"),
        (["link", "put", "web", "kv", "wasi", "-i", "store"], "NAMESPACE:PACKAGE"),
        (["link", "put", "web", "kv", "wasi:keyvalue@0.2.0", "-i", "store"],
         "without interface or version"),
        (["link", "put", "web", "kv", "wasi:keyvalue"], "--interface"),
        (["link", "put", "web", "kv", "wasi:keyvalue", "-i", "a/b"], "give the bare name"),
        (["link", "del", "web", "Wasi:kv"], "lowercase WIT identifiers"),
    ]
    for args, words in cases:
        result = cli.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.stderr, (args, result.stderr)


def test_cli_help_explains(cli: CliRunner) -> None:
    for args, words in [(["link", "--help"], "rebind within a second"),
                        (["link", "put", "--help"], "TRELLIS_NATS_URL"),
                        (["config", "--help"], "--target-config"),
                        (["config", "put", "--help"], "KEY=VALUE")]:
        result = cli.invoke(main, args)
        assert result.exit_code == 0 and words in result.stdout, (args, result.output)
