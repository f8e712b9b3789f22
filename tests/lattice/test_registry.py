"""The host registry against a real nats-server: hosts list themselves from their heartbeats, a
graceful stop removes them at once, a `kill -9`'d host leaves the list when its heartbeat timeout
passes, and a missing or silent JetStream never holds up the heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _lattice import CALC_WAT, Events, Hosts
from _nats import NatsServers
from nats.aio.client import Client
from trellis.host.config import HostConfig, HostConfigError
from trellis.host.host import REGISTRY_TIMEOUT, Host
from trellis.lattice import subjects
from trellis.lattice.client import LatticeClient
from trellis.lattice.connection import NatsOptions, connect, flush
from trellis.lattice.registry import (
    HOSTS_MAX_AGE,
    HostRecord,
    HostRegistry,
    HostRegistryTimeout,
    HostRegistryUnavailable,
)

TRELLIS = [sys.executable, "-m", "trellis.host.cli"]
STARTUP = 60.0
"""Seconds for a host process to come up: Python start-up plus imports on a loaded machine."""


def record(host_id: str, last_seen: float, *, interval: float = 1.0,
           timeout: float = 3.0, **kw: Any) -> HostRecord:
    return HostRecord(host_id=host_id, lattice="x", last_seen=last_seen,
                      heartbeat_interval=interval, timeout=timeout, **kw)


def ids(records: list[HostRecord]) -> list[str]:
    return [r.host_id for r in records]


async def listed(lc: LatticeClient, host_id: str, timeout: float = STARTUP) -> HostRecord:
    """Poll the registry until ``host_id`` is listed live."""
    async with asyncio.timeout(timeout):
        while True:
            for h in await lc.list_hosts():
                if h.host_id == host_id:
                    return h
            await asyncio.sleep(0.05)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    conn = await connect(NatsOptions(url=nats_url))
    try:
        yield conn
    finally:
        await conn.close()


# -- the registry itself -------------------------------------------------------------------------


async def test_put_list_delete_and_the_expiry_filter(nc: Client, lattice: str) -> None:
    reg = HostRegistry(nc, lattice)
    assert await reg.list(include_stale=True) == []  # no bucket yet: no hosts
    now = time.time()
    await reg.put(record("fresh", now, labels={"zone": "a"}))
    await reg.put(record("old", now - 10))  # missed its 3 s timeout
    assert ids(await reg.list()) == ["fresh"]
    both = await reg.list(include_stale=True)
    assert ids(both) == ["fresh", "old"]
    assert [r.is_stale() for r in both] == [False, True]
    assert both[0].labels == {"zone": "a"}
    # staleness is judged at `now`: in 5 s the fresh one is gone too, 10 s ago both were live
    assert await reg.list(now=now + 5) == []
    assert ids(await reg.list(now=now - 8)) == ["fresh", "old"]

    await reg.put(record("old", time.time()))  # a heartbeat revives it
    assert ids(await reg.list()) == ["fresh", "old"]
    await reg.delete("old")
    assert ids(await reg.list(include_stale=True)) == ["fresh"]
    assert await reg.get("old") is None
    await reg.delete("never-there")  # nothing to delete is fine
    got = await reg.get("fresh")
    assert got is not None and got.host_id == "fresh"

    # the bucket: memory storage, one revision per host, garbage bounded by max_age
    info = await nc.jetstream().stream_info(reg.stream)
    assert reg.stream == "KV_" + subjects.hosts_bucket(lattice) == f"KV_TRELLIS_{lattice}_hosts"
    assert info.config.storage == "memory"
    assert info.config.max_msgs_per_subject == 1
    assert info.config.max_age == HOSTS_MAX_AGE


async def test_unreadable_records_are_skipped(nc: Client, lattice: str) -> None:
    reg = HostRegistry(nc, lattice)
    await reg.put(record("good", time.time()))
    js = nc.jetstream()
    await js.publish(f"$KV.{reg.bucket}.junk", b"not json")
    await js.publish(f"$KV.{reg.bucket}.other", record("mismatch", time.time())
                     .model_dump_json().encode())
    # a newer writer's extra field does not hide its record
    newer = json.loads(record("newer", time.time()).model_dump_json()) | {"gpu": 2}
    await js.publish(f"$KV.{reg.bucket}.newer", json.dumps(newer).encode())
    assert ids(await reg.list(include_stale=True)) == ["good", "newer"]
    assert await reg.get("junk") is None


async def test_concurrent_writers_create_the_bucket_once(nats_url: str, lattice: str) -> None:
    conns = [await connect(NatsOptions(url=nats_url)) for _ in range(4)]
    try:
        now = time.time()
        await asyncio.gather(*(HostRegistry(c, lattice).put(record(f"h{i}", now))
                               for i, c in enumerate(conns)))
        assert ids(await HostRegistry(conns[0], lattice).list()) == ["h0", "h1", "h2", "h3"]
    finally:
        for c in conns:
            await c.close()


# -- hosts in this process -----------------------------------------------------------------------


async def test_a_host_is_listed_from_start_and_refreshed_by_heartbeats(
        hosts: Hosts, lc: LatticeClient) -> None:
    before = time.time()
    await hosts.start("alpha", heartbeat_interval=0.2, labels={"zone": "a"})
    # No wait: the record is written before start() returns.
    [rec] = await lc.list_hosts()
    assert rec.host_id == "alpha" and rec.labels["zone"] == "a" and rec.components == []
    assert rec.heartbeat_interval == 0.2 and rec.timeout == 0.6  # 3 heartbeats by default
    assert before <= rec.started_at <= rec.last_seen <= time.time()

    await lc.start_component(CALC_WAT, "calc", host_id="alpha")
    await lc.put_label("alpha", "tier", "web")
    async with asyncio.timeout(5):  # the next heartbeats carry the new state
        while True:
            [now] = await lc.list_hosts()
            if [c.component_id for c in now.components] == ["calc"] and \
                    now.labels.get("tier") == "web":
                break
            await asyncio.sleep(0.05)
    assert now.last_seen > rec.last_seen and not now.is_stale()


async def test_graceful_stop_removes_the_host_at_once(hosts: Hosts, lc: LatticeClient) -> None:
    a = await hosts.start("a", heartbeat_interval=0.2)
    await hosts.start("b", heartbeat_interval=0.2)
    assert ids(await lc.list_hosts()) == ["a", "b"]
    a.stop()
    await asyncio.wait_for(a.run(), 10)
    # gone, not stale: without waiting for any timeout
    assert ids(await lc.list_hosts(include_stale=True)) == ["b"]
    await asyncio.sleep(0.5)  # no late heartbeat write brings it back
    assert ids(await lc.list_hosts(include_stale=True)) == ["b"]


async def test_host_timeout_can_be_configured(hosts: Hosts, lc: LatticeClient) -> None:
    await hosts.start("slowpoke", heartbeat_interval=0.2, host_timeout=7.5)
    [rec] = await lc.list_hosts()
    assert rec.timeout == 7.5


def test_host_timeout_config() -> None:
    cfg = HostConfig.from_env({"TRELLIS_HEARTBEAT_INTERVAL": "2", "TRELLIS_HOST_TIMEOUT": "9"})
    assert cfg.resolved_host_timeout() == 9
    assert HostConfig.from_env({"TRELLIS_HEARTBEAT_INTERVAL": "2"}).resolved_host_timeout() == 6
    with pytest.raises(HostConfigError, match="TRELLIS_HOST_TIMEOUT.*longer than"):
        HostConfig.from_env({"TRELLIS_HEARTBEAT_INTERVAL": "2", "TRELLIS_HOST_TIMEOUT": "2"})
    # a live host's record must not expire between two heartbeats
    with pytest.raises(HostConfigError, match="TRELLIS_HEARTBEAT_INTERVAL"):
        HostConfig.from_env({"TRELLIS_HEARTBEAT_INTERVAL": str(HOSTS_MAX_AGE)})


# -- JetStream missing or silent -----------------------------------------------------------------


async def heartbeats(events: Events, source: str, seconds: float) -> int:
    seen = len(events.seen)
    await asyncio.sleep(seconds)
    return sum(1 for n, ev in events.seen[seen:]
               if n == "host_heartbeat" and ev.get("source") == source)


async def test_without_jetstream_the_host_runs_and_lists_fail_clearly(
        nats_server_factory: NatsServers, lattice: str, tmp_path: Path, aot_dir: Path) -> None:
    server = await nats_server_factory.server(jetstream=False)
    hosts = Hosts(server.url, lattice, tmp_path, aot_dir=aot_dir)
    try:
        async with LatticeClient(server.url, lattice, timeout=2) as lc:
            events = await Events(lc.nc, lattice).start()
            await hosts.start("nojs", heartbeat_interval=0.1)
            assert await heartbeats(events, "nojs", 1.0) >= 5
            with pytest.raises(HostRegistryUnavailable, match="JetStream"):
                await lc.list_hosts()
            assert ids(await lc.ping_hosts(expect=1)) == ["nojs"]  # ping still works
    finally:
        await hosts.aclose()


async def test_a_silent_jetstream_never_holds_up_the_heartbeat(
        nats_server_factory: NatsServers, lattice: str, tmp_path: Path, aot_dir: Path) -> None:
    """JetStream requests that nobody answers (a JetStream leader lost, say): every registry
    write runs into its deadline, while heartbeats keep their pace and stop stays bounded."""
    server = await nats_server_factory.server(jetstream=False)
    hole = await connect(NatsOptions(url=server.url))
    hosts = Hosts(server.url, lattice, tmp_path, aot_dir=aot_dir)
    try:
        async def ignore(_msg: Any) -> None:
            pass

        await hole.subscribe("$JS.API.>", cb=ignore)  # requests are heard, never answered
        await hole.subscribe("$KV.>", cb=ignore)
        await flush(hole)
        async with LatticeClient(server.url, lattice, timeout=0.5) as lc:
            events = await Events(lc.nc, lattice).start()
            t0 = time.monotonic()
            host = await hosts.start("patient", heartbeat_interval=0.1)
            assert time.monotonic() - t0 < REGISTRY_TIMEOUT + 2.0  # start waits one write, bounded
            assert await heartbeats(events, "patient", 1.5) >= 8
            with pytest.raises(HostRegistryTimeout):
                await lc.list_hosts()
            t0 = time.monotonic()
            host.stop()
            await asyncio.wait_for(host.run(), 2 * REGISTRY_TIMEOUT + 5.0)
            assert time.monotonic() - t0 < 2 * REGISTRY_TIMEOUT + 2.0
    finally:
        await hosts.aclose()
        await hole.close()


# -- a host process killed with SIGKILL ----------------------------------------------------------


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRELLIS, *args], capture_output=True, text=True, timeout=timeout)


def cli_json(*args: str) -> Any:
    out = cli(*args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def test_a_killed_host_stays_listed_until_its_timeout_then_leaves(
        nats_url: str, lattice: str, tmp_path: Path) -> None:
    timeout = 2.0
    env = {**os.environ, "TRELLIS_CACHE_DIR": str(tmp_path / "cache"),
           "TRELLIS_HEARTBEAT_INTERVAL": "0.2", "TRELLIS_HOST_TIMEOUT": str(timeout)}
    where = ["--nats-url", nats_url, "--lattice", lattice]
    with open(tmp_path / "host.log", "wb") as log:
        proc = subprocess.Popen([*TRELLIS, "host", *where, "--host-id", "doomed",
                                 "--label", "zone=z"], stdout=log, stderr=subprocess.STDOUT,
                                env=env)
    try:
        async with LatticeClient(nats_url, lattice, timeout=5.0) as lc:
            await listed(lc, "doomed")
            [shown] = cli_json("host", "list", *where)
            assert shown["host_id"] == "doomed" and shown["labels"]["zone"] == "z"
            assert shown["stale"] is False and shown["component_count"] == 0
            assert shown["timeout"] == timeout and shown["heartbeat_interval"] == 0.2
            assert 0 <= shown["last_seen_age"] < timeout
            text = cli("host", "list", *where).stdout
            assert "doomed" in text and "zone=z" in text and "LAST SEEN" in text

            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
            killed = time.time()
            # it said no goodbye: pings miss it at once, the registry still lists it
            assert await lc.ping_hosts(0.3) == []
            last = await HostRegistry(lc.nc, lattice).get("doomed")
            assert last is not None and last.last_seen <= killed
            assert ids(await lc.list_hosts()) == ["doomed"]
            # ... until `timeout` after its last heartbeat, and not a moment before
            async with asyncio.timeout(timeout + 10):
                while "doomed" in ids(await lc.list_hosts()):
                    await asyncio.sleep(0.05)
            gone = time.time()
            assert gone >= last.last_seen + timeout
            assert gone - (last.last_seen + timeout) < 5.0, "left the list far too late"
            [stale] = await lc.list_hosts(include_stale=True)
            assert stale.host_id == "doomed" and stale.is_stale()
            assert stale.uptime() == pytest.approx(last.last_seen - last.started_at)

        assert cli_json("host", "list", *where) == []
        [shown] = cli_json("host", "list", *where, "--all")
        assert shown["host_id"] == "doomed" and shown["stale"] is True
        assert shown["last_seen_age"] > timeout
        assert "(stale)" in cli("host", "list", *where, "--all").stdout
        assert cli_json("host", "ping", *where) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


async def test_host_list_expect_waits_for_a_starting_host(nats_url: str, lattice: str,
                                                          tmp_path: Path) -> None:
    where = ["--nats-url", nats_url, "--lattice", lattice]
    empty = cli("host", "list", *where, "--expect", "1", "--timeout", "0.5")
    assert empty.returncode == 1 and "0 of 1 hosts" in empty.stderr
    assert "Traceback" not in empty.stderr
    cfg = HostConfig(nats_url=nats_url, lattice=lattice, host_id="late", cache_dir=tmp_path)

    async def start_later() -> Host:
        await asyncio.sleep(1.0)
        return await Host(cfg).__aenter__()

    starting = asyncio.create_task(start_later())
    try:
        out = await asyncio.to_thread(cli, "host", "list", *where, "--expect", "1",
                                      "--timeout", "30", "--json")
        assert out.returncode == 0, out.stderr
        assert [h["host_id"] for h in json.loads(out.stdout)] == ["late"]
    finally:
        host = await starting
        await host.__aexit__(None, None, None)
