"""wasmtime's pooling allocator under Trellis (``PoolConfig``): clean fresh instances from
reused slots, one shared pool per process, a typed capacity error when it is full, and the
settings of the daemons."""

from __future__ import annotations

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
    c = Runtime(cache_dir=tmp_path, pool=SMALL)
    try:
        assert c.engine is not a.engine, "the last close let go of the shared engine"
        assert c.load(STATEFUL.encode(), name="stateful").call("bump") == 1042
    finally:
        c.close()


def test_a_pool_that_does_not_fit_falls_back_to_on_demand(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # wasmtime aborts the process when a pool cannot be reserved: Trellis must not ask.
    monkeypatch.setattr(engine_mod, "MAX_POOL_RESERVATION", SMALL.reservation - 1)
    with caplog.at_level(logging.WARNING, logger="trellis.host.runtime.engine"):
        engine = Engine(pool=SMALL)
    try:
        assert engine.pool is None
        assert "allocated on demand" in caplog.text and "TiB" in caplog.text
    finally:
        engine.close()
    with Runtime(cache_dir=tmp_path, pool=SMALL) as rt:  # works, unpooled
        assert rt.engine.pool is None
        assert rt.load(STATEFUL.encode(), name="stateful").call("bump") == 1042


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
