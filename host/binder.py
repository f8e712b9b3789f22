"""Keeping one host's link router in step with the links stored in the lattice.

The binder follows the lattice's ``LinkWatch`` (a snapshot, then every change within
milliseconds) and, for each link, decides what serves it *from this host*:

- the target is a provider running in-process here → its implementation object, called
  directly (and the provider hears ``link_put``);
- anything else → a remote target: a provider on NATS (``providers/remote.py``) or, when no
  provider answers to that id, a component called through the lattice RPC;
- the source is a provider here (e.g. messaging delivering to a component) → the provider
  hears ``link_put`` / ``link_del`` and acts on it.

Config changes re-apply every link naming that config; providers starting or stopping here
re-apply theirs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..lattice.codec import decode_result, encode_args
from ..lattice.errors import (
    ConfigNotFound,
    LinkStoreUnavailable,
    LinkTargetUnavailable,
    NoSuchComponent,
)
from ..lattice.links import LinkDef, LinkStore
from ..lattice.linkwatch import LinkWatch
from ..lattice.wit import types as t
from ..lattice.wit.resources import has_resources
from ..providers.remote import RemoteProvider
from ..providers.sdk import Link
from .links import Target

if TYPE_CHECKING:
    from .host import Host

_LOG = logging.getLogger(__name__)
RETRY = 1.0
REMOTE_TIMEOUT = 30.0


def to_link(ld: LinkDef, source_values: dict[str, str], target_values: dict[str, str]) -> Link:
    return Link(source=ld.source_id, target=ld.target_id, namespace=ld.wit_namespace,
                package=ld.wit_package, interfaces=tuple(ld.interfaces), name=ld.name,
                source_config=source_values, target_config=target_values)


class LatticeTarget:
    """A link target somewhere on the lattice: a provider if one answers to the id, else a
    component. What answered is remembered; a provider that vanishes is asked again."""

    def __init__(self, host: Host, link: Link) -> None:
        self.host, self.link = host, link
        self.provider = RemoteProvider(host.nc, host.lattice, link.target, link.source,
                                       link.name, timeout=REMOTE_TIMEOUT)
        self.is_component = False

    async def call(self, iface: t.InterfaceType, function: str, args: tuple[Any, ...]) -> Any:
        local = self.host.local_component(self.link.target)
        if local is not None:  # the target component runs here: no NATS round trip
            return await local.invoke(f"{iface.name}#{function}", *args,
                                      caller=self.link.source)
        if not self.is_component:
            try:
                return await self.provider.call(iface, function, args)
            except LinkTargetUnavailable:
                if not await self._component_exists():
                    raise
                self.is_component = True
        return await self._call_component(iface, function, args)

    async def _component_exists(self) -> bool:
        try:
            await self.host.rpc_caller.describe(self.link.target, timeout=2.0)
            return True
        except NoSuchComponent:
            return False
        except Exception:
            return False

    async def _call_component(self, iface: t.InterfaceType, function: str,
                              args: tuple[Any, ...]) -> Any:
        ft = iface.functions[function]
        name = f"{iface.name}#{function}"
        if any(has_resources(p) for _, p in ft.params) or has_resources(ft.result):
            raise LinkTargetUnavailable(self.link.source, name, self.link.target,
                                        "resources cannot cross to another component")
        body = encode_args(list(args), ft.params)
        try:
            reply = await self.host.rpc_caller.call(self.link.target, name, body,
                                                    timeout=REMOTE_TIMEOUT)
        except NoSuchComponent:
            self.is_component = False
            raise LinkTargetUnavailable(self.link.source, name, self.link.target,
                                        "no host runs it") from None
        return decode_result(reply.data, ft.result)


class LinkBinder:
    """Applies the lattice's links to one host (its ``links`` router and its providers)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.watch: LinkWatch | None = None
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()
        self._applied: dict[tuple[str, str, str], Link] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"links {self.host.host_id}")

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop following links; bounded, since a JetStream consumer may be slow to let go."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=timeout)
        if self.watch is not None:
            stopping = asyncio.ensure_future(self.watch.stop())
            await asyncio.wait({stopping}, timeout=timeout)

    async def _run(self) -> None:
        store = LinkStore(self.host.nc, self.host.lattice)
        while True:
            try:
                self.watch = store.watch()
                async with self.watch as changes:
                    async for change in changes:
                        await self._on_change(change.op, change.link, change.config)
            except asyncio.CancelledError:
                raise
            except (LinkStoreUnavailable, Exception) as exc:
                _LOG.warning("link watch failed (%s); retrying in %.0f s", exc, RETRY)
                await asyncio.sleep(RETRY)

    async def _on_change(self, op: str, ld: LinkDef | None, config: Any) -> None:
        if op == "synced":
            # A watch restarted after a failure reports puts only: links deleted meanwhile
            # are the ones applied here that the snapshot no longer holds.
            if self.watch is not None:
                current = self.watch.links
                for key, link in list(self._applied.items()):
                    if key not in current:
                        await self._unapply(key, link)
            self.synced.set()
            return
        if ld is not None:
            if op == "put":
                await self.apply(ld)
            else:
                await self.remove(ld)
        elif config is not None and self.watch is not None:
            for other in list(self.watch.links.values()):
                if config.name in (other.source_config, other.target_config):
                    await self.apply(other)

    def _resolve(self, ld: LinkDef) -> Link:
        try:
            src, dst = self.watch.resolve(ld) if self.watch else ({}, {})
        except ConfigNotFound as exc:
            _LOG.warning("%s; applying link without it", exc)
            src, dst = {}, {}
        return to_link(ld, src, dst)

    async def apply(self, ld: LinkDef) -> None:
        """Bind (or rebind) one link on this host."""
        link = self._resolve(ld)
        host = self.host
        old = self._applied.get(ld.key)
        if old is not None and set(old.interfaces) - set(link.interfaces):
            host.links.unbind_link(old)  # replaced by a link that names fewer interfaces
        if old is not None and old.target != link.target:
            previous = host.providers.local(old.target)
            if previous is not None:  # relinked elsewhere: the old provider lets go
                await tell_provider(previous.link_del(old), old)
        local_target = host.providers.local(link.target)
        if local_target is not None:
            await tell_provider(local_target.link_put(link), link)
            host.links.bind_link(Target(link.target, link, implementation=(
                lambda iface, p=local_target, lk=link: p.implementation(iface, lk))))
        else:
            host.links.bind_link(Target(link.target, link,
                                        remote=LatticeTarget(host, link).call))
        local_source = host.providers.local(link.source)
        if local_source is not None:
            await tell_provider(local_source.link_put(link), link)
        self._applied[ld.key] = link

    async def remove(self, ld: LinkDef) -> None:
        await self._unapply(ld.key, self._applied.get(ld.key) or self._resolve(ld))

    async def _unapply(self, key: tuple[str, str, str], link: Link) -> None:
        self._applied.pop(key, None)
        self.host.links.unbind_link(link)
        for pid in (link.target, link.source):
            provider = self.host.providers.local(pid)
            if provider is not None:
                await tell_provider(provider.link_del(link), link)

    async def provider_changed(self, provider_id: str) -> None:
        """A provider started or stopped here: re-apply the links that involve it."""
        if self.watch is None:
            return
        for ld in list(self.watch.links.values()):
            if provider_id in (ld.source_id, ld.target_id):
                await self.apply(ld)


async def tell_provider(awaitable: Any, link: Link) -> None:
    """A provider's link_put/link_del: errors are logged, never stop the binder."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(awaitable, 10.0)
    except Exception as exc:
        _LOG.warning("provider refused link %s -> %s (%s): %s", link.source, link.target,
                     link.name, exc)
    finally:
        if time.monotonic() - started > 1.0:
            _LOG.info("provider took %.1f s to take link %s", time.monotonic() - started,
                      link.key)

