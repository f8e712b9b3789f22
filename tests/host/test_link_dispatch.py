"""Link-bound imports on one host: bind, relink and unlink while the component keeps running."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from _wat import BUS_LINK_NAME, HOST_IMPORT, HOST_RESOURCE
from trellis.host.links import LinkRouter, Target, linked_imports
from trellis.host.runtime.imports import HostImports
from trellis.host.runtime.instances import InstancePolicy
from trellis.host.runtime.runtime import ComponentConfig, Runtime
from trellis.lattice.errors import GuestTrap, NoLink
from trellis.providers.sdk import Link, Provider


class Multiplier(Provider):
    """``example:host/math`` whose ``double`` multiplies by the configured factor."""

    name = "multiplier"
    interfaces = ("example:host/math",)

    def implementation(self, interface: str, link: Link) -> Any:
        self.asked = interface
        return self

    async def double(self, x: int) -> int:
        await asyncio.sleep(0)
        return x * int(self.config["factor"])


def _link(source: str, target: str = "mult", name: str = "default") -> Link:
    return Link(source=source, target=target, namespace="example", package="host",
                interfaces=("math",), name=name)


def _target(provider: Provider, link: Link) -> Target:
    return Target(link.target, link, lambda iface: provider.implementation(iface, link))


@pytest.fixture(params=["fresh", "pooled"])
def config(request: pytest.FixtureRequest) -> ComponentConfig:
    return ComponentConfig(policy=InstancePolicy(mode=request.param))


async def test_unlinked_import_fails_at_once_then_link_heals_it(
        tmp_path: Path, config: ComponentConfig) -> None:
    router = LinkRouter()
    async with Runtime(cache_dir=tmp_path) as rt:
        comp = rt.load(HOST_IMPORT.encode(), name="quad", config=config,
                       imports=lambda c: linked_imports("quad", c.world, router, rt.imports))
        started = time.monotonic()
        with pytest.raises(NoLink) as info:
            await comp.invoke("quadruple", 3, timeout=10)
        assert time.monotonic() - started < 1.0  # at once, not at the deadline
        err = info.value
        assert err.component == "quad" and err.link_name == "default"
        assert "example:host/math#double" in str(err) and "trellis link put quad" in str(err)

        doubler = Multiplier({"factor": "2"})
        router.bind_link(_target(doubler, _link("quad")))
        assert await comp.invoke("quadruple", 3) == 12
        assert doubler.asked == "math"  # the interface name, as the component imports it


async def test_relink_takes_effect_without_restarting(tmp_path: Path,
                                                      config: ComponentConfig) -> None:
    router = LinkRouter()
    async with Runtime(cache_dir=tmp_path) as rt:
        comp = rt.load(HOST_IMPORT.encode(), name="quad", config=config,
                       imports=lambda c: linked_imports("quad", c.world, router, rt.imports))
        router.bind_link(_target(Multiplier({"factor": "2"}), _link("quad")))
        assert await comp.invoke("quadruple", 1) == 4
        created = comp.instances.stats.created
        router.bind_link(_target(Multiplier({"factor": "3"}), _link("quad", "triple")))
        assert await comp.invoke("quadruple", 1) == 9
        if config.policy.mode == "pooled":
            assert comp.instances.stats.created == created  # same warm instance, new target
        router.unbind_link(_link("quad"))
        with pytest.raises(NoLink):
            await comp.invoke("quadruple", 1)
        # The blocking path (a worker thread) sees the same links.
        router.bind_link(_target(Multiplier({"factor": "5"}), _link("quad")))
        assert await asyncio.to_thread(comp.call, "quadruple", 1) == 25


async def test_links_are_per_source_component(tmp_path: Path) -> None:
    router = LinkRouter()
    async with Runtime(cache_dir=tmp_path) as rt:
        def load(cid: str) -> Any:
            return rt.load(HOST_IMPORT.encode(), name=cid,
                           imports=lambda c: linked_imports(cid, c.world, router, rt.imports))
        a, b = load("a"), load("b")
        router.bind_link(_target(Multiplier({"factor": "2"}), _link("a")))
        router.bind_link(_target(Multiplier({"factor": "10"}), _link("b")))
        assert await a.invoke("quadruple", 1) == 4
        assert await b.invoke("quadruple", 1) == 100


async def test_remote_target_and_static_imports_win(tmp_path: Path) -> None:
    router = LinkRouter()
    seen: list[tuple[str, str, tuple[Any, ...]]] = []

    async def remote(iface: Any, function: str, args: tuple[Any, ...]) -> Any:
        seen.append((iface.name, function, args))
        return args[0] + 1

    static = HostImports()
    async with Runtime(cache_dir=tmp_path, imports=static) as rt:
        comp = rt.load(HOST_IMPORT.encode(), name="quad",
                       imports=lambda c: linked_imports("quad", c.world, router, rt.imports))
        link = _link("quad", "elsewhere")
        router.bind_link(Target("elsewhere", link, remote=remote))
        assert await comp.invoke("quadruple", 1) == 3
        assert seen[0] == ("example:host/math", "double", (1,))

        static.register("example:host/math", {"double": lambda x: x * 7})
        comp2 = rt.load(HOST_IMPORT.encode(), name="quad",
                        imports=lambda c: linked_imports("quad", c.world, router, rt.imports))
        assert comp2.call("quadruple", 1) == 49  # registered on the runtime: no dispatcher


async def test_linked_provider_resources(tmp_path: Path) -> None:
    class KvBucket:
        def __init__(self, ident: int) -> None:
            self.ident = ident

        async def get(self, key: int) -> int:
            return self.ident * 1000 + key

    class Kv(Provider):
        interfaces = ("example:kv/store",)
        Bucket = KvBucket

        def open(self, ident: int) -> KvBucket:
            return KvBucket(ident)

    router = LinkRouter()
    async with Runtime(cache_dir=tmp_path) as rt:
        comp = rt.load(HOST_RESOURCE.encode(), name="kv",
                       imports=lambda c: linked_imports("kv", c.world, router, rt.imports))
        link = Link(source="kv", target="p", namespace="example", package="kv",
                    interfaces=("store",))
        router.bind_link(_target(Kv(), link))
        assert await comp.invoke("lookup", 2, 5) == 2005


async def test_provider_exception_is_a_trap_naming_the_import(tmp_path: Path) -> None:
    class Broken(Provider):
        async def double(self, x: int) -> int:
            raise ConnectionError("backend down")

    router = LinkRouter()
    async with Runtime(cache_dir=tmp_path) as rt:
        comp = rt.load(HOST_IMPORT.encode(), name="quad",
                       imports=lambda c: linked_imports("quad", c.world, router, rt.imports))
        router.bind_link(_target(Broken(), _link("quad")))
        with pytest.raises(GuestTrap, match="example:host/math#double.*backend down"):
            await comp.invoke("quadruple", 1)


async def test_one_component_two_providers_of_one_interface_by_link_name(
        tmp_path: Path, config: ComponentConfig) -> None:
    """wasmCloud's `wasmcloud:bus/lattice.set-link-name` picks the link of the next calls."""
    router = LinkRouter()
    async with Runtime(cache_dir=tmp_path) as rt:
        comp = rt.load(BUS_LINK_NAME.encode(), name="bus", config=config,
                       imports=lambda c: linked_imports("bus", c.world, router, rt.imports))
        router.bind_link(_target(Multiplier({"factor": "2"}), _link("bus")))
        with pytest.raises(NoLink, match="'cache'"):
            await comp.invoke("quad-via", 1, 1)  # the named link is not there yet
        router.bind_link(_target(Multiplier({"factor": "3"}), _link("bus", "three", "cache")))
        assert await comp.invoke("quad-via", 0, 1) == 4  # default link
        assert await comp.invoke("quad-via", 1, 1) == 9  # link "cache"
        assert await comp.invoke("quad-via", 0, 1) == 4  # each invocation starts at default


def test_a_guest_cannot_reach_the_provider_lifecycle() -> None:
    """The guest's own WIT names the functions: `stop` or `link-del` must not resolve to the
    provider's lifecycle methods."""
    from trellis.providers.sdk import resolve_call

    provider = Multiplier({"factor": "2"})
    for name in ("stop", "start", "link-del", "health", "implementation"):
        with pytest.raises(LookupError, match="not an interface function"):
            resolve_call(provider, name, ())
    fn, _ = resolve_call(provider, "double", (1,))
    assert fn == provider.double


async def test_a_link_put_again_replaces_the_providers_copy() -> None:
    provider = Multiplier({"factor": "2"})
    first = Link("c", "p", "example", "host", ("math",), target_config={"v": "1"})
    second = Link("c", "p", "example", "host", ("math", "more"), target_config={"v": "2"})
    await provider.link_put(first)
    await provider.link_put(second)
    assert list(provider.links.values()) == [second]
    await provider.link_del(first)  # the same link, whatever its interfaces
    assert provider.links == {}
