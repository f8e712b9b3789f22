"""wasmtime's pooling allocator under Trellis (``PoolConfig``): clean fresh instances from
reused slots, one shared pool per process, a typed capacity error when it is full, and the
settings of the daemons."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import pytest
from _wat import STATEFUL
from trellis.host.config import HostConfig, HostConfigError
from trellis.host.runtime import engine as engine_mod
from trellis.host.runtime.engine import Engine, PoolConfig
from trellis.host.runtime.instances import InstancePolicy
from trellis.host.runtime.runtime import ComponentConfig, Runtime
from trellis.lattice.errors import CapacityTimeout, InstancePoolFull
from trellis.lattice.rpc import KIND_CAPACITY, classify

SMALL = PoolConfig(instances=4, keep_resident=2**20)


def test_fresh_instances_from_reused_slots_start_clean(tmp_path: Path) -> None:
    with Runtime(cache_dir=tmp_path, pool=SMALL) as rt:
        assert rt.engine.pool == SMALL
        fresh = rt.load(STATEFUL.encode(), name="stateful")
        # 4 slots, 12 instances: slots are reused, and what kept resident was reset.
        assert [fresh.call("scribble", 4) for _ in range(6)] == [0] * 6
        assert [fresh.call("bump") for _ in range(6)] == [1042] * 6
        assert fresh.instances.stats.created == 12
        # The same calls on one reused instance do see their own state: the checks can fail.
        pooled = rt.load(STATEFUL.encode(), name="stateful-pooled", config=ComponentConfig(
            policy=InstancePolicy(mode="pooled", max_instances=1)))
        assert [pooled.call("bump") for _ in range(2)] == [1042, 2043]
        assert pooled.call("scribble", 1) == 0
        assert pooled.call("scribble", 1) == 2 * 255


async def test_a_full_pool_is_a_capacity_error_until_a_slot_frees(tmp_path: Path) -> None:
    with Runtime(cache_dir=tmp_path, pool=PoolConfig(instances=2, keep_resident=0)) as rt:
        comp = rt.load(STATEFUL.encode(), name="stateful")
        with comp.session() as one, comp.session() as two:
            assert one.call("bump") == two.call("bump") == 1042
            with pytest.raises(InstancePoolFull) as info:
                comp.call("bump")
            assert "TRELLIS_POOL_INSTANCES" in str(info.value)
            with pytest.raises(CapacityTimeout):  # the async path types it alike
                await comp.invoke("bump")
        assert comp.call("bump") == 1042
        assert await comp.invoke("bump") == 1042
    assert classify(info.value)[0] == KIND_CAPACITY  # across hosts: a `capacity` error


def test_a_retired_component_gives_its_slots_back(tmp_path: Path) -> None:
    """A stopped or replaced component's idle and spare instances leave the shared pool."""
    with Runtime(cache_dir=tmp_path, pool=PoolConfig(instances=2, keep_resident=0)) as rt:
        warm = rt.load(STATEFUL.encode(), name="warm", config=ComponentConfig(
            policy=InstancePolicy(mode="pooled", max_instances=1)))
        assert warm.call("bump") == 1042 and warm.instances.idle_count() == 1
        other = rt.load(STATEFUL.encode(), name="other")
        with other.session() as held:  # the pool's second slot
            assert held.call("bump") == 1042
            with pytest.raises(InstancePoolFull):
                other.call("bump")
            warm.instances.retire()
            assert warm.instances.idle_count() == 0
            assert other.call("bump") == 1042  # in the slot warm's idle instance held
        with warm.session() as late:  # a call still running at retirement: not kept after
            late.call("bump")
            warm.instances.retire()
        assert warm.instances.idle_count() == 0


def test_runtimes_of_a_process_share_one_pool(tmp_path: Path) -> None:
    a = Runtime(cache_dir=tmp_path, pool=SMALL)
    b = Runtime(cache_dir=tmp_path, pool=SMALL)
    other = Runtime(cache_dir=tmp_path, pool=PoolConfig(instances=3))
    try:
        assert a.engine is b.engine and a.engine is not other.engine
        comp = b.load(STATEFUL.encode(), name="stateful")
        a.close()  # b still holds the engine: it keeps working
        assert comp.call("bump") == 1042
    finally:
        a.close()
        b.close()
        other.close()
    # Nobody holds it now, yet it stays: wasmtime would unmap its pool only once the collector
    # freed every Store, so a process opening and closing runtimes reserves it once.
    reserved = engine_mod._reserved
    for _ in range(3):
        c = Runtime(cache_dir=tmp_path, pool=SMALL)
        try:
            assert c.engine is a.engine and engine_mod._reserved == reserved
            assert c.load(STATEFUL.encode(), name="stateful").call("bump") == 1042
        finally:
            c.close()


def test_an_unshared_pool_counts_until_collected() -> None:
    pool = PoolConfig(instances=3, keep_resident=3 * 2**20)
    before = engine_mod._reserved
    engine = Engine(pool=pool)
    assert engine.pool == pool and engine_mod._reserved == before + pool.reservation
    engine.close()
    assert engine_mod._reserved == before + pool.reservation  # still mapped until freed
    del engine
    gc.collect()
    assert engine_mod._reserved == before


def test_a_pool_that_does_not_fit_falls_back_to_on_demand(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # wasmtime aborts the process when a pool cannot be reserved: Trellis must not ask.
    big = PoolConfig(instances=5, keep_resident=5 * 2**20)  # shared by no other test
    monkeypatch.setattr(engine_mod, "MAX_POOL_RESERVATION",
                        engine_mod._reserved + big.reservation - 1)
    with caplog.at_level(logging.WARNING, logger="trellis.host.runtime.engine"):
        engine = Engine(pool=big)
    try:
        assert engine.pool is None
        assert "allocated on demand" in caplog.text and "TiB" in caplog.text
    finally:
        engine.close()
    with Runtime(cache_dir=tmp_path, pool=big) as rt:  # works, unpooled
        assert rt.engine.pool is None
        assert rt.load(STATEFUL.encode(), name="stateful").call("bump") == 1042


def test_a_pool_the_address_space_cannot_hold_is_not_asked_for(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Beyond the fixed 64 TiB cap, the kernel is asked for the room first (an aarch64 kernel
    may have far less): wasmtime would abort the process on a failed reservation."""
    huge = PoolConfig(instances=60_000)  # ~240 TiB: more than any x86-64 process can map
    monkeypatch.setattr(engine_mod, "MAX_POOL_RESERVATION", 2**62)
    with caplog.at_level(logging.WARNING, logger="trellis.host.runtime.engine"):
        engine = Engine(pool=huge)
    try:
        assert engine.pool is None and "no room" in caplog.text
    finally:
        engine.close()


def test_host_settings_and_their_variables() -> None:
    assert HostConfig().pool() == PoolConfig()
    config = HostConfig.from_env({"TRELLIS_POOL_INSTANCES": "50",
                                  "TRELLIS_POOL_KEEP_RESIDENT": "8"})
    assert config.pool() == PoolConfig(instances=50, keep_resident=8 * 2**20)
    assert HostConfig.from_env({"TRELLIS_POOL_INSTANCES": "0"}).pool() is None
    with pytest.raises(HostConfigError, match="TRELLIS_POOL_INSTANCES"):
        HostConfig.from_env({"TRELLIS_POOL_INSTANCES": "lots"})
    with pytest.raises(ValueError, match="between 1 and 100000"):
        PoolConfig(instances=0)
