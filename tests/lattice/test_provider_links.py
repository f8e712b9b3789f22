"""Providers and links across real hosts: start providers, link, relink, unlink, kill one.

A WAT component importing wasmCloud's `wasi:keyvalue/store@0.2.0-draft` runs on a host; links
stored in the lattice's KV decide which provider serves it, and every change reaches the host
while the component keeps running.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from _lattice import Events, Hosts, eventually, write
from _wat import KV_DRAFT
from trellis.lattice.client import LatticeClient
from trellis.lattice.errors import LinkTargetUnavailable, NoLink
from trellis.lattice.links import LinkDef

KV = "wasi:keyvalue"


def kv_link(source: str, target: str, name: str = "default") -> LinkDef:
    return LinkDef(source_id=source, target_id=target, wit_namespace="wasi",
                   wit_package="keyvalue", interfaces=["store", "atomics", "batch"], name=name)


async def test_relink_unlink_and_heal_without_restarting(
        hosts: Hosts, lc: LatticeClient, lattice: str, tmp_path: Path) -> None:
    await hosts.start("kvh")
    prefix = f"trellis-test-{uuid.uuid4().hex[:8]}:"
    await lc.put_config("redis", {"url": "redis://127.0.0.1:6379", "key_prefix": prefix})
    await lc.start_provider("keyvalue-memory", "kv-mem", host_id="kvh")
    await lc.start_provider("keyvalue-redis", "kv-redis", host_id="kvh", config="redis")
    inv = await lc.get_inventory("kvh")
    assert {p.provider_id for p in inv.providers} == {"kv-mem", "kv-redis"}
    await lc.start_component(write(tmp_path, "kv.wat", KV_DRAFT), "kvapp", host_id="kvh")

    started = time.monotonic()
    with pytest.raises(NoLink, match=r"wasi:keyvalue/store@0.2.0-draft#open.*'default'"):
        await lc.call("kvapp", "put", "b", "k", b"v", timeout=10)
    assert time.monotonic() - started < 2.0  # at once, not at the deadline

    await lc.put_link(kv_link("kvapp", "kv-mem"))

    async def stored_in_memory() -> None:
        assert await lc.call("kvapp", "put", "b", "k", b"memory") == 0
    await eventually(stored_in_memory)
    assert await lc.call("kvapp", "get", "b", "k") == b"memory"

    await lc.put_link(kv_link("kvapp", "kv-redis"))  # relink: same component, no restart

    async def redis_is_empty() -> None:
        assert await lc.call("kvapp", "get", "b", "k") == b""
    await eventually(redis_is_empty)
    assert await lc.call("kvapp", "put", "b", "k", b"redis") == 0

    await lc.put_link(kv_link("kvapp", "kv-mem"))

    async def memory_again() -> None:
        assert await lc.call("kvapp", "get", "b", "k") == b"memory"
    await eventually(memory_again)

    assert await lc.del_link("kvapp", KV)

    async def unlinked() -> None:
        with pytest.raises(NoLink):
            await lc.call("kvapp", "get", "b", "k")
    await eventually(unlinked)
    await lc.put_link(kv_link("kvapp", "kv-redis"))

    async def healed() -> None:
        assert await lc.call("kvapp", "get", "b", "k") == b"redis"
    await eventually(healed)
    assert (await lc.get_inventory("kvh")).components[0].component_id == "kvapp"


async def test_component_on_another_host_uses_an_in_process_provider(
        hosts: Hosts, lc: LatticeClient, tmp_path: Path) -> None:
    await hosts.start("prov")
    await hosts.start("app")
    await lc.start_provider("keyvalue-memory", "shared-kv", host_id="prov")
    await lc.start_component(write(tmp_path, "kv.wat", KV_DRAFT), "remote-kv", host_id="app")
    await lc.put_link(kv_link("remote-kv", "shared-kv"))

    async def through_nats() -> None:
        assert await lc.call("remote-kv", "put", "b", "x", b"far away") == 0
    await eventually(through_nats)
    assert await lc.call("remote-kv", "get", "b", "x") == b"far away"
    await lc.stop_provider("shared-kv")

    async def gone() -> None:
        with pytest.raises(LinkTargetUnavailable, match="shared-kv"):
            await lc.call("remote-kv", "get", "b", "x", timeout=10)
    await eventually(gone)


async def test_standalone_provider_is_restarted_after_it_dies(
        hosts: Hosts, lc: LatticeClient, lattice: str, tmp_path: Path) -> None:
    events = await Events(lc.nc, lattice).start()
    host = await hosts.start("sup")
    host.providers.backoff_start = 4.0  # a window in which the provider is down
    info = await lc.start_provider("keyvalue-memory", "kv-alone", host_id="sup", standalone=True)
    assert info.mode == "standalone" and info.pid
    await lc.start_component(write(tmp_path, "kv.wat", KV_DRAFT), "kvapp2", host_id="sup")
    await lc.put_link(kv_link("kvapp2", "kv-alone"))

    async def served() -> None:
        assert await lc.call("kvapp2", "put", "b", "k", b"1") == 0
    await eventually(served, timeout=20)  # the child process starts a Python interpreter

    os.kill(info.pid, signal.SIGKILL)
    # A call already on its way to the dying process fails at its own deadline (typed); once
    # NATS has seen the process go, calls fail at once until the host has restarted it.
    fast = None
    for _ in range(50):
        started = time.monotonic()
        try:
            await lc.call("kvapp2", "put", "b", "k", b"2", timeout=1)
        except LinkTargetUnavailable as exc:
            fast, elapsed = exc, time.monotonic() - started
            break
        except TimeoutError:  # DeadlineExceeded on the host, or the caller's own deadline
            continue
        await asyncio.sleep(0.02)
    assert fast is not None and "kv-alone" in str(fast)
    assert elapsed < 1.0
    await events.wait_for("provider_exited", timeout=10)
    await events.wait_for("provider_restarted", timeout=20)
    await eventually(served, timeout=20)  # no manual step
    inv = await lc.get_inventory("sup")
    assert inv.providers[0].restarts == 1
