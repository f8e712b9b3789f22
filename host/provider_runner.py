"""``trellis provider run``: one provider as its own process on the lattice.

The process connects to NATS, starts the provider with its named config, serves its
interfaces on ``trellis.prov.{lattice}.{id}.call`` (``providers/remote.py``) and follows the
lattice's links, telling the provider about every link that targets it or comes from it. A
host that started it (``trellis provider start --standalone``) restarts it when it dies.
SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from ..lattice.client import LatticeClient
from ..lattice.connection import NatsOptions, connect
from ..lattice.errors import ConfigNotFound
from ..lattice.links import LinkDef, LinkStore
from ..providers.registry import provider_class
from ..providers.remote import ProviderServer
from ..providers.sdk import Link, Provider, ProviderContext, ProviderError
from .binder import tell_provider, to_link

_LOG = logging.getLogger(__name__)


async def run_provider(name: str, provider_id: str, *, nats_url: str, lattice: str,
                       config_name: str | None = None, ready: asyncio.Event | None = None,
                       stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or a signal arrives).

    Raises:
        ProviderError: unknown provider, missing config, or its start failed.
    """
    cls = provider_class(name) if ":" in name else _builtin(name)
    nc = await connect(NatsOptions(url=nats_url, name=f"trellis-provider {provider_id}"))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    store = LinkStore(nc, lattice)
    provider: Provider | None = None
    server: ProviderServer | None = None
    try:
        config: dict[str, str] = {}
        if config_name:
            found = await store.get_config(config_name)
            if found is None:
                raise ProviderError(f"no config named {config_name!r} (create it: `trellis "
                                    f"config put {config_name} key=value …`)")
            config = found
        provider = cls(config)
        client = LatticeClient(nc, lattice)

        async def invoke(component: str, function: str, *args: Any,
                         timeout: float | None = None) -> Any:
            return await client.call(component, function, *args, timeout=timeout)

        await provider.start(ProviderContext(provider_id=provider_id, lattice=lattice, nc=nc,
                                             log=logging.getLogger(f"trellis.provider."
                                                                   f"{provider_id}"),
                                             invoke=invoke))
        synced = asyncio.Event()
        follow = asyncio.create_task(_follow_links(store, provider, provider_id, synced))
        # Serve only once the provider knows its links, so a restarted provider never
        # refuses a call for want of a link it has not heard about yet.
        await asyncio.wait({follow, asyncio.ensure_future(synced.wait())}, timeout=10,
                           return_when=asyncio.FIRST_COMPLETED)
        server = ProviderServer(nc, lattice, provider_id, provider)
        await server.start()
        if ready is not None:
            ready.set()
        _LOG.info("provider %s (%s) serving on lattice %s", provider_id, name, lattice)
        await stop.wait()
        follow.cancel()
        await asyncio.wait({follow}, timeout=2)
    finally:
        if server is not None:
            await server.stop()
        if provider is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(provider.stop(), 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), 5)


def _builtin(name: str) -> type[Provider]:
    try:
        return provider_class(name)
    except LookupError as exc:
        raise ProviderError(str(exc)) from None


async def _follow_links(store: LinkStore, provider: Provider, provider_id: str,
                        synced: asyncio.Event) -> None:
    """Tell ``provider`` about every link to or from ``provider_id``, as they change."""
    applied: dict[tuple[str, str, str], Link] = {}
    while True:
        try:
            async with store.watch() as watch:
                async for change in watch:
                    ld: LinkDef | None = change.link
                    if change.op == "synced":
                        synced.set()
                        continue
                    if ld is None:  # a config changed: re-apply the links that name it
                        cfg = change.config
                        todo = [x for x in watch.links.values() if cfg is not None and
                                cfg.name in (x.source_config, x.target_config)]
                    else:
                        todo = [ld]
                    for item in todo:
                        if provider_id not in (item.source_id, item.target_id):
                            gone = applied.pop(item.key, None)  # relinked to someone else
                            if gone is not None:
                                await tell_provider(provider.link_del(gone), gone)
                            continue
                        if change.op == "del" and ld is not None:
                            old = applied.pop(item.key, None)
                            if old is not None:
                                await tell_provider(provider.link_del(old), old)
                            continue
                        try:
                            src, dst = watch.resolve(item)
                        except ConfigNotFound:
                            src, dst = {}, {}
                        link = applied[item.key] = to_link(item, src, dst)
                        # A bad link is logged; it stops neither the others nor the watch.
                        await tell_provider(provider.link_put(link), link)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _LOG.warning("provider %s: link watch failed (%s); retrying", provider_id, exc)
            await asyncio.sleep(1.0)
