"""``Host``: a daemon that joins a lattice, runs components and answers the control interface.

::

    async with Host(HostConfig(nats_url=url, lattice="prod")) as host:   # start(): reachable
        ...                                                               # exit: graceful stop
    await run_host(HostConfig.from_env())     # the daemon: until SIGINT/SIGTERM or host.stop

Lifecycle (STYLE §4): ``start()`` connects (retrying until ``connect_timeout``; afterwards NATS
reconnects forever), checks that no other host answers to its id, subscribes its control
subjects, flushes, and only then publishes ``host_started`` and returns. A heartbeat carrying
the full inventory follows every ``heartbeat_interval`` seconds (and right after a reconnect).
The host also keeps its record in the lattice's host registry (``lattice/registry.py``): put
before ``host_started``, rewritten with every heartbeat, reconnect and label change, deleted on a
graceful stop; a host killed without a goodbye leaves it behind to go stale after
``host_timeout``.
``stop()`` only sets a flag and may be called any number of times, from anywhere (a control
handler, a signal handler); ``run()`` waits until the stop is complete.

Resource handling: the stop is two-phase. Invocation subscriptions are drained first (NATS sends
new calls to other replicas), calls in flight get ``stop_timeout`` seconds to finish, the rest
are cancelled and answered with a ``stopped`` error. Then ``host_stopped`` is published and the
connection drained. A runtime the host created is closed; one passed in is left to its owner.

Error handling: ``start()`` raises ``LatticeUnavailableError`` (no NATS), ``HostIdInUse`` or
``HostConfigError``; nothing after start raises out of background work — failures are logged,
and scale failures are published as ``component_scale_failed`` events. Registry writes never
hold up the heartbeat: each runs in the background with its own deadline (one at a time; a
write asked for meanwhile follows it), and a JetStream that is missing or slow is logged once
and retried with the next beat. Only ``start()`` waits for its write, at most
``REGISTRY_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import platform
import signal
import socket
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ..lattice import subjects
from ..lattice.connection import connect, flush
from ..lattice.errors import LatticeError
from ..lattice.models import (
    CloudEvent,
    ComponentInfo,
    HostInfo,
    HostInventory,
    LimitsSpec,
    event_type,
)
from ..lattice.registry import HostRecord, HostRegistry
from ..lattice.rpc import RpcCaller
from .binder import LinkBinder
from .config import HostConfig, HostIdSlot
from .ctl import CtlServer
from .http.lattice import HttpLattice
from .links import LinkRouter
from .providers import ProviderManager
from .rpc import RpcServer
from .runtime.runtime import Runtime
from .telemetry import InvocationTelemetry

_LOG = logging.getLogger(__name__)

REGISTRY_TIMEOUT = 2.0
"""Deadline of one host registry write or delete, seconds."""

try:
    VERSION = version("trellis")
except PackageNotFoundError:  # running from a source tree without an install
    VERSION = "0.0.0"


class HostState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class HostIdInUse(LatticeError):
    def __init__(self, host_id: str, lattice: str) -> None:
        self.host_id, self.lattice = host_id, lattice
        super().__init__(f"another host already answers as {host_id!r} on lattice {lattice!r}; "
                         "give this one another host_id (TRELLIS_HOST_ID) or leave it unset")


def automatic_labels() -> dict[str, str]:
    return {
        "trellis.os": platform.system().lower(),
        "trellis.arch": platform.machine().lower(),
        "trellis.hostname": socket.gethostname(),
    }


class Host:
    """One host daemon on one lattice.

    Args:
        config: connection, identity, labels and timeouts.
        runtime: the component runtime to run on; a new one (closed at stop) when ``None``.
        tracer_provider: for the runtime the host creates (ignored when ``runtime`` is given).
        meter_provider: where invocation metrics go (the global provider when ``None``).
    """

    fetch_timeout = 120.0
    """Seconds to fetch one artifact from the lattice's object store."""

    def __init__(self, config: HostConfig, runtime: Runtime | None = None, *,
                 tracer_provider: TracerProvider | None = None,
                 meter_provider: MeterProvider | None = None) -> None:
        self.config = config
        self.lattice = config.lattice
        self._own_runtime = runtime is None
        self._runtime = runtime
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._slot: HostIdSlot | None = None
        self.host_id = config.host_id or ""
        self.labels: dict[str, str] = {**automatic_labels(), **config.labels}
        self.state = HostState.NEW
        self.started_at = time.time()
        self._nc: Client | None = None
        self._rpc: RpcServer | None = None
        self._ctl: CtlServer | None = None
        self._stop_requested = asyncio.Event()
        self._stop_timeout = config.stop_timeout
        self._heartbeat: asyncio.Task[None] | None = None
        self._lifecycle: asyncio.Task[None] | None = None
        self._registry: HostRegistry | None = None
        """Set while the host may write its record: from start until the stop deletes it."""
        self._record_task: asyncio.Task[None] | None = None
        self._record_wanted = False
        self._registry_failing = False
        self.links = LinkRouter()
        """Current link targets of this host's components (see host/links.py)."""
        self.providers = ProviderManager(self, on_change=self._provider_changed)
        self.binder = LinkBinder(self)
        self._rpc_caller: RpcCaller | None = None
        self.http = HttpLattice(self)
        """HTTP requests from the lattice for this host's wasi:http components."""

    # -- accessors -------------------------------------------------------------------------------

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("Host is not started")
        return self._nc

    @property
    def rpc(self) -> RpcServer:
        if self._rpc is None:
            raise RuntimeError("Host is not started")
        return self._rpc

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("Host is not started")
        return self._runtime

    @property
    def rpc_caller(self) -> RpcCaller:
        """For calls this host makes into the lattice (component-to-component links)."""
        if self._rpc_caller is None:
            self._rpc_caller = RpcCaller(self.nc, self.lattice, caller=self.host_id)
        return self._rpc_caller

    def local_component(self, component_id: str) -> Any | None:
        """The component served on this host under ``component_id``, if any."""
        served = self._rpc.served.get(component_id) if self._rpc else None
        return served.component if served is not None else None

    async def invoke_component(self, component_id: str, function: str, *args: Any,
                               timeout: float | None = None) -> Any:
        """Call a component for a provider (messaging delivering a message, say): here when
        it runs here, else anywhere on the lattice."""
        served = self._rpc.served.get(component_id) if self._rpc else None
        if served is not None:
            return await served.component.invoke(function, *args, timeout=timeout,
                                                 caller=component_id)
        from ..lattice.client import LatticeClient

        client = LatticeClient(self.nc, self.lattice)
        return await client.call(component_id, function, *args, timeout=timeout)

    async def _provider_changed(self, provider_id: str) -> None:
        await self.binder.provider_changed(provider_id)

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    def info(self) -> HostInfo:
        url = self._nc.connected_url if self._nc else None
        return HostInfo(
            host_id=self.host_id, lattice=self.lattice, labels=dict(self.labels),
            version=VERSION, started_at=self.started_at,
            uptime_seconds=round(time.time() - self.started_at, 3),
            nats_url=f"nats://{url.hostname}:{url.port}" if url else "",
        )

    def inventory(self) -> HostInventory:
        comps = []
        for s in (self._rpc.served.values() if self._rpc else ()):
            c = s.component
            lim = c.config.limits
            comps.append(ComponentInfo(
                component_id=s.component_id, image=s.image, digest=c.compiled.ref,
                max_instances=c.config.policy.max_instances, mode=c.config.policy.mode,
                active=s.active, exports=c.functions(), annotations=dict(s.annotations),
                limits=LimitsSpec(timeout=lim.timeout, fuel=lim.fuel,
                                  max_memory_mib=None if lim.max_memory is None
                                  else lim.max_memory >> 20),
                invocations=s.invocations, errors=s.errors,
            ))
        return HostInventory(**self.info().model_dump(), components=comps,
                             providers=self.providers.describe())

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, join the lattice and answer control requests; returns once reachable.

        Raises:
            RuntimeError: called twice.
            LatticeUnavailableError: NATS is not reachable within ``connect_timeout``.
            HostIdInUse: another live host has this id.
        """
        if self.state is not HostState.NEW:
            raise RuntimeError(f"Host already {self.state.value}")
        self.state = HostState.STARTING
        try:
            await self._start()
        except BaseException:
            await self._teardown()
            self.state = HostState.STOPPED
            raise
        self.state = HostState.RUNNING
        self._lifecycle = asyncio.create_task(self._supervise(), name=f"host {self.host_id}")

    async def _start(self) -> None:
        if not self.host_id:
            self._slot = HostIdSlot(self.config.resolved_cache_dir(), self.lattice)
            self.host_id = self._slot.host_id
        self._nc = await connect(self.config.nats_options(f"trellis-host {self.host_id}"),
                                 reconnected_cb=self._on_reconnect)
        await self._check_unique_id()
        if self._runtime is None:
            self._runtime = Runtime(cache_dir=self.config.cache_dir, pool=self.config.pool(),
                                    tracer_provider=self._tracer_provider)
        self._runtime.host_loop.bind(asyncio.get_running_loop())  # providers run here
        self._rpc = RpcServer(self._nc, self.lattice, self.host_id)
        self._rpc.telemetry = InvocationTelemetry(self._nc, self.lattice, self.host_id,
                                                  self._rpc.served, self._meter_provider)
        await self._rpc.telemetry.start()  # spy.watch: flushed with the control subjects
        self._ctl = CtlServer(self)
        await self._ctl.start()
        await self.binder.start()
        await flush(self._nc)
        self.started_at = time.time()
        self._registry = HostRegistry(self._nc, self.lattice)
        await self._write_record()  # listed before anyone hears host_started
        await self.publish_event("host_started", self.info().model_dump())
        self._heartbeat = asyncio.create_task(self._beat(), name=f"heartbeat {self.host_id}")

    async def _check_unique_id(self) -> None:
        try:
            await self.nc.request(subjects.host_get(self.lattice, self.host_id), b"",
                                  timeout=0.25)
        except (NoRespondersError, NatsTimeoutError):
            return
        raise HostIdInUse(self.host_id, self.lattice)

    def stop(self, timeout: float | None = None) -> None:
        """Ask for a graceful stop; idempotent. ``timeout`` overrides ``stop_timeout`` (the time
        calls in flight get to finish)."""
        if timeout is not None and not self._stop_requested.is_set():
            self._stop_timeout = timeout
        self._stop_requested.set()

    async def run(self) -> None:
        """Block until the host has stopped (starting it first if needed)."""
        if self.state is HostState.NEW:
            await self.start()
        if self._lifecycle is not None:
            await asyncio.shield(self._lifecycle)

    async def _supervise(self) -> None:
        await self._stop_requested.wait()
        self.state = HostState.STOPPING
        try:
            await self._shutdown()
        finally:
            await self._teardown()
            self.state = HostState.STOPPED

    async def _shutdown(self) -> None:
        timeout = self._stop_timeout
        await self.http.close(timeout)
        if self._rpc is not None:
            if not await self._rpc.drain(timeout):
                _LOG.warning("host %s: %d invocation(s) still running after %gs; cancelling",
                             self.host_id, self._rpc.in_flight, timeout)
                await self._rpc.cancel()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await self._forget_record()
        if self._ctl is not None:
            await self._ctl.close()
        await self.binder.stop()
        await self.providers.close()
        await self.publish_event("host_stopped", {"labels": self.labels,
                                                  "host_id": self.host_id})

    async def _teardown(self) -> None:
        """Release everything; runs even when the graceful part failed."""
        self._registry = None
        with contextlib.suppress(Exception):
            await self.binder.stop()
        with contextlib.suppress(Exception):
            await self.providers.close()
        if self._record_task is not None and not self._record_task.done():
            self._record_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._record_task
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.drain(), 5.0)
            except Exception as exc:
                _LOG.debug("drain: %s", exc)
                with contextlib.suppress(Exception):
                    await nc.close()
        if self._own_runtime and self._runtime is not None:
            self._runtime.close()
        if self._slot is not None:
            self._slot.release()
            self._slot = None

    async def __aenter__(self) -> Host:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        await self.run()

    # -- state and events ------------------------------------------------------------------------

    async def set_label(self, key: str, value: str | None) -> bool:
        """Put (or with ``None`` delete) a label; False when deleting one that was not set."""
        if value is None:
            if key not in self.labels:
                return False
            del self.labels[key]
        else:
            self.labels[key] = value
        await self.publish_event("labels_changed", {"host_id": self.host_id,
                                                    "labels": dict(self.labels)})
        self.refresh_record()
        return True

    async def publish_event(self, name: str, data: dict[str, Any]) -> None:
        """Publish a CloudEvent on ``trellis.evt.{lattice}.{name}``; never raises."""
        nc = self._nc
        if nc is None:
            return
        event = CloudEvent(source=self.host_id, type=event_type(name), data=data)
        try:
            await nc.publish(subjects.event(self.lattice, name), event.model_dump_json().encode())
        except Exception as exc:
            _LOG.warning("host %s: cannot publish %s: %s", self.host_id, name, exc)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                await self.publish_event("host_heartbeat", self.inventory().model_dump())
            except Exception:  # a bad inventory must not end the heartbeat
                _LOG.exception("host %s: heartbeat failed", self.host_id)
            self.refresh_record()

    async def _on_reconnect(self) -> None:
        if self.state is HostState.RUNNING:  # let the lattice see us again at once
            await self.publish_event("host_heartbeat", self.inventory().model_dump())
            self.refresh_record()  # a restarted server may have lost the registry bucket

    # -- host registry ---------------------------------------------------------------------------

    def record(self) -> HostRecord:
        """This host's registry record, as of now."""
        return HostRecord(**self.inventory().model_dump(), last_seen=time.time(),
                          heartbeat_interval=self.config.heartbeat_interval,
                          timeout=self.config.resolved_host_timeout())

    def refresh_record(self) -> None:
        """Rewrite the registry record in the background; returns at once. A write asked for
        while one runs follows it (with the state of then), so writes never pile up."""
        if self._registry is None:
            return
        self._record_wanted = True
        if self._record_task is None or self._record_task.done():
            self._record_task = asyncio.create_task(self._record_writer(),
                                                    name=f"registry {self.host_id}")

    async def _record_writer(self) -> None:
        while self._record_wanted and self._registry is not None:
            self._record_wanted = False
            await self._write_record()

    async def _write_record(self) -> None:
        """Put the record, within ``REGISTRY_TIMEOUT``; logs failures, never raises."""
        registry = self._registry
        if registry is None:
            return
        try:
            await registry.put(self.record(), timeout=REGISTRY_TIMEOUT)
        except Exception as exc:  # JetStream missing, slow or restarting: the next beat retries
            log = _LOG.debug if self._registry_failing else _LOG.warning
            log("host %s: cannot write the host registry (retrying every heartbeat): %s",
                self.host_id, exc)
            self._registry_failing = True
            return
        if self._registry_failing:
            _LOG.info("host %s: host registry written again", self.host_id)
            self._registry_failing = False

    async def _forget_record(self) -> None:
        """Delete the record on a graceful stop, after the write in flight (if any) settled:
        a write landing after the delete would list the host again until it goes stale."""
        registry, self._registry = self._registry, None
        task = self._record_task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=REGISTRY_TIMEOUT)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if registry is None:
            return
        try:
            await registry.delete(self.host_id, timeout=REGISTRY_TIMEOUT)
        except Exception as exc:
            _LOG.warning("host %s: cannot delete its host registry record (it goes stale after "
                         "%gs): %s", self.host_id, self.config.resolved_host_timeout(), exc)


async def run_host(config: HostConfig, runtime: Runtime | None = None, *,
                   handle_signals: bool = True) -> None:
    """Run a host until SIGINT/SIGTERM or a ``host.stop`` control request: the daemon's main.

    The first signal starts a graceful stop; the host then drains for up to ``stop_timeout``.
    """
    host = Host(config, runtime)
    loop = asyncio.get_running_loop()
    await host.start()
    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, host.stop)
    try:
        await host.run()
    finally:
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)


__all__ = ["Host", "HostIdInUse", "HostState", "automatic_labels", "run_host"]
