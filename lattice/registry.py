"""The lattice's host registry: one JetStream KV record per host, refreshed by its heartbeats.

::

    registry = HostRegistry(nc, "default")
    await registry.put(record)                      # a host: on start and every heartbeat
    hosts = await registry.list()                   # readers: live hosts, sorted by id
    everyone = await registry.list(include_stale=True)
    await registry.delete("h1")                     # a host: on a graceful stop

Readers learn which hosts exist without asking them: no ping, no waiting for replies, and a host
that died without a goodbye (``kill -9``, a lost machine) stays visible, as *stale*, until the
bucket forgets it.

Layout: the KV bucket ``hosts_bucket(lattice)`` (``TRELLIS_{lattice}_hosts``), key = host id,
value = a ``HostRecord`` as JSON: the host's ``HostInventory`` plus ``last_seen`` (Unix seconds
when it was written), ``heartbeat_interval`` and ``timeout``. A record is *stale* when
``now - last_seen > timeout``; the host chose its ``timeout`` (default 3 × its interval,
``TRELLIS_HOST_TIMEOUT``), so hosts with different intervals share one bucket. Deadness is
decided by the reader's clock against the writer's: clocks must be synchronised (NTP), as for
invocation deadlines.

The bucket is created by the first writer (idempotently: a bucket that exists is used as it
is) with history 1, **memory** storage and ``max_age`` = ``HOSTS_MAX_AGE``. The records are soft
state that every host rewrites each heartbeat, so memory storage saves a disk write per host
per beat; a NATS restart loses the bucket, and each host recreates it with its next write (hosts
also write right after reconnecting). ``max_age`` bounds what dead hosts leave behind; it must
exceed every host's heartbeat interval (``HostConfig`` caps the interval at half of it), else a
live host's record would expire between two beats.

Error handling: every operation has a deadline (``timeout``) and raises::

    LatticeUnavailableError                      (lattice/errors.py)
    └── HostRegistryUnavailable                  NATS/JetStream failed; cause in __cause__
        └── HostRegistryTimeout (TimeoutError)   not done before the deadline

Records that do not parse (written by something else) are skipped by ``list`` and ``get``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.client import KV_PRE_TEMPLATE, KV_STREAM_TEMPLATE
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE
from pydantic import ConfigDict, Field, ValidationError

from .connection import bounded
from .errors import LatticeError, LatticeUnavailableError
from .models import HostInventory
from .subjects import check_token, hosts_bucket

__all__ = [
    "HOSTS_MAX_AGE",
    "MISSED_BEATS",
    "HostRecord",
    "HostRegistry",
    "HostRegistryTimeout",
    "HostRegistryUnavailable",
]

_LOG = logging.getLogger(__name__)

HOSTS_MAX_AGE = 600.0
"""Seconds the bucket keeps a record that nobody rewrote (``max_age``): the garbage bound for
hosts that died without deleting theirs."""
MISSED_BEATS = 3
"""A host's default ``timeout`` is this many heartbeat intervals (DESIGN §2)."""


class HostRecord(HostInventory):
    """A host's entry in the registry: its inventory as of ``last_seen``.

    Unknown top-level fields are ignored, so newer hosts can add some."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    last_seen: float
    """Unix seconds (the host's clock) when the host wrote this record."""
    heartbeat_interval: float = Field(gt=0)
    """Seconds between the host's heartbeats, hence between rewrites of this record."""
    timeout: float = Field(gt=0)
    """Seconds after ``last_seen`` when readers consider the host gone."""

    def age(self, now: float | None = None) -> float:
        """Seconds since the host last wrote its record (never negative: clocks drift)."""
        return max(0.0, (time.time() if now is None else now) - self.last_seen)

    def is_stale(self, now: float | None = None) -> bool:
        """Whether the host missed its heartbeats for longer than its ``timeout``."""
        return self.age(now) > self.timeout

    def uptime(self, now: float | None = None) -> float:
        """Seconds the host has been up: until ``now`` while it is live, else until it was last
        seen."""
        now = time.time() if now is None else now
        end = self.last_seen if self.is_stale(now) else now
        return max(0.0, end - self.started_at)


# -- errors --------------------------------------------------------------------------------------


class HostRegistryUnavailable(LatticeUnavailableError):
    """NATS or JetStream failed while doing ``action``; the NATS error is ``__cause__``.
    (``url`` is empty: the registry does not know which server answered.)"""

    def __init__(self, action: str, lattice: str, detail: str) -> None:
        self.action, self.lattice, self.detail, self.url = action, lattice, detail, ""
        LatticeError.__init__(
            self, f"cannot {action} in the host registry of lattice {lattice!r}: {detail}")


class HostRegistryTimeout(HostRegistryUnavailable, TimeoutError):
    def __init__(self, action: str, lattice: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(action, lattice, f"not done within {timeout:g}s (check the NATS "
                         "connection and that JetStream is healthy)")


# -- the registry --------------------------------------------------------------------------------


class HostRegistry:
    """The host records of one lattice.

    Args:
        nc: a connected nats-py client (not closed here).
        lattice: the lattice name (a NATS token).
        replicas: JetStream replicas for the bucket when this registry creates it (clusters).
        max_age: seconds the bucket keeps an unrefreshed record, when this registry creates it.

    Raises:
        SubjectError: ``lattice`` cannot be part of a bucket name.
    """

    def __init__(self, nc: Client, lattice: str, *, replicas: int = 1,
                 max_age: float = HOSTS_MAX_AGE) -> None:
        self.lattice = check_token(lattice, "lattice")
        self.bucket = hosts_bucket(lattice)
        self.stream = KV_STREAM_TEMPLATE.format(bucket=self.bucket)
        self._prefix = KV_PRE_TEMPLATE.format(bucket=self.bucket)
        self._nc = nc
        self._replicas = replicas
        self._max_age = max_age
        self._ready = False
        """The bucket is known to exist (a writer checks or creates it once)."""

    # -- writers (hosts) -------------------------------------------------------------------------

    async def put(self, record: HostRecord, *, timeout: float = 2.0) -> None:
        """Store ``record`` under its host id, creating the bucket if needed.

        Raises:
            SubjectError: the host id is not a valid token.
            HostRegistryUnavailable: NATS or JetStream failed (``HostRegistryTimeout``: not
                done within ``timeout``).
        """
        key = self._key(record.host_id)
        data = record.model_dump_json().encode()
        async with self._errors(f"record host {record.host_id}", timeout) as left:
            for attempt in range(2):
                if not self._ready:
                    await self._ensure_bucket(left)
                try:
                    await self._js(left).publish(key, data, stream=self.stream, timeout=left())
                    return
                except nats.js.errors.NoStreamResponseError:
                    if attempt:
                        raise
                    self._ready = False  # the bucket is gone (a NATS restart): create it again

    async def delete(self, host_id: str, *, timeout: float = 2.0) -> None:
        """Remove ``host_id``'s record (a delete marker, as KV does). Nothing to do when the
        bucket does not exist.

        Raises:
            HostRegistryUnavailable: NATS or JetStream failed.
        """
        key = self._key(host_id)
        async with self._errors(f"delete host {host_id}", timeout) as left:
            with contextlib.suppress(nats.js.errors.NoStreamResponseError):
                await self._js(left).publish(key, b"", stream=self.stream, timeout=left(),
                                             headers={KV_OP: KV_DEL})

    # -- readers ---------------------------------------------------------------------------------

    async def get(self, host_id: str, *, timeout: float = 2.0) -> HostRecord | None:
        """``host_id``'s record, stale or not; ``None`` when there is none (or it is deleted or
        unreadable).

        Raises:
            HostRegistryUnavailable: NATS or JetStream failed.
        """
        key = self._key(host_id)
        async with self._errors(f"read host {host_id}", timeout) as left:
            msg = await self._last(self._js(left), key)
        return None if msg is None else self._parse(key, msg)

    async def list(self, *, include_stale: bool = False, now: float | None = None,
                   timeout: float = 2.0) -> list[HostRecord]:
        """The hosts of the lattice, sorted by id: those whose record is fresh, or every record
        the bucket still holds with ``include_stale``. ``now`` (Unix seconds) replaces the
        clock when judging staleness. No bucket yet means no hosts.

        Two round trips whatever the number of hosts: the bucket's keys, then every record at
        once.

        Raises:
            HostRegistryUnavailable: NATS or JetStream failed (``HostRegistryTimeout``: not
                done within ``timeout``).
        """
        async with self._errors("list hosts", timeout) as left:
            js = self._js(left)
            try:
                info = await js.stream_info(self.stream, subjects_filter=self._prefix + ">")
            except nats.js.errors.NotFoundError:
                return []
            keys = sorted((info.state.subjects or {}).keys())
            got = await asyncio.gather(*(self._last(js, k) for k in keys),
                                       return_exceptions=True)
            for failure in got:  # every get ran to its end (each is bounded): no stragglers
                if isinstance(failure, BaseException):
                    raise failure
        records = []
        for key, msg in zip(keys, got, strict=True):
            assert not isinstance(msg, BaseException)
            record = None if msg is None else self._parse(key, msg)
            if record is not None and (include_stale or not record.is_stale(now)):
                records.append(record)
        return sorted(records, key=lambda r: r.host_id)

    # -- internals -------------------------------------------------------------------------------

    def _key(self, host_id: str) -> str:
        return self._prefix + check_token(host_id, "host id")

    def _js(self, left: Callable[[], float]) -> JetStreamContext:
        """A JetStream context whose requests wait no longer than the time left (nats-py's own
        waits use ``asyncio.wait_for``, which on Python 3.11 can swallow the cancellation by
        which an outer deadline fires)."""
        return self._nc.jetstream(timeout=left())

    def _errors(self, action: str,
                timeout: float) -> contextlib.AbstractAsyncContextManager[Callable[[], float]]:
        """Bound an operation by ``timeout``; NATS failures become ours."""
        return bounded(timeout, lambda: HostRegistryTimeout(action, self.lattice, timeout),
                       lambda why: HostRegistryUnavailable(action, self.lattice, why))

    async def _ensure_bucket(self, left: Callable[[], float]) -> None:
        js = self._js(left)
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            try:
                await js.create_key_value(
                    bucket=self.bucket, history=1, ttl=self._max_age,
                    storage=api.StorageType.MEMORY, replicas=self._replicas,
                    description=f"Trellis host registry of lattice {self.lattice}",
                )
            except nats.js.errors.BadRequestError:
                # Another host created it first, with a configuration of its own: use that.
                await self._js(left).stream_info(self.stream)
        self._ready = True

    async def _last(self, js: JetStreamContext, key: str) -> api.RawStreamMsg | None:
        """The latest message on ``key``; ``None`` when there is none (or the bucket is gone)."""
        try:
            return await js.get_msg(self.stream, subject=key)
        except nats.js.errors.NotFoundError:
            return None

    def _parse(self, key: str, msg: api.RawStreamMsg) -> HostRecord | None:
        if msg.headers and msg.headers.get(KV_OP) in (KV_DEL, KV_PURGE):
            return None
        try:
            record = HostRecord.model_validate(json.loads(msg.data or b""))
        except (ValueError, ValidationError) as exc:
            _LOG.debug("host registry %s: skipping unreadable record %s: %s", self.bucket, key,
                       exc)
            return None
        if self._prefix + record.host_id != key:
            _LOG.debug("host registry %s: skipping record of %s under key %s", self.bucket,
                       record.host_id, key)
            return None
        return record
