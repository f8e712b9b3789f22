"""``trellis provider …``: list the built-ins, start/stop providers on hosts, run one standalone."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..providers.registry import BUILTINS, provider_class
from ..providers.sdk import ProviderError
from .cli_lattice import JSON_OPT, LATTICE_OPT, NATS_URL_OPT, TIMEOUT_OPT, _client, _run

EXIT_FAILED = 1


@click.group("provider")
def provider() -> None:
    """Capability providers: built-ins, start/stop on hosts, or run one as its own process.

    Providers implement WIT interfaces (key-value, blobstore, messaging, SQL, logging, config)
    for components; links (`trellis link put`) decide which component uses which provider.
    """


@provider.command("list")
@NATS_URL_OPT
@LATTICE_OPT
@TIMEOUT_OPT
@JSON_OPT
@click.option("--builtins", is_flag=True, help="Only the built-in provider names (no lattice).")
def provider_list(nats_url: str, lattice: str, timeout: float, as_json: bool,
                  builtins: bool) -> None:
    """Built-in providers, and the providers running on the lattice's hosts."""
    rows: list[dict[str, Any]] = []
    for name in sorted(BUILTINS):
        cls = provider_class(name)
        rows.append({"name": name, "interfaces": list(cls.interfaces)})
    running: list[dict[str, Any]] = []
    if not builtins:
        async def gather() -> list[dict[str, Any]]:
            async with _client(nats_url, lattice, timeout) as lc:
                out = []
                for info in await lc.ping_hosts():
                    inv = await lc.get_inventory(info.host_id)
                    out += [{**p.model_dump(), "host_id": inv.host_id} for p in inv.providers]
                return out
        running = _run(gather)
    if as_json:
        click.echo(json.dumps({"builtins": rows, "running": running}, indent=2))
        return
    click.echo("built-in providers:")
    for row in rows:
        click.echo(f"  {row['name']:<16} {', '.join(row['interfaces'])}")
    if not builtins:
        click.echo("running:" if running else "running: none")
        for p in running:
            health = "healthy" if p["healthy"] else f"unhealthy ({p['health_message']})"
            click.echo(f"  {p['provider_id']:<16} {p['name']:<16} {p['mode']:<11} "
                       f"on {p['host_id']}  {health}  restarts={p['restarts']}")


@provider.command("start")
@click.argument("name")
@click.option("--id", "provider_id", required=True, help="Lattice-wide provider id (links "
              "target it).")
@click.option("--host", "host_id", envvar="TRELLIS_HOST_ID", show_envvar=True,
              help="Host to run it on (default: the least busy).")
@click.option("--config", "config_name", help="Named config with its settings "
              "(`trellis config put NAME url=…`).")
@click.option("--standalone", is_flag=True, help="Run it as its own process, supervised and "
              "restarted by the host.")
@NATS_URL_OPT
@LATTICE_OPT
@TIMEOUT_OPT
def provider_start(name: str, provider_id: str, host_id: str | None, config_name: str | None,
                   standalone: bool, nats_url: str, lattice: str, timeout: float) -> None:
    """Start provider NAME (a built-in, or package.module:Class) on a host."""
    async def go() -> Any:
        async with _client(nats_url, lattice, timeout) as lc:
            return await lc.start_provider(name, provider_id, host_id=host_id,
                                           config=config_name, standalone=standalone,
                                           timeout=max(timeout, 30.0))
    info = _run(go)
    click.echo(f"provider {info.provider_id} ({info.name}, {info.mode}) started")


@provider.command("stop")
@click.argument("provider_id")
@click.option("--host", "host_id", help="Only on this host (default: wherever it runs).")
@NATS_URL_OPT
@LATTICE_OPT
@TIMEOUT_OPT
def provider_stop(provider_id: str, host_id: str | None, nats_url: str, lattice: str,
                  timeout: float) -> None:
    """Stop provider PROVIDER_ID."""
    async def go() -> list[str]:
        async with _client(nats_url, lattice, timeout) as lc:
            return await lc.stop_provider(provider_id, host_id, timeout=max(timeout, 15.0))
    hosts = _run(go)
    if not hosts:
        click.echo(f"provider {provider_id} runs on no host", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"provider {provider_id} stopped on {', '.join(hosts)}")


@provider.command("run")
@click.argument("name")
@click.option("--id", "provider_id", required=True, envvar="TRELLIS_PROVIDER_ID",
              show_envvar=True, help="Lattice-wide provider id.")
@click.option("--config", "config_name", envvar="TRELLIS_PROVIDER_CONFIG", show_envvar=True,
              help="Named config with its settings.")
@NATS_URL_OPT
@LATTICE_OPT
def provider_run(name: str, provider_id: str, config_name: str | None, nats_url: str,
                 lattice: str) -> None:
    """Run provider NAME as its own process on the lattice, until Ctrl-C."""
    from .provider_runner import run_provider

    async def go() -> None:
        await run_provider(name, provider_id, nats_url=nats_url, lattice=lattice,
                           config_name=config_name)
    try:
        _run(go)
    except ProviderError as exc:
        click.echo(f"ProviderError: {exc}", err=True)
        sys.exit(EXIT_FAILED)


COMMANDS = (provider,)
