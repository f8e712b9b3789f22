"""``LinkWatch``: every link and named config of a lattice, then every change, for hosts.

::

    async with LinkStore(nc, lattice).watch() as changes:
        async for change in changes:       # Change("put", link=…), Change("del", config=…), …
            ...

One ordered consumer per bucket (``TRELLIS_{lattice}_links`` / ``_config``) delivers the last
value of every key, then each change as it is stored (milliseconds). The watch keeps the state
it has reported; after every NATS reconnect (or a failed consumer) it takes a fresh snapshot
and reports only the difference with that state, so no change is lost or reported twice across
a NATS restart, then reports ``synced`` again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Self

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from .errors import LinkStoreUnavailable
from .links import ConfigDef, LinkDef, LinkStore, parse_config, parse_link, resolve_configs

__all__ = ["Change", "LinkWatch"]

_LOG = logging.getLogger(__name__)


# -- change events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One change seen by ``LinkWatch``.

    ``op`` is ``put`` (new or replaced; ``link`` or ``config`` is the new value), ``del``
    (``link`` or ``config`` is the last value reported) or ``synced`` (everything stored has
    been reported: after the initial snapshot, and again after each resync)."""

    op: Literal["put", "del", "synced"]
    link: LinkDef | None = None
    config: ConfigDef | None = None


_END = object()
"""Queued once the watch has ended (stopped, or the NATS connection closed for good)."""

_Watcher = KeyValue.KeyWatcher


class LinkWatch:
    """Every link and named config of the lattice, then every change, as ``Change`` events.

    ``async with store.watch() as changes: async for change in changes: …`` (or ``start`` /
    ``stop``). ``start`` returns once the initial snapshot is queued, or raises
    ``LinkStoreUnavailable`` when it cannot be taken within ``timeout`` (creating missing
    buckets). Iteration yields a ``put`` per config, then per link, then ``synced``, then each
    change as it is stored. ``links`` / ``configs`` are the state as reported so far (they may
    run ahead of the events not yet consumed); ``resolve`` resolves a link against them.

    After a NATS reconnect, or when a consumer fails, the watch re-reads both buckets and
    reports the difference with what it reported before (``put`` for new or changed, ``del``
    for gone), then ``synced``; it retries until NATS is back. Iteration ends after ``stop``,
    and raises ``LinkStoreUnavailable`` if the NATS connection is closed for good.
    """

    RESYNC_MIN, RESYNC_MAX = 0.1, 2.0
    """Backoff between failed resyncs, seconds."""
    POLL = 0.1
    """How often the reconnect counter of the connection is checked, seconds."""

    def __init__(self, store: LinkStore, *, timeout: float) -> None:
        self._store, self._nc, self._timeout = store, store.nc, timeout
        self._queue: asyncio.Queue[Change | object] = asyncio.Queue()
        self._links: dict[str, LinkDef] = {}
        self._configs: dict[str, ConfigDef] = {}
        self._watchers: list[_Watcher] = []
        self._task: asyncio.Task[None] | None = None
        self._error: LinkStoreUnavailable | None = None
        self._stopped = False
        self._reconnects = 0
        self.resyncs = 0
        """Snapshots taken after the first one (one per reconnect or consumer failure)."""

    # -- state -----------------------------------------------------------------------------------

    @property
    def links(self) -> dict[tuple[str, str, str], LinkDef]:
        """Links by ``LinkDef.key``."""
        return {link.key: link for link in self._links.values()}

    @property
    def configs(self) -> dict[str, dict[str, str]]:
        """Named config values by name."""
        return {c.name: dict(c.values) for c in self._configs.values()}

    def resolve(self, link: LinkDef) -> tuple[dict[str, str], dict[str, str]]:
        """``LinkStore.resolve`` from the watched state, without a round trip."""
        return resolve_configs(link, self.configs, self._store.lattice)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> Self:
        if self._task is not None or self._stopped:
            raise RuntimeError("LinkWatch already started")
        self._reconnects = self._nc.stats["reconnects"]
        await self._sync()
        self._task = asyncio.create_task(self._run(), name=f"link-watch-{self._store.lattice}")
        return self

    async def stop(self) -> None:
        """End the watch (idempotent); iteration ends once queued events are consumed."""
        if self._stopped:
            return
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop_watchers()
        self._queue.put_nowait(_END)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Change:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # every later call ends too
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        assert isinstance(item, Change)
        return item

    # -- snapshots -------------------------------------------------------------------------------

    async def _sync(self) -> None:
        """New consumers on both buckets; report the difference between their initial values
        and what was reported before, then ``synced``."""
        store = self._store
        watchers: list[_Watcher] = []
        async with store._errors("watch links and config", self._timeout) as left:
            try:
                for bucket in (store.links, store.configs):
                    await bucket.ensure(left)
                    watchers.append(await bucket.kv(left).watchall(inactive_threshold=60.0))
                links, configs = [await self._initial(w, left) for w in watchers]
            except BaseException:
                await self._drop(watchers)
                raise
        self._watchers = watchers
        new_links = {k: li for k, data in links.items() if (li := parse_link(k, data))}
        new_configs = {k: c for k, data in configs.items() if (c := parse_config(k, data))}
        for key in sorted(new_configs):
            self._put(self._configs, key, new_configs[key])
        for key in sorted(self._links.keys() - new_links.keys()):
            self._delete(self._links, key)
        for key in sorted(new_links):
            self._put(self._links, key, new_links[key])
        for key in sorted(self._configs.keys() - new_configs.keys()):
            self._delete(self._configs, key)
        self._queue.put_nowait(Change("synced"))

    @staticmethod
    async def _initial(watcher: _Watcher, left: Callable[[], float]) -> dict[str, bytes]:
        """The live keys a new watcher delivers before its end-of-snapshot marker."""
        out: dict[str, bytes] = {}
        while True:
            entry = await watcher.updates(timeout=left())  # type: ignore[no-untyped-call]
            if not isinstance(entry, KeyValue.Entry):
                return out  # None: the snapshot is complete
            if entry.operation in (KV_DEL, KV_PURGE):
                out.pop(entry.key, None)
            else:
                out[entry.key] = entry.value or b""

    def _put(self, state: dict[str, LinkDef] | dict[str, ConfigDef], key: str,
             value: LinkDef | ConfigDef) -> None:
        if state.get(key) == value:
            return  # unchanged: nothing to report
        state[key] = value  # type: ignore[assignment]
        self._queue.put_nowait(Change("put", link=value) if isinstance(value, LinkDef)
                               else Change("put", config=value))

    def _delete(self, state: dict[str, LinkDef] | dict[str, ConfigDef], key: str) -> None:
        old = state.pop(key, None)
        if isinstance(old, LinkDef):
            self._queue.put_nowait(Change("del", link=old))
        elif old is not None:
            self._queue.put_nowait(Change("del", config=old))

    # -- following -------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.RESYNC_MIN
        while True:
            if self._watchers:
                await self._follow()
                await self._drop_watchers()
            if self._nc.is_closed:
                self._error = LinkStoreUnavailable("watch links and config", self._store.lattice,
                                                   "the NATS connection is closed")
                self._queue.put_nowait(_END)
                return
            if not self._nc.is_connected:
                await asyncio.sleep(self.POLL)  # nats-py is reconnecting
                continue
            self._reconnects = self._nc.stats["reconnects"]
            try:
                await self._sync()
            except Exception as exc:  # noqa: BLE001 - retried; CancelledError passes
                _LOG.warning("link watch of lattice %s: resync failed (retrying in %.1fs): %s",
                             self._store.lattice, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.RESYNC_MAX)
                continue
            self.resyncs += 1
            delay = self.RESYNC_MIN

    async def _follow(self) -> None:
        """Report live changes until a reconnect happens or a consumer ends."""
        links, configs = self._watchers
        tasks = [asyncio.create_task(self._pump(links, self._links, parse_link)),
                 asyncio.create_task(self._pump(configs, self._configs, parse_config)),
                 asyncio.create_task(self._reconnected())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    _LOG.warning("link watch of lattice %s: consumer failed: %s",
                                 self._store.lattice, task.exception())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pump(self, watcher: _Watcher, state: dict[str, LinkDef] | dict[str, ConfigDef],
                    parse: Callable[[str, bytes], LinkDef | ConfigDef | None]) -> None:
        async for entry in watcher:
            if entry is None:
                continue
            if entry.operation in (KV_DEL, KV_PURGE):
                self._delete(state, entry.key)
            elif (value := parse(entry.key, entry.value or b"")) is not None:
                self._put(state, entry.key, value)

    async def _reconnected(self) -> None:
        while self._nc.stats["reconnects"] == self._reconnects and not self._nc.is_closed:
            await asyncio.sleep(self.POLL)

    async def _drop_watchers(self) -> None:
        watchers, self._watchers = self._watchers, []
        await self._drop(watchers)

    @staticmethod
    async def _drop(watchers: list[_Watcher]) -> None:
        for watcher in watchers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await watcher.stop()  # type: ignore[no-untyped-call]
