"""Providers on one host: in-process instances and supervised standalone processes.

In-process (the default) a provider object lives in the host: components on this host call
it directly (``links.Target.implementation``) and components elsewhere through its
``ProviderServer`` on NATS. Standalone, the host runs ``trellis provider run`` as a child
process and restarts it with exponential backoff when it dies; calls reach it over NATS, and
fail fast with ``LinkTargetUnavailable`` while it is down. Starts, exits, restarts and health
changes are lattice events (``provider_started``, ``provider_exited``, ``provider_restarted``,
``provider_health``, ``provider_stopped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..providers.registry import provider_class
from ..providers.remote import ProviderServer
from ..providers.sdk import Health, Provider, ProviderContext, ProviderError

if TYPE_CHECKING:
    from .host import Host

_LOG = logging.getLogger(__name__)

START_TIMEOUT = 30.0
HEALTH_INTERVAL = 5.0
BACKOFF_START, BACKOFF_MAX = 0.5, 30.0


@dataclass
class HostedProvider:
    provider_id: str
    name: str
    standalone: bool
    config_name: str | None = None
    provider: Provider | None = None
    """The in-process instance (``None`` when standalone)."""
    server: ProviderServer | None = None
    process: asyncio.subprocess.Process | None = None
    started_at: float = field(default_factory=time.time)
    restarts: int = 0
    health: Health = field(default_factory=Health)
    task: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "provider_id": self.provider_id, "name": self.name,
            "mode": "standalone" if self.standalone else "in-process",
            "config": self.config_name, "started_at": self.started_at,
            "restarts": self.restarts, "healthy": self.health.ok,
            "health_message": self.health.message,
            "pid": self.process.pid if self.process else None,
        }


class ProviderManager:
    """Starts, supervises and stops the providers of one host."""

    def __init__(self, host: Host, *, on_change: Callable[[str], Awaitable[None]]) -> None:
        self.host = host
        self.providers: dict[str, HostedProvider] = {}
        self._on_change = on_change
        """Called with a provider id after it starts or stops, so links are re-applied."""
        self._stopping = False
        self.backoff_start = BACKOFF_START
        """Seconds before the first restart of a dead standalone provider (then doubling)."""

    def local(self, provider_id: str) -> Provider | None:
        """The in-process provider with this id, if it runs here."""
        hp = self.providers.get(provider_id)
        return hp.provider if hp is not None and not hp.standalone else None

    async def start(self, provider_id: str, name: str, *, config: dict[str, str],
                    config_name: str | None = None, standalone: bool = False
                    ) -> HostedProvider:
        """Start ``name`` (a built-in or ``module:Class``) as ``provider_id``.

        Raises:
            ProviderError: unknown provider, already running, or its ``start`` failed.
        """
        if provider_id in self.providers:
            raise ProviderError(f"provider {provider_id!r} already runs on this host "
                                "(stop it first, or pick another --id)")
        try:
            cls = provider_class(name)
        except LookupError as exc:
            raise ProviderError(str(exc)) from None
        hp = HostedProvider(provider_id, name, standalone, config_name)
        if standalone:
            await self._spawn(hp)
            hp.task = asyncio.create_task(self._supervise(hp), name=f"provider {provider_id}")
        else:
            hp.provider = cls(config)
            try:
                await self._start_inprocess(hp)
            except BaseException:  # release what it took (a bound port, a connection)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(hp.provider.stop(), 10)
                raise
            hp.task = asyncio.create_task(self._watch_health(hp), name=f"health {provider_id}")
        self.providers[provider_id] = hp
        await self.host.publish_event("provider_started", hp.describe())
        await self._on_change(provider_id)
        return hp

    async def _start_inprocess(self, hp: HostedProvider) -> None:
        host = self.host
        assert hp.provider is not None
        ctx = ProviderContext(
            provider_id=hp.provider_id, lattice=host.lattice, host_id=host.host_id, nc=host.nc,
            log=logging.getLogger(f"trellis.provider.{hp.provider_id}"),
            invoke=host.invoke_component,
        )
        try:
            await asyncio.wait_for(hp.provider.start(ctx), START_TIMEOUT)
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(f"provider {hp.provider_id} ({hp.name}) failed to start: "
                                f"{type(exc).__name__}: {exc}") from exc
        hp.server = ProviderServer(host.nc, host.lattice, hp.provider_id, hp.provider)
        await hp.server.start()

    def _command(self, hp: HostedProvider) -> list[str]:
        cfg = self.host.config
        # Not `-m trellis.host.cli`: that would import the CLI twice (as __main__ and by name).
        cmd = [sys.executable, "-c", "from trellis.host.cli import main; main()",
               "provider", "run", hp.name,
               "--id", hp.provider_id, "--lattice", self.host.lattice, "--nats-url", cfg.nats_url]
        if hp.config_name:
            cmd += ["--config", hp.config_name]
        return cmd

    async def _spawn(self, hp: HostedProvider) -> None:
        env = {**os.environ, "TRELLIS_PROVIDER_PARENT": self.host.host_id}
        hp.process = await asyncio.create_subprocess_exec(
            *self._command(hp), env=env, stdin=asyncio.subprocess.DEVNULL)
        hp.started_at = time.time()

    async def _supervise(self, hp: HostedProvider) -> None:
        """Restart a standalone provider that exits, backing off while it keeps dying."""
        backoff = self.backoff_start
        while not self._stopping:
            assert hp.process is not None
            code = await hp.process.wait()
            if self._stopping or hp.provider_id not in self.providers:
                return
            lived = time.time() - hp.started_at
            if lived > 10 * BACKOFF_MAX:
                backoff = self.backoff_start  # it ran fine for a while: start over
            await self.host.publish_event("provider_exited", {
                **hp.describe(), "exit_code": code, "restart_in": backoff})
            await asyncio.sleep(backoff)
            if self._stopping or hp.provider_id not in self.providers:
                return
            backoff = min(backoff * 2, BACKOFF_MAX)
            try:
                await self._spawn(hp)
            except OSError as exc:
                _LOG.warning("cannot restart provider %s: %s", hp.provider_id, exc)
                continue
            hp.restarts += 1
            await self.host.publish_event("provider_restarted", hp.describe())

    async def _watch_health(self, hp: HostedProvider) -> None:
        while not self._stopping and hp.provider is not None:
            await asyncio.sleep(HEALTH_INTERVAL)
            try:
                health = await asyncio.wait_for(hp.provider.health(), HEALTH_INTERVAL)
            except Exception as exc:
                health = Health(False, f"health check failed: {type(exc).__name__}: {exc}")
            if health != hp.health:
                hp.health = health
                await self.host.publish_event("provider_health", hp.describe())

    async def stop(self, provider_id: str, timeout: float = 10.0) -> bool:
        hp = self.providers.pop(provider_id, None)
        if hp is None:
            return False
        if hp.task is not None:
            hp.task.cancel()
        if hp.server is not None:
            await hp.server.stop()
        if hp.provider is not None:
            try:
                await asyncio.wait_for(hp.provider.stop(), timeout)
            except Exception as exc:
                _LOG.warning("provider %s did not stop cleanly: %s", provider_id, exc)
        if hp.process is not None and hp.process.returncode is None:
            hp.process.terminate()
            try:
                await asyncio.wait_for(hp.process.wait(), timeout)
            except TimeoutError:
                hp.process.kill()
                await hp.process.wait()
        await self.host.publish_event("provider_stopped", hp.describe())
        await self._on_change(provider_id)
        return True

    async def close(self) -> None:
        self._stopping = True
        for pid in list(self.providers):
            await self.stop(pid)

    def describe(self) -> list[dict[str, Any]]:
        return [hp.describe() for hp in self.providers.values()]
