"""``trellis`` commands that talk to a lattice: host, up, component, call, get.

Kept apart from ``cli.py`` (single-component commands) so each file stays small; ``cli.py``
registers these on the main group. Every command has a deadline and maps errors the same way.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click

from ..lattice.errors import LatticeError, TrellisError
from .runtime.engine import DEFAULT_KEEP_RESIDENT, DEFAULT_POOL_INSTANCES, MiB

NATS_URL_OPT = click.option(
    "--nats-url", envvar="TRELLIS_NATS_URL", show_envvar=True,
    default="nats://127.0.0.1:4222", show_default=True, help="NATS server URL(s), comma-separated.")
LATTICE_OPT = click.option(
    "--lattice", envvar="TRELLIS_LATTICE", show_envvar=True, default="default", show_default=True,
    help="Lattice name (several lattices can share one NATS).")
TIMEOUT_OPT = click.option(
    "--timeout", type=float, envvar="TRELLIS_TIMEOUT", show_envvar=True, default=5.0,
    show_default=True, help="Deadline for the request, seconds.")
JSON_OPT = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


_POOL_INSTANCES = click.IntRange(0, 100_000)
_POOL_KEEP_RESIDENT = click.IntRange(0, 4096)


def pool_options(fn: Callable[..., Any], *, checked: bool = True) -> Callable[..., Any]:
    """--pool-instances / --pool-keep-resident: the daemons' instance pool (``PoolConfig``).
    ``checked=False`` leaves them as text for the command to check (``pool_settings``), for a
    group whose subcommands do not use them: a bad TRELLIS_POOL_* must not break those."""
    fn = click.option(
        "--pool-keep-resident", "pool_keep_resident",
        type=_POOL_KEEP_RESIDENT if checked else str,
        default=DEFAULT_KEEP_RESIDENT // MiB,
        show_default=True, envvar="TRELLIS_POOL_KEEP_RESIDENT", show_envvar=True,
        metavar="MIB", help="Memory a pooled instance slot keeps mapped for the next instance: "
        "fresh instances skip page faults, at the cost of resident memory.")(fn)
    return click.option(
        "--pool-instances", "pool_instances", type=_POOL_INSTANCES if checked else str,
        default=DEFAULT_POOL_INSTANCES,
        show_default=True, envvar="TRELLIS_POOL_INSTANCES", show_envvar=True, metavar="N",
        help="Component instances held at once by the pooling allocator (all components "
        "together; past it a call fails as over capacity). 0: allocate each on demand "
        "(slower fresh instances, no address space reserved up front).")(fn)


def pool_settings(ctx: click.Context, instances: Any, keep_resident: Any) -> tuple[int, int]:
    """The pool options of ``pool_options(checked=False)``, checked as click would have."""
    params = {p.name: p for p in ctx.command.params}
    return (_POOL_INSTANCES.convert(instances, params["pool_instances"], ctx),
            _POOL_KEEP_RESIDENT.convert(keep_resident, params["pool_keep_resident"], ctx))


def _run(coro: Callable[[], Awaitable[Any]]) -> Any:
    """asyncio.run with the CLI's error mapping (``TypeName: message``, exit code)."""
    from .cli import _fail

    try:
        return asyncio.run(coro())  # type: ignore[arg-type]
    except TrellisError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        sys.exit(130)


def _client(nats_url: str, lattice: str, timeout: float) -> Any:
    from ..lattice.client import LatticeClient

    return LatticeClient(nats_url, lattice, timeout=timeout, caller="cli")


def _labels(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--label")
        out[key] = value
    return out


# -- trellis host ---------------------------------------------------------------------------

@click.group("host", invoke_without_command=True)
@NATS_URL_OPT
@LATTICE_OPT
@click.option("--host-id", envvar="TRELLIS_HOST_ID", show_envvar=True,
              help="Stable host id (default: generated once and kept in the cache dir).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Placement label (repeatable); also TRELLIS_LABELS=k=v,k2=v2.")
@functools.partial(pool_options, checked=False)  # checked below, when it runs the daemon
@click.pass_context
def host(ctx: click.Context, nats_url: str, lattice: str, host_id: str | None,
         labels: tuple[str, ...], pool_instances: str, pool_keep_resident: str) -> None:
    """Run a host daemon that joins the lattice (or use a subcommand).

    Stops gracefully on SIGINT/SIGTERM or `trellis host stop`, draining in-flight invocations.
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = {**(ctx.obj or {}), "nats_url": nats_url, "lattice": lattice}
        return
    from .config import HostConfig
    from .host import run_host
    from .telemetry import configure_from_env

    instances, keep_resident = pool_settings(ctx, pool_instances, pool_keep_resident)
    config = HostConfig.from_env(nats_url=nats_url, lattice=lattice, host_id=host_id,
                                 labels=_labels(labels) or None,
                                 cache_dir=(ctx.obj or {}).get("cache_dir"),
                                 pool_instances=instances,
                                 pool_keep_resident_mib=keep_resident)
    telemetry = configure_from_env()  # OTLP when the standard OTEL_* variables ask for it
    try:
        _run(lambda: run_host(config))
    finally:
        telemetry.shutdown()


def _sub_opts(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--nats-url/--lattice also after the subcommand (`trellis host list --lattice x`)."""
    fn = click.option("--nats-url", "sub_nats_url", help="As for `trellis host`.")(fn)
    return click.option("--lattice", "sub_lattice", help="As for `trellis host`.")(fn)


def _where(ctx: click.Context, url: str | None, lattice: str | None) -> tuple[str, str]:
    return url or ctx.obj["nats_url"], lattice or ctx.obj["lattice"]


@host.command("list")
@TIMEOUT_OPT
@click.option("--expect", type=int, help="Wait until at least this many live hosts are listed.")
@click.option("--all", "include_stale", is_flag=True,
              help="Also hosts that missed their heartbeat timeout (until the registry forgets "
                   "them), marked stale.")
@JSON_OPT
@_sub_opts
@click.pass_context
def host_list(ctx: click.Context, timeout: float, expect: int | None, include_stale: bool,
              as_json: bool, sub_nats_url: str | None, sub_lattice: str | None) -> None:
    """List the hosts of the lattice from their heartbeats (the host registry).

    Asks no host, so it answers at once. A host that died without stopping (kill -9, a lost
    machine) stays listed until its heartbeat timeout (3 heartbeats by default) and then
    leaves the list; `trellis host ping` asks the hosts themselves instead.
    """
    url, lattice = _where(ctx, sub_nats_url, sub_lattice)

    async def go() -> Any:
        async with _client(url, lattice, timeout) as lc:
            if not expect:
                return await lc.list_hosts(include_stale, timeout=timeout)
            return await _wait_listed(lc, expect, include_stale, timeout)

    hosts = _run(go)
    now = time.time()
    if as_json:
        click.echo(json.dumps([_record_json(h, now) for h in hosts], indent=2))
        return
    if not hosts:
        click.echo(f"no hosts in the registry of lattice {lattice!r}", err=True)
        return
    rows = [("HOST", "UPTIME", "LAST SEEN", "COMPONENTS", "LABELS")]
    for h in hosts:
        seen = f"{_duration(h.age(now))} ago" + (" (stale)" if h.is_stale(now) else "")
        rows.append((h.host_id, _duration(h.uptime(now)), seen, str(len(h.components)),
                     ",".join(f"{k}={v}" for k, v in sorted(h.labels.items()))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:4], widths, strict=True)]
        click.echo("  ".join([*cells, r[4]]).rstrip())


async def _wait_listed(lc: Any, expect: int, include_stale: bool, timeout: float) -> Any:
    """``list_hosts`` until at least ``expect`` live hosts are in it (hosts start in their own
    time), within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        hosts = await lc.list_hosts(include_stale,
                                    timeout=max(0.5, min(5.0, deadline - loop.time())))
        live = [h for h in hosts if not h.is_stale()]
        if len(live) >= expect:
            return hosts
        if loop.time() >= deadline:
            raise LatticeError(f"{len(live)} of {expect} hosts listed in the registry of lattice "
                               f"{lc.lattice!r} within {timeout:g}s")
        await asyncio.sleep(0.1)


def _record_json(h: Any, now: float) -> dict[str, Any]:
    """A registry record for ``host list --json``: the host's info, its component count, and
    how fresh it is (uptime and age as of ``now``)."""
    out: dict[str, Any] = h.model_dump(mode="json", exclude={"components"})
    out.update(uptime_seconds=round(h.uptime(now), 3), component_count=len(h.components),
               last_seen_age=round(h.age(now), 3), stale=h.is_stale(now))
    return out


def _duration(seconds: float) -> str:
    """``0.4s``, ``12s``, ``3m05s``, ``2h03m``, ``4d02h``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


@host.command("ping")
@TIMEOUT_OPT
@click.option("--expect", type=int, help="Wait until at least this many hosts answer.")
@JSON_OPT
@_sub_opts
@click.pass_context
def host_ping(ctx: click.Context, timeout: float, expect: int | None, as_json: bool,
              sub_nats_url: str | None, sub_lattice: str | None) -> None:
    """Ask every host to answer (live: a dead host is missing at once)."""
    url, lattice = _where(ctx, sub_nats_url, sub_lattice)

    async def go() -> Any:
        async with _client(url, lattice, timeout) as lc:
            if expect:
                return await lc.wait_for_hosts(expect, timeout=timeout)
            return await lc.ping_hosts(timeout=min(timeout, 1.0))

    hosts = _run(go)
    if as_json:
        click.echo(json.dumps([h.model_dump(mode="json") for h in hosts], indent=2))
        return
    if not hosts:
        click.echo(f"no hosts answered on lattice {lattice!r}", err=True)
        return
    for h in hosts:
        labels = ",".join(f"{k}={v}" for k, v in sorted(h.labels.items()))
        click.echo(f"{h.host_id}  up {_duration(h.uptime_seconds)}  {labels}")


@host.command("stop")
@click.argument("host_id")
@TIMEOUT_OPT
@_sub_opts
@click.pass_context
def host_stop(ctx: click.Context, host_id: str, timeout: float, sub_nats_url: str | None,
              sub_lattice: str | None) -> None:
    """Ask HOST_ID to stop gracefully."""
    url, lattice = _where(ctx, sub_nats_url, sub_lattice)

    async def go() -> None:
        async with _client(url, lattice, timeout) as lc:
            await lc.stop_host(host_id)

    _run(go)
    click.echo(f"{host_id} stopping")


# -- trellis get inventory --------------------------------------------------------------------

@click.group("get")
def get() -> None:
    """Read lattice state."""


@get.command("inventory")
@click.argument("host_id", required=False)
@NATS_URL_OPT
@LATTICE_OPT
@TIMEOUT_OPT
@JSON_OPT
def get_inventory(host_id: str | None, nats_url: str, lattice: str, timeout: float,
                  as_json: bool) -> None:
    """Components running on HOST_ID (default: every host)."""

    async def go() -> Any:
        async with _client(nats_url, lattice, timeout) as lc:
            ids = [host_id] if host_id else [h.host_id for h in await lc.ping_hosts()]
            return [await lc.get_inventory(h) for h in ids]

    invs = _run(go)
    if as_json:
        click.echo(json.dumps([i.model_dump(mode="json") for i in invs], indent=2))
        return
    for inv in invs:
        click.echo(f"host {inv.host_id}")
        for c in inv.components or []:
            click.echo(f"  {c.component_id}  {c.image}  max={c.max_instances} mode={c.mode} "
                       f"active={c.active}")
        if not inv.components:
            click.echo("  (no components)")


# -- trellis component push|start|stop ---------------------------------------------------------

@click.group("component")
def component() -> None:
    """Push, start and stop components on the lattice."""


@component.command("push")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@NATS_URL_OPT
@LATTICE_OPT
@click.option("--timeout", type=float, default=120.0, show_default=True)
def component_push(file: Path, nats_url: str, lattice: str, timeout: float) -> None:
    """Store FILE in the lattice's artifact store; prints its `sha256:…` reference."""

    async def go() -> str:
        async with _client(nats_url, lattice, timeout) as lc:
            ref: str = await lc.push_artifact(file, timeout=timeout)
            return ref

    click.echo(_run(go))


@component.command("start")
@click.argument("image")
@click.option("--id", "component_id", required=True, help="Lattice-wide component id.")
@click.option("--host", "host_id", help="Host to start it on (default: least loaded).")
@click.option("--max-instances", type=int, default=16, show_default=True)
@click.option("--mode", type=click.Choice(["fresh", "pooled"]), default="fresh",
              show_default=True, help="Fresh instance per call, or pooled warm instances.")
@NATS_URL_OPT
@LATTICE_OPT
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Wait this long for the host to report the outcome (compiles can be slow).")
def component_start(image: str, component_id: str, host_id: str | None, max_instances: int,
                    mode: str, nats_url: str, lattice: str, timeout: float) -> None:
    """Start IMAGE (a file path or `sha256:…`) as component --id on a host.

    A local file is pushed to the artifact store first, so any host can fetch it.
    """

    async def go() -> str:
        async with _client(nats_url, lattice, 5.0) as lc:
            ref = image
            if not image.startswith("sha256:"):
                path = Path(image)
                if not path.is_file():
                    raise click.BadParameter(f"{image!r} is neither sha256:… nor a file")
                click.echo(f"pushing {path} to the artifact store…", err=True)
                ref = await lc.push_artifact(path)
            click.echo(f"starting {component_id} ({ref})…", err=True)
            host: str = await lc.start_component(ref, component_id, host_id=host_id,
                                                 max_instances=max_instances, mode=mode,
                                                 timeout=timeout)
            return host

    host_started = _run(go)
    click.echo(f"{component_id} running on {host_started}")


@component.command("stop")
@click.argument("component_id")
@click.option("--host", "host_id", help="Only on this host (default: every host running it).")
@NATS_URL_OPT
@LATTICE_OPT
@click.option("--timeout", type=float, default=30.0, show_default=True)
def component_stop(component_id: str, host_id: str | None, nats_url: str, lattice: str,
                   timeout: float) -> None:
    """Stop COMPONENT_ID."""

    async def go() -> list[str]:
        async with _client(nats_url, lattice, 5.0) as lc:
            hosts: list[str] = await lc.stop_component(component_id, host_id, timeout=timeout)
            return hosts

    hosts = _run(go)
    if not hosts:
        raise click.ClickException(f"no host runs {component_id!r}")
    click.echo(f"{component_id} stopped on {', '.join(hosts)}")


# -- trellis call ----------------------------------------------------------------------------

@click.command("call", context_settings={"ignore_unknown_options": True,
                                         "allow_interspersed_args": False})
@NATS_URL_OPT
@LATTICE_OPT
@TIMEOUT_OPT
@click.argument("component_id")
@click.argument("expr")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def call(nats_url: str, lattice: str, timeout: float, component_id: str, expr: str,
         args: tuple[str, ...]) -> None:
    """Call a function of COMPONENT_ID wherever it runs; prints the result in WAVE.

    \b
      trellis call greeter 'greet("Developer")'
      trellis call greeter greet Developer          (plain arguments, typed by the WIT)
    """

    async def go() -> str:
        async with _client(nats_url, lattice, timeout) as lc:
            out: str = await lc.call_wave(component_id, expr, *args, timeout=timeout)
            return out

    click.echo(_run(go))


# -- trellis up ------------------------------------------------------------------------------

def _listening(url: str) -> bool:
    parsed = urlparse(url.split(",")[0].strip())
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222),
                                      timeout=0.5):
            return True
    except OSError:
        return False


@click.command("up")
@click.option("--nats-url", envvar="TRELLIS_NATS_URL", show_envvar=True,
              help="Join this NATS instead (default: 127.0.0.1:4222 if something listens "
                   "there, else start an embedded nats-server).")
@LATTICE_OPT
@click.option("--nats-port", type=int, default=4222, envvar="TRELLIS_NATS_PORT",
              show_envvar=True, show_default=True,
              help="Port for the embedded nats-server (0: any free port).")
@click.option("--start", "starts", multiple=True, metavar="ID=FILE",
              help="Start a component on the host once it is up (repeatable).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE")
@click.option("--http", "http_addr", envvar="TRELLIS_UP_HTTP", show_envvar=True,
              metavar="HOST:PORT", help="Also serve HTTP here: the http-server provider, "
              "in-process on the host (port 0: any free port).")
@click.option("--route", "routes", multiple=True, metavar="ID=/PREFIX",
              help="Route requests under /PREFIX to component ID (repeatable; needs --http). "
              "The component sees the path below the prefix; / routes everything.")
@pool_options
@click.pass_context
def up(ctx: click.Context, nats_url: str | None, lattice: str, nats_port: int,
       starts: tuple[str, ...], labels: tuple[str, ...], http_addr: str | None,
       routes: tuple[str, ...], pool_instances: int, pool_keep_resident: int) -> None:
    """Start a lattice on this machine in one command: NATS (embedded or joined) and a host.

    Prints the NATS URL and the lattice name (and the HTTP address with --http); Ctrl-C stops
    everything cleanly.
    """
    wanted = []
    for item in starts:
        cid, sep, file = item.partition("=")
        if not sep or not Path(file).is_file():
            raise click.BadParameter(f"expected ID=FILE with an existing file, got {item!r}",
                                     param_hint="--start")
        wanted.append((cid, Path(file)))
    http = _http_options(http_addr, routes)
    from .telemetry import configure_from_env

    cache_dir = (ctx.obj or {}).get("cache_dir")
    telemetry = configure_from_env()
    try:
        _run(lambda: _up(nats_url, lattice, nats_port, wanted, _labels(labels), cache_dir,
                         http, {"pool_instances": pool_instances,
                                "pool_keep_resident_mib": pool_keep_resident}))
    finally:
        telemetry.shutdown()


def _http_options(addr: str | None, routes: tuple[str, ...]
                  ) -> tuple[str, list[tuple[str, str]]] | None:
    """``--http`` and ``--route`` checked: (address, [(component, prefix)])."""
    parsed = []
    for item in routes:
        cid, sep, prefix = item.partition("=")
        if not sep or not cid or not prefix.startswith("/"):
            raise click.BadParameter(f"expected ID=/PREFIX, got {item!r}", param_hint="--route")
        parsed.append((cid, prefix))
    if not addr:
        if parsed:
            raise click.BadParameter("routes need an HTTP server: add --http HOST:PORT",
                                     param_hint="--route")
        return None
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {addr!r}", param_hint="--http")
    return addr, parsed


UP_HTTP_ID = "http-server"
"""Provider id of the http-server ``trellis up --http`` starts."""


async def _up_http(h: Any, lc: Any, addr: str, routes: list[tuple[str, str]]) -> str:
    """Start the http-server provider on host ``h`` and put a link per route; its URL once
    every route is in place."""
    from ..lattice.links import LinkDef
    from ..providers.sdk import ProviderError

    try:
        hp = await h.providers.start(UP_HTTP_ID, "http-server", config={"addr": addr})
    except ProviderError as exc:
        raise click.ClickException(str(exc)) from None
    provider = hp.provider
    for cid, prefix in routes:
        config = f"{UP_HTTP_ID}-route-{cid}"
        await lc.put_config(config, {"path": prefix, "strip_prefix": "true"})
        await lc.put_link(LinkDef(source_id=UP_HTTP_ID, target_id=cid, wit_namespace="wasi",
                                  wit_package="http", interfaces=["incoming-handler"], name=cid,
                                  source_config=config))
    want, deadline = {cid for cid, _ in routes}, time.monotonic() + 10
    while not want <= {r.component for r in provider.routes.values()}:
        if time.monotonic() > deadline:
            raise click.ClickException(f"routes not applied within 10 s: {sorted(want)}")
        await asyncio.sleep(0.05)
    url: str = provider.url
    return url


async def _up(nats_url: str | None, lattice: str, nats_port: int,
              wanted: list[tuple[str, Path]], labels: dict[str, str],
              cache_dir: Path | None, http: tuple[str, list[tuple[str, str]]] | None = None,
              pool: dict[str, int] | None = None) -> None:
    from ..lattice.client import LatticeClient
    from ..lattice.nats_server import NatsServer
    from .config import HostConfig
    from .host import Host

    server = None
    url = nats_url or f"nats://127.0.0.1:{nats_port or 4222}"
    if nats_url is None and not (nats_port and _listening(url)):
        server = NatsServer(port=nats_port or None)
        await server.start()
        url = server.url
        click.echo(f"started embedded nats-server (JetStream) at {url}", err=True)
    elif nats_url is None:
        click.echo(f"joining the NATS already listening at {url}", err=True)
    try:
        config = HostConfig.from_env(nats_url=url, lattice=lattice, labels=labels or None,
                                     cache_dir=cache_dir, **(pool or {}))
        async with Host(config) as h:
            click.echo(f"NATS:    {url}")
            click.echo(f"lattice: {lattice}")
            click.echo(f"host:    {h.host_id}")
            async with LatticeClient(url, lattice, caller="up") as lc:
                for cid, file in wanted:
                    ref = await lc.push_artifact(file)
                    await lc.start_component(ref, cid, host_id=h.host_id, timeout=300)
                    click.echo(f"started: {cid} ({ref[:19]}…)")
                if http is not None:
                    url = await _up_http(h, lc, *http)
                    click.echo(f"http:    {url}")
                    for cid, prefix in http[1]:
                        click.echo(f"route:   {url}{prefix.rstrip('/')}/ -> {cid}")
            click.echo("ready (Ctrl-C to stop)", err=True)
            sys.stdout.flush()
            loop = asyncio.get_running_loop()
            import signal

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, h.stop)
            await h.run()
    except LatticeError:
        raise
    finally:
        if server is not None:
            await server.stop()
        click.echo("stopped", err=True)


COMMANDS = (host, get, component, call, up)
