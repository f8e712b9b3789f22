"""The host daemon against a real nats-server: lifecycle, identity, control interface, events,
scaling from paths and artifacts, graceful stop, and a host in its own process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from _lattice import (
    ADD,
    CALC_WAT,
    ECHO,
    NAP,
    REPO,
    Events,
    Hosts,
    write,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trellis.host.config import HostConfig, HostConfigError, HostIdSlot
from trellis.host.host import Host, HostIdInUse, HostState
from trellis.lattice import subjects
from trellis.lattice.client import LatticeClient
from trellis.lattice.connection import NatsOptions, connect
from trellis.lattice.errors import (
    CtlRequestFailed,
    HostNotFound,
    LatticeUnavailableError,
    NoLink,
    NoSuchComponent,
    RemoteInvocationError,
    ScaleFailed,
)
from trellis.lattice.models import CtlReply, HostInfo, StopHost

# -- lifecycle and identity ----------------------------------------------------------------------


async def test_start_returns_reachable_and_announces(nats_url: str, lattice: str,
                                                     hosts: Hosts, lc: LatticeClient) -> None:
    events = await Events(lc.nc, lattice).start()
    host = await hosts.start("alpha", labels={"zone": "a"})
    assert host.state is HostState.RUNNING
    # No sleep: start() returned only once its subscriptions were flushed.
    [info] = await lc.ping_hosts(expect=1)
    assert info.host_id == "alpha" and info.lattice == lattice
    assert info.labels["zone"] == "a"
    assert {"trellis.os", "trellis.arch", "trellis.hostname"} <= set(info.labels)
    started = await events.wait_for("host_started")
    assert started["source"] == "alpha" and started["type"] == "com.trellis.host_started"
    assert started["specversion"] == "1.0"


async def test_stop_is_idempotent_and_announced(hosts: Hosts, lc: LatticeClient,
                                                lattice: str) -> None:
    events = await Events(lc.nc, lattice).start()
    host = await hosts.start("beta")
    host.stop()
    host.stop()
    await asyncio.wait_for(host.run(), 5)
    assert host.state is HostState.STOPPED
    await events.wait_for("host_stopped")
    assert await lc.ping_hosts(0.2) == []
    with pytest.raises(RuntimeError, match="already stopped"):
        await host.start()


async def test_heartbeats_carry_the_inventory(hosts: Hosts, lc: LatticeClient,
                                              lattice: str) -> None:
    events = await Events(lc.nc, lattice).start()
    await hosts.start("gamma", heartbeat_interval=0.1)
    await lc.start_component(CALC_WAT, "calc", host_id="gamma")
    deadline = time.monotonic() + 5
    while True:
        beats = [ev["data"] for n, ev in events.seen if n == "host_heartbeat"]
        if any(b["components"] and b["components"][0]["component_id"] == "calc" for b in beats):
            break
        assert time.monotonic() < deadline, "no heartbeat with the component"
        await asyncio.sleep(0.05)
    beat = beats[-1]
    assert beat["host_id"] == "gamma" and beat["components"][0]["digest"].startswith("sha256:")


async def test_generated_ids_are_distinct_and_survive_restarts(hosts: Hosts, lc: LatticeClient,
                                                              tmp_path: Path, lattice: str
                                                              ) -> None:
    a = await hosts.start()
    b = await hosts.start()
    assert a.host_id != b.host_id
    assert {h.host_id for h in await lc.ping_hosts(expect=2)} == {a.host_id, b.host_id}
    first = a.host_id
    a.stop()
    await a.run()
    c = await hosts.start()  # the freed slot, so the same id as before
    assert c.host_id == first
    assert (tmp_path / "host-ids" / lattice / "slot-0.id").read_text().strip() == first


def test_host_id_slots_lock_per_process(tmp_path: Path) -> None:
    one = HostIdSlot(tmp_path, "lat")
    two = HostIdSlot(tmp_path, "lat")
    assert one.host_id != two.host_id
    one.release()
    assert HostIdSlot(tmp_path, "lat").host_id == one.host_id


async def test_duplicate_host_id_is_refused(hosts: Hosts) -> None:
    await hosts.start("dup")
    with pytest.raises(HostIdInUse, match="dup"):
        await hosts.start("dup")


async def test_unreachable_nats_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    cfg = HostConfig(nats_url=f"nats://user:secret@127.0.0.1:{port}", host_id="x",
                     connect_timeout=0.5, cache_dir=tmp_path)
    started = time.monotonic()
    with pytest.raises(LatticeUnavailableError) as err:
        await Host(cfg).start()
    assert time.monotonic() - started < 3
    assert f"127.0.0.1:{port}" in str(err.value) and "secret" not in str(err.value)


async def test_token_auth(nats_server_factory, lattice: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = await nats_server_factory.server(extra_args=["--auth", "s3cret"])
    cfg = HostConfig(nats_url=server.url, lattice=lattice, host_id="tok", token="s3cret",
                     cache_dir=tmp_path)
    async with Host(cfg):
        async with LatticeClient(NatsOptions(url=server.url, token="s3cret"), lattice) as c:
            assert [h.host_id for h in await c.ping_hosts(expect=1)] == ["tok"]
    with pytest.raises(LatticeUnavailableError, match="authorization"):
        await connect(NatsOptions(url=server.url, token="wrong", connect_timeout=3))


# -- config --------------------------------------------------------------------------------------


def test_config_from_env() -> None:
    cfg = HostConfig.from_env({
        "TRELLIS_NATS_URL": "nats://n1:4222,nats://n2:4222", "TRELLIS_LATTICE": "prod",
        "TRELLIS_HOST_ID": "h-1", "TRELLIS_HEARTBEAT_INTERVAL": "2.5",
        "TRELLIS_LABELS": "zone=a, tier=web", "TRELLIS_LABEL_GPU": "yes",
        "TRELLIS_ALLOW_FILE_LOAD": "false", "UNRELATED": "x",
    }, labels={"tier": "api"})
    assert cfg.lattice == "prod" and cfg.host_id == "h-1" and cfg.heartbeat_interval == 2.5
    assert cfg.labels == {"zone": "a", "tier": "api", "gpu": "yes"}
    assert cfg.allow_file_load is False
    assert cfg.nats_options().servers() == ["nats://n1:4222", "nats://n2:4222"]
    assert HostConfig.from_env({}).lattice == "default"


@pytest.mark.parametrize(("env", "needle"), [
    ({"TRELLIS_LATTICE": "a.b"}, "TRELLIS_LATTICE"),
    ({"TRELLIS_HEARTBEAT_INTERVAL": "soon"}, "TRELLIS_HEARTBEAT_INTERVAL"),
    ({"TRELLIS_HOST_ID": "has space"}, "host id"),
    ({"TRELLIS_LABELS": "novalue"}, "KEY=VALUE"),
])
def test_config_errors_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(HostConfigError, match=needle):
        HostConfig.from_env(env)


# -- control interface ---------------------------------------------------------------------------


async def test_inventory_and_labels(hosts: Hosts, lc: LatticeClient, lattice: str) -> None:
    events = await Events(lc.nc, lattice).start()
    await hosts.start("delta")
    await lc.put_label("delta", "zone", "b")
    assert (await lc.get_inventory("delta")).labels["zone"] == "b"
    changed = await events.wait_for("labels_changed")
    assert changed["data"]["labels"]["zone"] == "b"
    await lc.delete_label("delta", "zone")
    assert "zone" not in (await lc.get_inventory("delta")).labels
    with pytest.raises(CtlRequestFailed, match="reserved"):
        await lc.put_label("delta", "trellis.os", "plan9")
    with pytest.raises(HostNotFound, match="nobody"):
        await lc.get_inventory("nobody")


@pytest.mark.parametrize(("subject", "payload", "needle"), [
    ("label_put", b"\xff\x00garbage", "Invalid JSON"),
    ("label_put", b'{"key": "a", "value": "b", "colour": 1}', "colour"),
    ("label_put", b'{"key": 5}', "key"),
    ("label_put", b"", "empty request"),
    ("label_del", b"[1, 2]", "object"),
    ("host_stop", b'{"timeout": "soon"}', "timeout"),
    ("host_stop", b"", "empty request"),
    ("component_scale", b'{"component_id": "a.b", "image": "x"}', "component id"),
    ("component_scale", b'{"component_id": "c", "max_instances": -1}', "max_instances"),
    ("component_scale", b'{"component_id": "c"}', "not running"),
    ("component_scale", b'{"component_id": "c", "image": "sha256:abc"}', "sha256"),
    ("component_scale", b'{"component_id": "c", "image": "/nonexistent.wasm"}', "not a file"),
    ("host_get", b"not json", "Invalid JSON"),
])
async def test_malformed_requests_fail_and_name_the_problem(
        hosts: Hosts, lc: LatticeClient, lattice: str, subject: str, payload: bytes,
        needle: str) -> None:
    await hosts.start("eps")
    fn = getattr(subjects, subject)
    subj = fn(lattice) if subject == "host_ping" else fn(lattice, "eps")
    msg = await lc.nc.request(subj, payload, timeout=2)
    reply = CtlReply[dict].model_validate_json(msg.data)  # type: ignore[type-arg]
    assert reply.success is False
    assert needle in reply.message, reply.message
    assert len(await lc.ping_hosts(expect=1)) == 1


_CTL = ["host_ping", "host_get", "host_stop", "label_put", "label_del", "component_scale"]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(which=st.sampled_from(_CTL), payload=st.binary(max_size=300)
       | st.sampled_from([b"{}", b"null", b"[]", b'{"key": ""}', b'{"component_id": 1}',
                          b'{"timeout": 0}', b'"x"', b"1e999", b'{"' + b"a" * 70000 + b'": 1}']))
async def test_fuzzed_ctl_payloads_never_hurt_the_host(
        fuzz_host: tuple[LatticeClient, str], which: str, payload: bytes) -> None:
    lc, lattice = fuzz_host
    fn = getattr(subjects, which)
    subj = fn(lattice) if which == "host_ping" else fn(lattice, "fuzz")
    if which == "host_stop":
        try:  # a well-formed stop would (rightly) stop the host: not what this test is about
            StopHost.model_validate_json(payload, strict=True)
            return
        except ValueError:
            pass
    msg = await lc.nc.request(subj, payload, timeout=2)
    reply = json.loads(msg.data)
    assert set(reply) == {"success", "message", "response"}
    if which not in ("host_ping", "host_get"):
        assert reply["success"] is False or which in ("label_put", "label_del",
                                                      "component_scale")
    pong = await lc.nc.request(subjects.host_ping(lattice), b"", timeout=2)
    assert json.loads(pong.data)["success"] is True


@pytest.fixture
async def fuzz_host(hosts: Hosts, lc: LatticeClient, lattice: str
                    ) -> tuple[LatticeClient, str]:
    await hosts.start("fuzz")
    return lc, lattice


# -- components ----------------------------------------------------------------------------------


async def test_start_from_path_call_rescale_and_stop(hosts: Hosts, lc: LatticeClient,
                                                     lattice: str) -> None:
    events = await Events(lc.nc, lattice).start()
    await hosts.start("zeta")
    assert await lc.start_component(CALC_WAT, "calc", max_instances=2) == "zeta"  # auto-picked
    scaled = await events.wait_for("component_scaled", component_id="calc")
    assert scaled["data"]["max_instances"] == 2 and scaled["data"]["host_id"] == "zeta"
    [comp] = (await lc.get_inventory("zeta")).components
    assert comp.component_id == "calc" and comp.image == str(CALC_WAT)
    assert comp.max_instances == 2 and comp.mode == "fresh" and ADD in comp.exports
    assert await lc.call("calc", "add", 40, 2) == 42

    await lc.scale_component("calc", host_id="zeta", max_instances=5, mode="pooled")
    [comp] = (await lc.get_inventory("zeta")).components
    assert (comp.max_instances, comp.mode, comp.invocations) == (5, "pooled", 1)
    assert await lc.call("calc", "add", 1, 1) == 2

    assert await lc.stop_component("calc") == ["zeta"]
    assert (await lc.get_inventory("zeta")).components == []
    with pytest.raises(NoSuchComponent):
        await lc.call("calc", "add", 1, 1)


async def test_start_from_a_sha256_artifact(hosts: Hosts, lc: LatticeClient, tmp_path: Path
                                            ) -> None:
    await hosts.start("eta", allow_file_load=False)
    ref = await lc.push_artifact(write(tmp_path, "echo.wat", ECHO))
    assert ref.startswith("sha256:")
    await lc.start_component(ref, "echo", host_id="eta")
    [comp] = (await lc.get_inventory("eta")).components
    assert comp.digest == ref and comp.image == ref
    assert await lc.call("echo", "echo", b"abc") == b"abc"
    with pytest.raises(CtlRequestFailed, match="allow_file_load"):
        await lc.start_component(CALC_WAT, "calc", host_id="eta")


async def test_scale_failures_carry_the_reason(hosts: Hosts, lc: LatticeClient, lattice: str,
                                               tmp_path: Path) -> None:
    events = await Events(lc.nc, lattice).start()
    await hosts.start("theta", runtime_kw={"imports": None})  # no test:host/clock here
    missing = "sha256:" + "0" * 64
    with pytest.raises(ScaleFailed, match="not in lattice") as err:
        await lc.start_component(missing, "ghost", host_id="theta")
    assert err.value.host_id == "theta"
    failed = await events.wait_for("component_scale_failed", component_id="ghost")
    assert "not in lattice" in failed["data"]["reason"]
    # An import nothing serves here is link-bound: the component starts, and a call fails
    # at once with the typed error naming the import and the link.
    await lc.start_component(write(tmp_path, "nap.wat", NAP), "nap", host_id="theta")
    with pytest.raises(NoLink, match="test:host/clock.*'default'"):
        await lc.call("nap", "nap", 1, timeout=10)
    await lc.stop_component("nap", host_id="theta")
    with pytest.raises(ScaleFailed, match="cannot load"):
        await lc.start_component(write(tmp_path, "bad.wasm", "garbage"), "bad", host_id="theta")
    assert (await lc.get_inventory("theta")).components == []


# -- graceful stop -------------------------------------------------------------------------------


async def test_graceful_stop_drains_calls_in_flight(hosts: Hosts, lc: LatticeClient,
                                                   lattice: str, tmp_path: Path) -> None:
    events = await Events(lc.nc, lattice).start()
    host = await hosts.start("iota")
    await lc.start_component(write(tmp_path, "nap.wat", NAP), "nap", host_id="iota")
    calls = [asyncio.create_task(lc.call("nap", "nap", 300)) for _ in range(3)]
    while (await lc.get_inventory("iota")).components[0].active < 3:
        await asyncio.sleep(0.01)
    await lc.stop_host("iota", drain_timeout=5)
    assert await asyncio.gather(*calls) == [300, 300, 300]
    await asyncio.wait_for(host.run(), 5)
    stopped = await events.wait_for("host_stopped")
    assert stopped["source"] == "iota"
    with pytest.raises(NoSuchComponent):
        await lc.call("nap", "nap", 1)


async def test_stop_cancels_calls_past_the_drain_deadline(hosts: Hosts, lc: LatticeClient,
                                                          tmp_path: Path) -> None:
    host = await hosts.start("kappa")
    await lc.start_component(write(tmp_path, "nap.wat", NAP), "nap", host_id="kappa")
    call = asyncio.create_task(lc.call("nap", "nap", 3000, timeout=10))
    while (await lc.get_inventory("kappa")).components[0].active < 1:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    host.stop(timeout=0.2)
    with pytest.raises(RemoteInvocationError) as err:
        await call
    assert time.monotonic() - started < 2
    assert err.value.kind == "stopped" and err.value.host == "kappa"


# -- a host in its own process -------------------------------------------------------------------


async def test_host_in_a_separate_process(nats_url: str, lattice: str, tmp_path: Path) -> None:
    env = {**os.environ, "TRELLIS_NATS_URL": nats_url, "TRELLIS_LATTICE": lattice,
           "TRELLIS_HOST_ID": "proc", "TRELLIS_LABEL_ROLE": "worker",
           "TRELLIS_CACHE_DIR": str(tmp_path), "TRELLIS_STOP_TIMEOUT": "5"}
    code = ("import asyncio\nfrom trellis.host.config import HostConfig\n"
            "from trellis.host.host import run_host\n"
            "asyncio.run(run_host(HostConfig.from_env()))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO,
                            stderr=subprocess.PIPE, text=True)
    try:
        async with LatticeClient(nats_url, lattice, timeout=5) as lc:
            events = await Events(lc.nc, lattice).start()
            [info] = await lc.wait_for_hosts(1, timeout=20)
            assert (info.host_id, info.labels["role"]) == ("proc", "worker")
            await lc.start_component(CALC_WAT, "calc", host_id="proc")
            assert await lc.call_wave("calc", "add(20, 22)") == "42"
            proc.send_signal(signal.SIGTERM)
            await events.wait_for("host_stopped", timeout=10)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        err = ""
        if proc.stderr:
            err = proc.stderr.read()
            proc.stderr.close()
        assert "Traceback" not in err, err


async def test_ping_ignores_hosts_of_other_lattices(hosts: Hosts, nats_url: str) -> None:
    await hosts.start("mine")
    nc = await nats.connect(nats_url)
    try:
        async with LatticeClient(nc, "some-other-lattice") as other:
            assert await other.ping_hosts(0.2) == []
        reply = await nc.request(subjects.host_ping(hosts.lattice), b"{}", timeout=2)
        info = HostInfo.model_validate(json.loads(reply.data)["response"])
        assert info.host_id == "mine"
    finally:
        await nc.close()


async def test_host_survives_a_nats_restart(nats_server_factory, lattice: str,  # type: ignore[no-untyped-def]
                                            tmp_path: Path, aot_dir: Path) -> None:
    server = await nats_server_factory.server()
    hosts = Hosts(server.url, lattice, tmp_path, aot_dir=aot_dir)
    try:
        await hosts.start("phoenix", heartbeat_interval=0.2)
        async with LatticeClient(server.url, lattice, timeout=2) as client:
            await client.start_component(CALC_WAT, "calc")
            assert await client.call("calc", ADD, 1, 2) == 3
            await server.restart()
            deadline = time.monotonic() + 15
            while True:  # both sides reconnect on their own; no process restart
                try:
                    assert await client.call("calc", ADD, 2, 2) == 4
                    break
                except (NoSuchComponent, TimeoutError, LatticeUnavailableError):
                    assert time.monotonic() < deadline, "the host did not come back"
                    await asyncio.sleep(0.1)
            events = await Events(client.nc, lattice).start()
            beat = await events.wait_for("host_heartbeat", timeout=5)
            assert beat["data"]["components"][0]["component_id"] == "calc"
    finally:
        await hosts.aclose()


# -- more calls than the host runs at once -------------------------------------------------------


async def test_calls_past_max_in_flight_wait_their_turn_and_the_host_stays_responsive(
        hosts: Hosts, lc: LatticeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trellis.host import rpc

    host = await hosts.start("lambda")
    host.rpc.max_in_flight = 2
    await lc.start_component(write(tmp_path, "nap.wat", NAP), "nap", host_id="lambda",
                             max_instances=8)
    calls = [asyncio.create_task(lc.call("nap", "nap", 200, timeout=10)) for _ in range(6)]
    while host.rpc.in_flight < 2:
        await asyncio.sleep(0.01)
    # The rest wait in the backlog, not in the read loop: control requests still get answers.
    [info] = await lc.ping_hosts(expect=1)
    assert info.host_id == "lambda"
    assert (await lc.get_inventory("lambda")).components[0].active == 2
    assert await asyncio.gather(*calls) == [200] * 6

    monkeypatch.setattr(rpc, "MAX_BACKLOG", 1)
    calls = [asyncio.create_task(lc.call("nap", "nap", 300, timeout=10)) for _ in range(2)]
    while host.rpc.in_flight < 2:
        await asyncio.sleep(0.01)
    waiting = asyncio.create_task(lc.call("nap", "nap", 1, timeout=10))
    await asyncio.sleep(0.1)
    with pytest.raises(RemoteInvocationError) as refused:
        await lc.call("nap", "nap", 1, timeout=10)
    assert refused.value.kind == "capacity" and "at capacity" in str(refused.value)
    assert await asyncio.gather(*calls, waiting) == [300, 300, 1]


class TimedGate:
    """An interceptor that uses ``asyncio.timeout`` (so not ``eager_safe``): calls with a first
    argument of 7 take too long in it and fail."""

    async def invoke(self, call: Any, next: Any) -> Any:
        from trellis.lattice.errors import InvocationError

        try:
            async with asyncio.timeout(0.02):
                await asyncio.sleep(0.2 if call.args[:1] == (7,) else 0)
        except TimeoutError:
            raise InvocationError(call.component, call.function, "the gate timed out") from None
        return await next(call)


async def test_interceptor_timeouts_stay_in_their_call(hosts: Hosts, lc: LatticeClient,
                                                       tmp_path: Path) -> None:
    # Calls start eagerly from the connection's read loop; a timeout in an interceptor must
    # end that call only, never the loop that reads the host's connection.
    await hosts.start("mu", runtime_kw={"interceptors": [TimedGate()]})
    await lc.start_component(write(tmp_path, "echo.wat", ECHO), "e", host_id="mu",
                             mode="pooled")
    for _ in range(3):
        assert await lc.call("e", "add", 1, 2, timeout=5) == 3
        with pytest.raises(RemoteInvocationError, match="gate timed out"):
            await lc.call("e", "add", 7, 2, timeout=5)
    assert await asyncio.gather(*(lc.call("e", "add", i, 1, timeout=5)
                                  for i in range(10, 30))) == list(range(11, 31))


async def test_stop_answers_requests_still_waiting_to_start(hosts: Hosts, lc: LatticeClient,
                                                            tmp_path: Path) -> None:
    host = await hosts.start("nu")
    host.rpc.max_in_flight = 1
    await lc.start_component(write(tmp_path, "nap.wat", NAP), "nap", host_id="nu")
    calls = [asyncio.create_task(lc.call("nap", "nap", 3000, timeout=20)) for _ in range(3)]
    while host.rpc.in_flight < 1 or len(host.rpc._backlog) < 2:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    host.stop(timeout=0.2)
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        assert isinstance(outcome, RemoteInvocationError) and outcome.kind == "stopped"
    assert time.monotonic() - started < 3  # answered, not left to their 20 s deadline


async def test_stopping_a_component_answers_its_requests_still_waiting(
        hosts: Hosts, lc: LatticeClient, tmp_path: Path) -> None:
    host = await hosts.start("xi", stop_timeout=0.3)
    host.rpc.max_in_flight = 1
    await lc.start_component(write(tmp_path, "nap.wat", NAP), "nap", host_id="xi")
    running = asyncio.create_task(lc.call("nap", "nap", 1000, timeout=20))
    while host.rpc.in_flight < 1:
        await asyncio.sleep(0.01)
    held = [asyncio.create_task(lc.call("nap", "nap", 1, timeout=20)) for _ in range(2)]
    while len(host.rpc._backlog) < 2:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await lc.stop_component("nap", host_id="xi", timeout=10)
    for outcome in await asyncio.gather(*held, return_exceptions=True):
        assert isinstance(outcome, RemoteInvocationError) and outcome.kind == "stopped"
        assert "before the call started" in str(outcome)
    assert time.monotonic() - started < 5
    await asyncio.gather(running, return_exceptions=True)  # ran on, or stopped: either is fine
    assert not host.rpc._backlog
