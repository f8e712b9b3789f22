"""Link-bound imports: a component's imports are served by whatever its links point at *now*.

Every import of a component that is neither native WASI nor registered statically on the
runtime gets a *dispatcher* (``linked_imports``): each call looks up the current target of
``(component, interface, link name)`` in the host's ``LinkRouter`` and forwards to it. So a
link put or deleted at runtime takes effect on the next call, with no restart and no new
instance: relinking a counter from NATS KV to Redis is one ``bind``.

- No target → ``NoLink`` at once, naming the component, the import and the link name.
- An in-process provider target is called directly (its coroutine awaited on the host loop).
- A remote target (a component on another host, a standalone provider) is a ``Target`` whose
  ``call`` goes over the lattice with the call's deadline (``LinkTargetUnavailable`` when it
  does not answer).

Dispatchers are coroutines, so linked components always run through the bridged path
(``runtime/bridged.py``); a sync provider method costs one extra await, not a thread hop.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..lattice.errors import NoLink
from ..lattice.wit import types as t
from ..lattice.wit.values import Ok
from ..providers.sdk import Link, resolve_call, unversioned
from .runtime.hostresources import TABLE
from .runtime.imports import NATIVE_WASI, HostImports

RemoteCall = Callable[[t.InterfaceType, str, tuple[Any, ...]], Awaitable[Any]]
"""``await call(interface, function, args)`` for a target across the lattice."""


@dataclass
class Target:
    """What serves one link: an in-process implementation source, or a remote call."""

    target_id: str
    link: Link
    implementation: Callable[[str], Any] | None = None
    """``implementation("store@0.2.0-draft")`` → the object serving that interface version."""
    remote: RemoteCall | None = None
    _impls: dict[str, Any] = field(default_factory=dict, repr=False)

    def impl_for(self, short_versioned: str) -> Any:
        impl = self._impls.get(short_versioned)
        if impl is None and self.implementation is not None:
            impl = self._impls[short_versioned] = self.implementation(short_versioned)
        return impl


class LinkRouter:
    """The host's current link targets by (source component, unversioned interface, name)."""

    def __init__(self) -> None:
        self._targets: dict[tuple[str, str, str], Target] = {}
        self._lock = threading.Lock()

    def bind(self, source: str, interface: str, target: Target, name: str = "default") -> None:
        with self._lock:
            self._targets[(source, unversioned(interface), name)] = target

    def unbind(self, source: str, interface: str, name: str = "default") -> Target | None:
        with self._lock:
            return self._targets.pop((source, unversioned(interface), name), None)

    def bind_link(self, target: Target) -> None:
        """Bind every interface of ``target.link``."""
        link = target.link
        for iface in link.interfaces:
            self.bind(link.source, link.qualified(iface), target, link.name)

    def unbind_link(self, link: Link) -> None:
        for iface in link.interfaces:
            self.unbind(link.source, link.qualified(iface), link.name)

    def lookup(self, source: str, interface: str, name: str = "default") -> Target | None:
        return self._targets.get((source, interface, name))

    def targets(self) -> Iterator[tuple[tuple[str, str, str], Target]]:
        with self._lock:
            return iter(list(self._targets.items()))


class _Dispatch(Mapping[str, Callable[..., Any]]):
    """The functions of one imported interface, each forwarding to the current target."""

    def __init__(self, component_id: str, iface: t.InterfaceType, router: LinkRouter,
                 link_name: str) -> None:
        self._funcs = {name: self._make(component_id, iface, name, router, link_name)
                       for name in iface.functions}

    def __getitem__(self, key: str) -> Callable[..., Any]:
        return self._funcs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._funcs)

    def __len__(self) -> int:
        return len(self._funcs)

    @staticmethod
    def _make(component_id: str, iface: t.InterfaceType, fname: str, router: LinkRouter,
              link_name: str) -> Callable[..., Any]:
        key = unversioned(iface.name)
        short = iface.name.split("/", 1)[1]  # "store@0.2.0-draft": what providers are asked
        qualified = f"{iface.name}#{fname}"

        def call(store: int, *args: Any) -> Any:
            # The link name is read now, in the guest's call (set-link-name is per instance).
            return forward(LINK_NAMES.get(store, key, link_name), args)
        call.trellis_store = True  # type: ignore[attr-defined]
        call.trellis_async = True  # type: ignore[attr-defined]

        async def forward(name: str, args: tuple[Any, ...]) -> Any:
            target = router.lookup(component_id, key, name)
            if target is None:
                raise NoLink(component_id, qualified, name)
            if target.remote is not None:
                return await target.remote(iface, fname, args)
            fn, args = resolve_call(target.impl_for(short), fname, args)
            out = fn(*args)
            if inspect.isawaitable(out):
                out = await out
            return out

        call.__qualname__ = f"linked {qualified}"
        return call


class LinkNames:
    """Link names chosen by guests (``wasmcloud:bus/lattice.set-link-name``), per invocation
    as in wasmCloud: kept per Store and cleared when a pooled instance goes back idle."""

    def __init__(self) -> None:
        self._names: dict[int, dict[str, str]] = {}
        self._hooked = False

    def get(self, store: int, interface: str, default: str) -> str:
        names = self._names.get(store)
        return default if names is None else names.get(interface, default)

    def set(self, store: int, interface: str, name: str) -> None:
        if not self._hooked:  # only once a guest picks a name: pooled calls pay nothing before
            self._hooked = True
            TABLE.on_forget.append(self.forget)
            TABLE.on_idle.append(self.forget)  # a pooled instance starts each call afresh
        self._names.setdefault(store, {})[interface] = name

    def forget(self, store: int) -> None:
        self._names.pop(store, None)


LINK_NAMES = LinkNames()


class CallTargetInterface:
    """``wasmcloud:bus/lattice`` ``call-target-interface``: which interface a name is for."""

    def __init__(self, namespace: str, package: str, interface: str) -> None:
        self.key = f"{namespace}:{package}/{interface}"


class BusLattice:
    """``wasmcloud:bus/lattice``: a component picks the link name of its next calls, so one
    component can use two providers of one interface (``trellis link put … --name cache``)."""

    CallTargetInterface = CallTargetInterface

    def __init__(self, returns_result: bool) -> None:
        # 1.0.0 returns nothing; later drafts return result<_, string>.
        def set_link_name(store: int, name: str, interfaces: list[Any]) -> Any:
            for iface in interfaces:
                LINK_NAMES.set(store, iface.key, name)
            return Ok(None) if returns_result else None
        set_link_name.trellis_store = True  # type: ignore[attr-defined]
        self.set_link_name = set_link_name


def linkable(iface_name: str, static: HostImports) -> bool:
    """Whether links serve this import: not native WASI, not registered on the runtime."""
    return not NATIVE_WASI.match(iface_name) and static.find(iface_name) is None


def linked_imports(component_id: str, world: t.WorldType, router: LinkRouter,
                   static: HostImports, *, link_name: str = "default") -> HostImports:
    """The imports of one component: ``static`` plus a dispatcher per linkable interface."""
    imports = static.copy()
    for iface in world.imports:
        if unversioned(iface.name) == "wasmcloud:bus/lattice" and static.find(iface.name) is None:
            ft = iface.functions.get("set-link-name")
            imports.register(iface.name, BusLattice(ft is not None and ft.result is not None))
        elif iface.functions and linkable(iface.name, static):
            imports.register(iface.name, _Dispatch(component_id, iface, router, link_name))
    return imports
