"""Links and named config: the lattice's declared bindings, in two JetStream KV buckets.

::

    store = LinkStore(nc, "default")
    await store.put_config("cache", {"bucket": "sessions"})
    await store.put_link(LinkDef(source_id="web", target_id="kv-nats", wit_namespace="wasi",
                                 wit_package="keyvalue", interfaces=["store", "atomics"],
                                 target_config="cache"))
    source_values, target_values = await store.resolve(link)      # ({}, {"bucket": "sessions"})
    async with store.watch() as changes:                           # hosts: follow every change
        async for change in changes:                               # snapshot, "synced", live
            ...

A link says: ``source_id``'s imports of ``wit_namespace:wit_package`` ``interfaces`` under link
``name`` go to ``target_id`` (a provider or a component), with named config for either side.
There is one link per (source, package, name): putting it again replaces it (relinking).
Config is referred to by name, so one config serves many links and changes in one place; a
link may name a config that does not exist yet, ``resolve`` then raises ``ConfigNotFound``.

Buckets (``lattice/subjects.py``): ``TRELLIS_{lattice}_links``, key
``{source}.{namespace}.{package}.{name}``, and ``TRELLIS_{lattice}_config``, key = the name;
values are the models as JSON. Key tokens are escaped (``_key_token``: anything but letters,
digits, ``-`` and ``_`` becomes ``=XX`` per UTF-8 byte), so ids may hold dots or spaces. File
storage, history 1: the desired state survives a NATS restart. Writers create a missing bucket;
readers treat it as empty.

Hosts follow both buckets with ``LinkStore.watch()`` (``lattice/linkwatch.py``): a snapshot,
then every change within milliseconds, surviving NATS reconnects.

Every operation has a deadline; NATS failures raise ``LinkStoreUnavailable``
(``LinkStoreTimeout`` past the deadline). Invalid links raise pydantic's ``ValidationError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.client import KV_PRE_TEMPLATE, KV_STREAM_TEMPLATE
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .connection import bounded
from .errors import ConfigNotFound, LinkStoreTimeout, LinkStoreUnavailable
from .subjects import check_token, config_bucket, links_bucket

if TYPE_CHECKING:
    from .linkwatch import LinkWatch

__all__ = ["ConfigDef", "LinkDef", "LinkStore", "check_name", "link_key", "resolve_configs",
           "split_package"]

_LOG = logging.getLogger(__name__)

_LOWER_ID = re.compile(r"^[a-z][a-z0-9]*(-[a-z][a-z0-9]*)*$")
_WIT_ID = re.compile(r"^([a-z][a-z0-9]*|[A-Z][A-Z0-9]*)(-([a-z][a-z0-9]*|[A-Z][A-Z0-9]*))*$")
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


# -- models --------------------------------------------------------------------------------------


def check_name(value: str, what: str) -> str:
    """Ids and names (component, provider, link, config): ``ValueError`` unless printable."""
    if not value or len(value) > 256 or not value.isprintable() or value != value.strip():
        raise ValueError(f"{what} {value!r} is not valid: use 1-256 printable characters "
                         "without leading or trailing spaces")
    return value


def split_package(text: str) -> tuple[str, str]:
    """``"wasi:keyvalue"`` → ``("wasi", "keyvalue")``; ``ValueError`` saying the fix otherwise."""
    ns, sep, pkg = text.partition(":")
    if "@" in pkg or "/" in pkg:
        raise ValueError(f"{text!r}: give the package without interface or version, e.g. "
                         "wasi:keyvalue (interfaces go in --interface; links match every version)")
    if not sep or not _LOWER_ID.match(ns) or not _LOWER_ID.match(pkg):
        raise ValueError(f"{text!r} is not NAMESPACE:PACKAGE: use lowercase WIT identifiers, "
                         "e.g. wasi:keyvalue")
    return ns, pkg


class LinkDef(BaseModel):
    """One link: ``source_id``'s imports of ``wit_namespace:wit_package`` ``interfaces`` under
    link ``name`` go to ``target_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    source_id: str
    """The component whose imports are bound."""
    target_id: str
    """The provider or component serving them."""
    wit_namespace: str
    """``wasi`` in ``wasi:keyvalue``: a lowercase WIT identifier."""
    wit_package: str
    """``keyvalue`` in ``wasi:keyvalue``; no version: a link serves every version imported."""
    interfaces: list[str]
    """Interfaces of the package bound by this link (``store``, ``atomics``); sorted, unique."""
    name: str = "default"
    """Link name: a component may bind one package to several targets under different names."""
    source_config: str | None = None
    """Name of the config given to the source side (``ConfigDef``), if any."""
    target_config: str | None = None
    """Name of the config given to the target (e.g. which bucket a provider opens), if any."""

    @field_validator("source_id", "target_id", "name")
    @classmethod
    def _ids(cls, value: str, info: object) -> str:
        return check_name(value, getattr(info, "field_name", "id"))

    @field_validator("source_config", "target_config")
    @classmethod
    def _configs(cls, value: str | None, info: object) -> str | None:
        return None if value is None else check_name(value, getattr(info, "field_name", ""))

    @field_validator("wit_namespace", "wit_package")
    @classmethod
    def _package(cls, value: str, info: object) -> str:
        if not _LOWER_ID.match(value):
            raise ValueError(f"{getattr(info, 'field_name', '')} {value!r} is not a lowercase "
                             "WIT identifier (like wasi, keyvalue, my-pkg)")
        return value

    @field_validator("interfaces")
    @classmethod
    def _interfaces(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a link binds at least one interface (e.g. store)")
        for iface in value:
            if not _WIT_ID.match(iface):
                raise ValueError(f"interface {iface!r} is not a WIT identifier: give the bare "
                                 "name, e.g. store (not wasi:keyvalue/store)")
        return sorted(set(value))

    @property
    def package(self) -> str:
        return f"{self.wit_namespace}:{self.wit_package}"

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies a link: ``(source_id, "ns:pkg", name)``."""
        return (self.source_id, self.package, self.name)

    def describe(self) -> str:
        """``web -> kv-nats wasi:keyvalue/{atomics,store} (default)`` for messages."""
        return (f"{self.source_id} -> {self.target_id} {self.package}/"
                f"{{{','.join(self.interfaces)}}} ({self.name})")


class ConfigDef(BaseModel):
    """A named config: string values handed to one side of the links that name it."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str
    values: dict[str, str] = {}
    """Settings, e.g. ``{"bucket": "sessions"}``; keys are non-empty."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "config name")

    @field_validator("values")
    @classmethod
    def _values(cls, value: dict[str, str]) -> dict[str, str]:
        if "" in value:
            raise ValueError("config keys must not be empty")
        return value


def _key_token(text: str) -> str:
    """One KV key token: bytes outside ``[A-Za-z0-9_-]`` become ``=XX`` (reversible)."""
    return "".join(c if c in _SAFE else "".join(f"={b:02X}" for b in c.encode()) for c in text)


def link_key(source_id: str, package: str, name: str = "default") -> str:
    """The KV key of a link (``package`` is ``ns:pkg``)."""
    ns, pkg = split_package(package)
    return ".".join(_key_token(t) for t in (source_id, ns, pkg, name))


def resolve_configs(link: LinkDef, configs: Mapping[str, Mapping[str, str]], lattice: str
                    ) -> tuple[dict[str, str], dict[str, str]]:
    """``(source_values, target_values)`` of ``link`` from ``configs`` (by name).

    Raises:
        ConfigNotFound: a config the link names is not in ``configs``.
    """
    out: list[dict[str, str]] = []
    for name in (link.source_config, link.target_config):
        if name is None:
            out.append({})
        elif name not in configs:
            raise ConfigNotFound(name, lattice, link.describe())
        else:
            out.append(dict(configs[name]))
    return out[0], out[1]


# -- buckets -------------------------------------------------------------------------------------


class _Bucket:
    """One KV bucket addressed by raw JetStream calls (each bounded by the caller's deadline)."""

    def __init__(self, nc: Client, name: str, description: str, replicas: int) -> None:
        self.nc, self.name, self.description, self.replicas = nc, name, description, replicas
        self.stream = KV_STREAM_TEMPLATE.format(bucket=name)
        self.prefix = KV_PRE_TEMPLATE.format(bucket=name)
        self.ready = False

    def js(self, left: Callable[[], float]) -> JetStreamContext:
        return self.nc.jetstream(timeout=left())

    async def ensure(self, left: Callable[[], float]) -> None:
        try:
            await self.js(left).stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            try:
                await self.js(left).create_key_value(
                    bucket=self.name, history=1, storage=api.StorageType.FILE,
                    replicas=self.replicas, description=self.description)
            except nats.js.errors.BadRequestError:  # created meanwhile by someone else
                await self.js(left).stream_info(self.stream)
        self.ready = True

    async def put(self, key: str, data: bytes, left: Callable[[], float]) -> None:
        for attempt in range(2):
            if not self.ready:
                await self.ensure(left)
            try:
                await self.js(left).publish(self.prefix + key, data, stream=self.stream,
                                            timeout=left())
                return
            except nats.js.errors.NoStreamResponseError:
                if attempt:
                    raise
                self.ready = False  # the bucket went away: create it again

    async def delete(self, key: str, left: Callable[[], float]) -> bool:
        if await self.last(key, left) is None:
            return False
        await self.js(left).publish(self.prefix + key, b"", stream=self.stream, timeout=left(),
                                    headers={KV_OP: KV_DEL})
        return True

    async def last(self, key: str, left: Callable[[], float]) -> bytes | None:
        """The current value of ``key``; ``None`` when unset, deleted or no bucket."""
        try:
            msg = await self.js(left).get_msg(self.stream, subject=self.prefix + key)
        except nats.js.errors.NotFoundError:
            return None
        if msg.headers and msg.headers.get(KV_OP) in (KV_DEL, KV_PURGE):
            return None
        return msg.data or b""

    async def values(self, pattern: str, left: Callable[[], float]) -> list[tuple[str, bytes]]:
        """``(key, value)`` of every live key matching ``pattern`` (``>``: all), by key."""
        try:
            info = await self.js(left).stream_info(self.stream,
                                                   subjects_filter=self.prefix + pattern)
        except nats.js.errors.NotFoundError:
            return []
        keys = sorted(s[len(self.prefix):] for s in (info.state.subjects or {}))
        got = await asyncio.gather(*(self.last(k, left) for k in keys), return_exceptions=True)
        for failure in got:  # every get ran to its end (each is bounded): no stragglers
            if isinstance(failure, BaseException):
                raise failure
        return [(k, v) for k, v in zip(keys, got, strict=True) if isinstance(v, bytes)]

    def kv(self, left: Callable[[], float]) -> KeyValue:
        return KeyValue(name=self.name, stream=self.stream, pre=self.prefix, js=self.js(left),
                        direct=False)


def parse_link(key: str, data: bytes) -> LinkDef | None:
    """The link stored under ``key``; ``None`` (logged) for what something else wrote there."""
    try:
        link = LinkDef.model_validate_json(data)
    except (ValueError, ValidationError) as exc:
        _LOG.warning("link store: skipping unreadable link %s: %s", key, exc)
        return None
    return link if link_key(*link.key) == key else None


def parse_config(key: str, data: bytes) -> ConfigDef | None:
    """The config stored under ``key``; ``None`` (logged) for what something else wrote there."""
    try:
        config = ConfigDef.model_validate_json(data)
    except (ValueError, ValidationError) as exc:
        _LOG.warning("link store: skipping unreadable config %s: %s", key, exc)
        return None
    return config if _key_token(config.name) == key else None


# -- the store -----------------------------------------------------------------------------------


class LinkStore:
    """Links and named config of one lattice.

    Args:
        nc: a connected nats-py client (not closed here).
        lattice: the lattice name (a NATS token).
        timeout: default deadline of every operation, seconds.
        replicas: JetStream replicas of the buckets when this store creates them (clusters).
    """

    def __init__(self, nc: Client, lattice: str, *, timeout: float = 2.0,
                 replicas: int = 1) -> None:
        self.lattice = check_token(lattice, "lattice")
        self.nc, self.timeout = nc, timeout
        self.links = _Bucket(nc, links_bucket(lattice), f"Trellis links of lattice {lattice}",
                             replicas)
        self.configs = _Bucket(nc, config_bucket(lattice),
                               f"Trellis named config of lattice {lattice}", replicas)

    # -- links -----------------------------------------------------------------------------------

    async def put_link(self, link: LinkDef, *, timeout: float | None = None) -> None:
        """Store ``link``, replacing the link with the same source, package and name."""
        async with self._errors(f"put link {link.describe()}", timeout) as left:
            await self.links.put(link_key(*link.key), link.model_dump_json().encode(), left)

    async def get_link(self, source_id: str, package: str, name: str = "default", *,
                       timeout: float | None = None) -> LinkDef | None:
        key = link_key(source_id, package, name)
        async with self._errors(f"read link {key}", timeout) as left:
            data = await self.links.last(key, left)
        return None if data is None else parse_link(key, data)

    async def del_link(self, source_id: str, package: str, name: str = "default", *,
                       timeout: float | None = None) -> bool:
        """Remove a link; ``False`` when there was none."""
        key = link_key(source_id, package, name)
        async with self._errors(f"delete link {key}", timeout) as left:
            return await self.links.delete(key, left)

    async def list_links(self, source_id: str | None = None, *,
                         timeout: float | None = None) -> list[LinkDef]:
        """Every link (of ``source_id``), sorted by key."""
        pattern = ">" if source_id is None else _key_token(source_id) + ".>"
        async with self._errors("list links", timeout) as left:
            found = await self.links.values(pattern, left)
        links = [link for k, v in found if (link := parse_link(k, v)) is not None]
        return sorted(links, key=lambda li: li.key)

    # -- named config ----------------------------------------------------------------------------

    async def put_config(self, name: str, values: Mapping[str, str], *,
                         timeout: float | None = None) -> None:
        """Create or replace the named config (all its values at once)."""
        config = ConfigDef(name=name, values=dict(values))
        async with self._errors(f"put config {name!r}", timeout) as left:
            await self.configs.put(_key_token(name), config.model_dump_json().encode(), left)

    async def get_config(self, name: str, *, timeout: float | None = None
                         ) -> dict[str, str] | None:
        key = _key_token(check_name(name, "config name"))
        async with self._errors(f"read config {name!r}", timeout) as left:
            data = await self.configs.last(key, left)
        config = None if data is None else parse_config(key, data)
        return None if config is None else dict(config.values)

    async def del_config(self, name: str, *, timeout: float | None = None) -> bool:
        """Remove the named config; ``False`` when there was none."""
        key = _key_token(check_name(name, "config name"))
        async with self._errors(f"delete config {name!r}", timeout) as left:
            return await self.configs.delete(key, left)

    async def list_configs(self, *, timeout: float | None = None) -> list[ConfigDef]:
        """Every named config, sorted by name."""
        async with self._errors("list config", timeout) as left:
            found = await self.configs.values(">", left)
        configs = [c for k, v in found if (c := parse_config(k, v)) is not None]
        return sorted(configs, key=lambda c: c.name)

    async def resolve(self, link: LinkDef, *, timeout: float | None = None
                      ) -> tuple[dict[str, str], dict[str, str]]:
        """``(source_values, target_values)``: the named configs ``link`` points at.

        Raises:
            ConfigNotFound: a named config does not exist.
        """
        names = {n for n in (link.source_config, link.target_config) if n is not None}
        async with self._errors(f"resolve config of link {link.describe()}", timeout) as left:
            got = {n: await self.configs.last(_key_token(n), left) for n in sorted(names)}
        configs = {n: c.values for n, data in got.items()
                   if data is not None and (c := parse_config(_key_token(n), data)) is not None}
        return resolve_configs(link, configs, self.lattice)

    def watch(self, *, timeout: float | None = None) -> LinkWatch:
        """Follow every link and config change (``async with store.watch() as changes``; see
        ``lattice/linkwatch.py``)."""
        from .linkwatch import LinkWatch

        return LinkWatch(self, timeout=timeout or self.timeout)

    # -- internals -------------------------------------------------------------------------------

    def _errors(self, action: str, timeout: float | None
                ) -> contextlib.AbstractAsyncContextManager[Callable[[], float]]:
        """Bound an operation by ``timeout``; NATS failures become ours."""
        budget = timeout or self.timeout
        return bounded(budget, lambda: LinkStoreTimeout(action, self.lattice, budget),
                       lambda why: LinkStoreUnavailable(action, self.lattice, why))
