"""The provider SDK: a Python class that implements WIT interfaces for components.

A provider is a ``Provider`` subclass naming the interfaces it implements. The host starts it
(``start``), tells it about each link that targets it (``link_put`` / ``link_del``) and asks it
for an *implementation* per linked interface: an object whose methods are the interface's
functions, in the Trellis value model (``lattice/wit/values.py``) and named in snake_case
(``list-keys`` → ``list_keys``). Methods may be coroutines: the guest then waits, suspended,
while the provider awaits NATS, Redis or PostgreSQL, and the host's event loop keeps serving.

Resources (a key-value ``bucket``, a blob ``container``) are plain Python objects: return one
where WIT says ``own<bucket>``, and the guest's ``borrow<bucket>`` comes back as that object.
Their methods are looked up on the object's class, found as the attribute named after the
resource in CamelCase on the implementation (``Bucket``) or in its ``resources`` mapping; a
``close()`` method runs when the guest drops its handle.

A provider never knows whether it runs in-process (the default, inside a host) or standalone
(``trellis provider run``, serving the same implementation over NATS): the host decides.

A whole provider, for ``example:greet/greeting`` { greet: func(name: string) -> string }::

    class Greeter(Provider):
        name = "greeter"
        interfaces = ("example:greet/greeting",)

        def implementation(self, interface, link):
            return self  # one object serves every link

        async def greet(self, name: str) -> str:
            return f"{self.config.get('greeting', 'Hello')}, {name}!"
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Link:
    """One declared binding: ``source``'s imports of ``namespace:package`` ``interfaces`` under
    link ``name`` go to ``target`` (a provider id or a component id)."""

    source: str
    target: str
    namespace: str
    package: str
    interfaces: tuple[str, ...]
    name: str = "default"
    source_config: Mapping[str, str] = field(default_factory=dict)
    """Values from the named config the link's ``--source-config`` points at."""
    target_config: Mapping[str, str] = field(default_factory=dict)
    """Values from the named config the link's ``--target-config`` points at (e.g. a bucket,
    the subjects to subscribe to)."""

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies a link: one per source, package and link name (a link put again
        with other interfaces or config replaces it)."""
        return (self.source, f"{self.namespace}:{self.package}", self.name)

    def qualified(self, interface: str) -> str:
        """``wasi:keyvalue/store`` for ``store`` (no version: providers serve them all)."""
        return f"{self.namespace}:{self.package}/{interface}"


@dataclass(frozen=True)
class Health:
    ok: bool = True
    message: str = ""


@dataclass
class ProviderContext:
    """What a provider gets from the host that runs it."""

    provider_id: str
    lattice: str = "default"
    host_id: str = ""
    nc: Any = None
    """The host's NATS connection (``nats.aio.client.Client``), ``None`` when not on a lattice."""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("trellis.provider"))
    invoke: Callable[..., Awaitable[Any]] | None = None
    """``await invoke(component_id, function, *args, timeout=None)``: call a component (for
    providers that deliver events, e.g. messaging); through the invocation chain."""


class ProviderError(Exception):
    """A provider could not start or serve (bad config, backend unreachable); the message
    says what to fix."""


class Provider:
    """Base class of every provider; override what you need.

    ``config`` holds the provider's own settings (``url=redis://…``) from the named config given
    at start. ``implementation`` must be cheap: the host calls it when a link is put."""

    name: ClassVar[str] = ""
    """The built-in name (``keyvalue-redis``) or any descriptive name."""
    interfaces: ClassVar[tuple[str, ...]] = ()
    """Unversioned ``namespace:package/interface`` names this provider implements."""

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        self.config: dict[str, str] = dict(config or {})
        self.context: ProviderContext | None = None
        self.links: dict[tuple[str, str, str], Link] = {}

    async def start(self, context: ProviderContext) -> None:
        """Connect to the backend. Raise ``ProviderError`` with a fix-it message on failure."""
        self.context = context

    async def stop(self) -> None:
        """Release connections; called once, after every link is gone."""

    async def health(self) -> Health:
        return Health()

    async def link_put(self, link: Link) -> None:
        """A link to this provider was put (or its config changed)."""
        self.links[link.key] = link

    async def link_del(self, link: Link) -> None:
        self.links.pop(link.key, None)

    def implementation(self, interface: str, link: Link) -> Any:
        """The object serving ``interface`` for ``link``'s source component. ``interface`` is
        the name within the package with the version the component imports, e.g.
        ``store@0.2.0-draft`` (or ``store`` when called without one): draft versions of an
        interface can differ in shape, and only the version tells them apart."""
        return self

    @property
    def log(self) -> logging.Logger:
        return self.context.log if self.context else logging.getLogger("trellis.provider")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "interfaces": list(self.interfaces)}


def unversioned(interface: str) -> str:
    """``wasi:keyvalue/store@0.2.0-draft`` → ``wasi:keyvalue/store``."""
    return interface.split("@", 1)[0]


def _snake(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


def resource_class(impl: Any, resource: str) -> Any | None:
    """The class implementing ``resource``: ``impl.resources[name]``, else the attribute named
    in CamelCase (``outgoing-value`` → ``OutgoingValue``)."""
    table = getattr(impl, "resources", None)
    if isinstance(table, Mapping) and resource in table:
        return table[resource]
    return getattr(impl, "".join(p.capitalize() for p in resource.split("-")), None)


def resolve_call(impl: Any, function: str, args: tuple[Any, ...]
                 ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """The callable serving WIT ``function`` on ``impl``, and the arguments to give it:
    ``f`` → ``impl.f``; ``[method]r.f`` → the resource object's ``f`` (the object is
    ``args[0]``); ``[static]r.f`` → ``R.f``; ``[constructor]r`` → ``R``; a mapping is looked up
    by the WIT name. Raises ``LookupError`` naming what is missing."""
    if isinstance(impl, Mapping):
        fn = impl.get(function)
    elif not function.startswith("[") and isinstance(impl, Provider) \
            and hasattr(Provider, _snake(function)):
        # The guest's WIT names the function: never let it reach the lifecycle (stop, start…).
        raise LookupError(f"{function!r} is not an interface function of {type(impl).__name__}")
    elif function.startswith("["):
        kind, _, rest = function[1:].partition("]")
        res, _, member = rest.partition(".")
        if kind == "method":
            fn = getattr(args[0], _snake(member), None) if args else None
            args = args[1:]
        else:
            cls = resource_class(impl, res)
            fn = cls if kind == "constructor" else getattr(cls, _snake(member), None)
    else:
        fn = getattr(impl, _snake(function), None)
    if not callable(fn):
        raise LookupError(f"the provider implements no {function!r} ({type(impl).__name__})")
    return fn, args
