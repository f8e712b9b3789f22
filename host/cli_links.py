"""``trellis link`` and ``trellis config``: the lattice's links and named config.

Thin over ``LatticeClient`` (``lattice/links.py``). Exit codes: 0 ok, 1 not found or the
lattice failed, 2 bad usage (a malformed ``NAMESPACE:PACKAGE`` or ``KEY=VALUE``), with a message
that says the fix. Connection options are the other lattice commands' (``cli_lattice``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click
from pydantic import ValidationError

from ..lattice.links import ConfigDef, LinkDef, check_name, split_package
from .cli_lattice import JSON_OPT, LATTICE_OPT, NATS_URL_OPT, TIMEOUT_OPT, _client, _run

EXIT_NOT_FOUND = 1


def _package(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        split_package(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        checked: str = check_name(value, param.human_readable_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return checked


def _values(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"expected KEY=VALUE, got {item!r} (quote values with spaces: 'k=a b')",
                param_hint="KEY=VALUE")
        out[key] = value
    return out


def _not_found(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(EXIT_NOT_FOUND)


# -- trellis link ----------------------------------------------------------------------------


@click.group("link")
def link() -> None:
    """Bind a component's imports to a provider or another component.

    \b
    A link says: SOURCE_ID's imports of NAMESPACE:PACKAGE (the interfaces given) go to
    TARGET_ID, optionally with named config for either side (`trellis config put`).
    One link per source, package and --name: putting it again replaces it, and hosts
    running the source rebind within a second, without a restart.

    \b
      trellis config put cache bucket=sessions
      trellis link put web kv-nats wasi:keyvalue --interface store --interface atomics \\
          --target-config cache
      trellis link list --source web
      trellis link del web wasi:keyvalue
    """


@link.command("put")
@click.argument("source_id", callback=_name)
@click.argument("target_id", callback=_name)
@click.argument("package", metavar="NAMESPACE:PACKAGE", callback=_package)
@click.option("--interface", "-i", "interfaces", multiple=True, required=True, metavar="NAME",
              help="Interface of the package to bind, e.g. store (repeatable; at least one).")
@click.option("--name", default="default", show_default=True, callback=_name,
              help="Link name: bind one package to several targets under different names.")
@click.option("--source-config", callback=_name, metavar="CONFIG",
              help="Named config handed to the source component.")
@click.option("--target-config", callback=_name, metavar="CONFIG",
              help="Named config handed to the target (e.g. which bucket a provider opens).")
@NATS_URL_OPT
@LATTICE_OPT
@TIMEOUT_OPT
def link_put(source_id: str, target_id: str, package: str, interfaces: tuple[str, ...],
             name: str, source_config: str | None, target_config: str | None, nats_url: str,
             lattice: str, timeout: float) -> None:
    """Link SOURCE_ID's imports of NAMESPACE:PACKAGE (no version) to TARGET_ID."""
    ns, pkg = split_package(package)
    try:
        new = LinkDef(source_id=source_id, target_id=target_id, wit_namespace=ns,
                      wit_package=pkg, interfaces=list(interfaces), name=name,
                      source_config=source_config, target_config=target_config)
    except ValidationError as exc:
        raise click.UsageError("; ".join(_reason(e) for e in exc.errors())) from None

    async def go() -> list[str]:
        async with _client(nats_url, lattice, timeout) as lc:
            await lc.put_link(new, timeout=timeout)
            wanted = [c for c in (source_config, target_config) if c is not None]
            return [c for c in dict.fromkeys(wanted)
                    if await lc.get_config(c, timeout=timeout) is None]

    missing = _run(go)
    click.echo(f"linked {new.describe()}")
    for config in missing:
        click.echo(f"note: config {config!r} does not exist yet; hosts cannot bind this link "
                   f"until you create it: trellis config put {config} KEY=VALUE …", err=True)


def _reason(error: Any) -> str:
    """``interfaces: interface 'a/b' is not a WIT identifier: …`` from a pydantic error."""
    where = ".".join(str(p) for p in error.get("loc", ()))
    return f"{where}: {str(error.get('msg', '')).removeprefix('Value error, ')}"


@link.command("del")
@click.argument("source_id", callback=_name)
@click.argument("package", metavar="NAMESPACE:PACKAGE", callback=_package)
@click.option("--name", default="default", show_default=True, callback=_name,
              help="Link name, as given to `link put`.")
@NATS_URL_OPT
@LATTICE_OPT
@TIMEOUT_OPT
def link_del(source_id: str, package: str, name: str, nats_url: str, lattice: str,
             timeout: float) -> None:
    """Remove SOURCE_ID's link for NAMESPACE:PACKAGE; its imports then fail with NoLink."""

    async def go() -> bool:
        async with _client(nats_url, lattice, timeout) as lc:
            found: bool = await lc.del_link(source_id, package, name, timeout=timeout)
            return found

    if not _run(go):
        _not_found(f"no link {name!r} of {source_id!r} for {package} on lattice {lattice!r} "
                   f"(see `trellis link list --source {source_id}`)")
    click.echo(f"deleted link {name!r} of {source_id} for {package}")


@link.command("list")
@click.option("--source", "source_id", callback=_name, help="Only the links of this component.")
@NATS_URL_OPT
@LATTICE_OPT
@TIMEOUT_OPT
@JSON_OPT
def link_list(source_id: str | None, nats_url: str, lattice: str, timeout: float,
              as_json: bool) -> None:
    """List the links of the lattice (of --source), sorted by source, package and name."""

    async def go() -> list[LinkDef]:
        async with _client(nats_url, lattice, timeout) as lc:
            links: list[LinkDef] = await lc.list_links(source_id, timeout=timeout)
            return links

    links = _run(go)
    if as_json:
        click.echo(json.dumps([li.model_dump(mode="json") for li in links], indent=2))
        return
    if not links:
        click.echo(f"no links on lattice {lattice!r}", err=True)
        return
    rows = [("SOURCE", "PACKAGE", "INTERFACES", "NAME", "TARGET", "CONFIG")]
    for li in links:
        configs = ",".join(f"{side}={c}" for side, c in (("source", li.source_config),
                                                         ("target", li.target_config)) if c)
        rows.append((li.source_id, li.package, ",".join(li.interfaces), li.name, li.target_id,
                     configs))
    _table(rows)


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)]
        click.echo("  ".join([*cells, r[-1]]).rstrip())


# -- trellis config --------------------------------------------------------------------------


@click.group("config")
def config() -> None:
    """Named config: string settings that links hand to their source or target.

    \b
    Links refer to a config by name (--source-config / --target-config), so one config
    serves many links. Putting a config replaces all its values; hosts see it within a
    second.
      trellis config put cache bucket=sessions url=nats://127.0.0.1:4222
      trellis config get cache
    """


@config.command("put")
@click.argument("name", callback=_name)
@click.argument("items", nargs=-1, metavar="KEY=VALUE…")
@NATS_URL_OPT
@LATTICE_OPT
@TIMEOUT_OPT
def config_put(name: str, items: tuple[str, ...], nats_url: str, lattice: str,
               timeout: float) -> None:
    """Create or replace config NAME with the given KEY=VALUE pairs (none: empty)."""
    values = _values(items)

    async def go() -> None:
        async with _client(nats_url, lattice, timeout) as lc:
            await lc.put_config(name, values, timeout=timeout)

    _run(go)
    click.echo(f"config {name!r}: {len(values)} value(s)")


@config.command("get")
@click.argument("name", callback=_name)
@NATS_URL_OPT
@LATTICE_OPT
@TIMEOUT_OPT
@JSON_OPT
def config_get(name: str, nats_url: str, lattice: str, timeout: float, as_json: bool) -> None:
    """Print config NAME as KEY=VALUE lines (or a JSON object)."""

    async def go() -> dict[str, str] | None:
        async with _client(nats_url, lattice, timeout) as lc:
            values: dict[str, str] | None = await lc.get_config(name, timeout=timeout)
            return values

    values = _run(go)
    if values is None:
        _not_found(f"no config {name!r} on lattice {lattice!r} (see `trellis config list`)")
        return
    if as_json:
        click.echo(json.dumps(values, indent=2, sort_keys=True))
        return
    for key in sorted(values):
        click.echo(f"{key}={values[key]}")


@config.command("del")
@click.argument("name", callback=_name)
@NATS_URL_OPT
@LATTICE_OPT
@TIMEOUT_OPT
def config_del(name: str, nats_url: str, lattice: str, timeout: float) -> None:
    """Remove config NAME (links naming it can then no longer be bound)."""

    async def go() -> bool:
        async with _client(nats_url, lattice, timeout) as lc:
            found: bool = await lc.del_config(name, timeout=timeout)
            return found

    if not _run(go):
        _not_found(f"no config {name!r} on lattice {lattice!r} (see `trellis config list`)")
    click.echo(f"deleted config {name!r}")


@config.command("list")
@NATS_URL_OPT
@LATTICE_OPT
@TIMEOUT_OPT
@JSON_OPT
def config_list(nats_url: str, lattice: str, timeout: float, as_json: bool) -> None:
    """List the named configs and their keys."""

    async def go() -> list[ConfigDef]:
        async with _client(nats_url, lattice, timeout) as lc:
            configs: list[ConfigDef] = await lc.list_configs(timeout=timeout)
            return configs

    configs = _run(go)
    if as_json:
        click.echo(json.dumps([c.model_dump(mode="json") for c in configs], indent=2))
        return
    if not configs:
        click.echo(f"no named config on lattice {lattice!r}", err=True)
        return
    _table([("NAME", "KEYS"), *((c.name, ",".join(sorted(c.values))) for c in configs)])


COMMANDS = (link, config)
