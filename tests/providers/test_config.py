"""The ``config`` provider: wasi:config/store values from the link's named config."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from pathlib import Path

import pytest
from trellis.host.build import build_python_component
from trellis.host.runtime.imports import HostImports
from trellis.host.runtime.runtime import Runtime
from trellis.lattice.wit.values import Ok
from trellis.providers.config import ConfigProvider, ConfigStore
from trellis.providers.registry import provider_class
from trellis.providers.sdk import Link, ProviderContext

REPO = Path(__file__).resolve().parents[2]
GUEST_DIR = REPO / "tests" / "guests" / "config-reader"
CONFIG_WIT = "wasi-runtime-config-2024-09-27"
LINK = Link(source="reader", target="config", namespace="wasi", package="config",
            interfaces=("store",), target_config={"db_url": "postgres://db", "mode": "link"})


async def test_values_merge_link_config_over_provider_defaults() -> None:
    provider = provider_class("config")({"mode": "default", "region": "eu"})
    assert isinstance(provider, ConfigProvider)
    await provider.start(ProviderContext("config"))
    store = provider.implementation("store", LINK)
    assert isinstance(store, ConfigStore)
    assert store.get("db_url") == Ok("postgres://db")
    assert store.get("mode") == Ok("link")  # the link's named config wins
    assert store.get("region") == Ok("eu")
    assert store.get("missing") == Ok(None)
    assert store.get_all() == Ok([("db_url", "postgres://db"), ("mode", "link"),
                                  ("region", "eu")])
    other = provider.implementation("store", dataclasses.replace(LINK, source="other",
                                                                 target_config={}))
    assert other.get_all() == Ok([("mode", "default"), ("region", "eu")])


async def test_relinking_with_new_config_takes_effect() -> None:
    provider = ConfigProvider()
    await provider.link_put(LINK)
    store = provider.implementation("store", LINK)
    assert store.get("mode") == Ok("link")
    await provider.link_put(dataclasses.replace(LINK, target_config={"mode": "changed"}))
    assert store.get("mode") == Ok("changed")
    assert store.get("db_url") == Ok(None)


@pytest.fixture(scope="module")
def config_reader_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The componentize-py guest; wasi:config's WIT comes from the installed spin-sdk wheel."""
    spec = importlib.util.find_spec("spin_sdk")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("spin-sdk is not installed: it provides the wasi:config WIT")
    deps = Path(next(iter(spec.submodule_search_locations))) / "wit" / "deps"
    wit = tmp_path_factory.mktemp("config-reader") / "wit"
    shutil.copytree(GUEST_DIR / "wit", wit)
    shutil.copytree(deps / CONFIG_WIT, wit / "deps" / CONFIG_WIT)
    return build_python_component(GUEST_DIR, wit=wit)


@pytest.mark.slow
async def test_guest_reads_config_through_wasmtime(config_reader_wasm: Path,
                                                   tmp_path: Path) -> None:
    provider = ConfigProvider({"region": "eu"})
    await provider.start(ProviderContext("config"))
    imports = HostImports()
    imports.register("wasi:config/store", provider.implementation("store", LINK))
    async with Runtime(imports=imports, cache_dir=tmp_path) as rt:
        comp = rt.load(config_reader_wasm)
        assert await comp.invoke("lookup", "db_url") == Ok("postgres://db")
        assert await comp.invoke("lookup", "nope") == Ok(None)
        assert await comp.invoke("all") == Ok([("db_url", "postgres://db"), ("mode", "link"),
                                               ("region", "eu")])
