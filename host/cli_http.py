"""``trellis serve FILE``: serve a ``wasi:http/proxy`` component over HTTP/1.1, like
``wasmtime serve``. Thin: options → ``ServeOptions`` → ``host/http/serve.py``."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import click

from ..lattice.errors import TrellisError
from .cli_lattice import pool_options
from .http.outgoing import parse_rule
from .http.serve import DEFAULT_ADDR, ServeOptions, Serving, serve_forever, split_addr
from .http.spin import kv_provider, variables_from_env
from .runtime.engine import PoolConfig
from .runtime.instances import WasiOptions


def _progress(msg: str) -> None:
    click.echo(msg, err=True)


def _guarded(fn: Any) -> Any:
    """``cli._guarded`` without importing ``cli`` here (it imports this module)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TrellisError as exc:
            from .cli import _fail

            _fail(exc)

    return wrapper


def _kv(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        kv_provider(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _addr(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        split_addr(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _outbound(ctx: click.Context, param: click.Parameter,
              value: tuple[str, ...]) -> tuple[str, ...]:
    """Repeated options, each possibly comma-separated (as the environment variable is)."""
    patterns = tuple(p.strip() for item in value for p in item.split(",") if p.strip())
    for pattern in patterns:
        try:
            parse_rule(pattern)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return patterns


@click.command()
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--addr", default=DEFAULT_ADDR, show_default=True, envvar="TRELLIS_SERVE_ADDR",
              show_envvar=True, callback=_addr, help="Address to listen on (HOST:PORT).")
@click.option("--pooled", is_flag=True, envvar="TRELLIS_SERVE_POOLED", show_envvar=True,
              help="Reuse warm instances instead of a fresh instance per request.")
@click.option("--max-concurrency", type=click.IntRange(1), default=16, show_default=True,
              envvar="TRELLIS_SERVE_MAX_CONCURRENCY", show_envvar=True,
              help="Requests (instances) at once; more wait until their deadline (then 503).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, envvar="TRELLIS_SERVE_TIMEOUT", show_envvar=True,
              help="Seconds per request (then 504).")
@click.option("--max-memory", type=click.IntRange(1), envvar="TRELLIS_SERVE_MAX_MEMORY",
              show_envvar=True, metavar="MIB", help="Linear memory cap per instance, in MiB.")
@click.option("--max-body", type=click.IntRange(0), default=100, show_default=True,
              envvar="TRELLIS_SERVE_MAX_BODY", show_envvar=True, metavar="MIB",
              help="Largest request body, in MiB (then 413).")
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE",
              help="Environment variable for the guest (repeatable).")
@click.option("--kv", default="memory", show_default=True, envvar="TRELLIS_SERVE_KV",
              show_envvar=True, callback=_kv, metavar="memory|redis://…|nats://…",
              help="Store behind wasi:keyvalue and Spin key-value.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="Value for wasi:config and Spin variables (repeatable; also from "
                   "TRELLIS_SERVE_VAR_NAME).")
@click.option("--allow-outbound", "allow_outbound", multiple=True, callback=_outbound,
              envvar="TRELLIS_SERVE_ALLOW_OUTBOUND", show_envvar=True, metavar="PATTERN",
              help="Host the component may call over HTTP (repeatable or comma-separated: "
                   "example.com, *.example.com, 127.0.0.1:8081, *). Default: none (denied).")
@click.option("--outbound-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, envvar="TRELLIS_SERVE_OUTBOUND_TIMEOUT", show_envvar=True,
              help="Seconds an outgoing request may wait to connect, for its first byte and "
                   "between bytes (a component may ask for less).")
@click.option("--quiet", is_flag=True, envvar="TRELLIS_SERVE_QUIET", show_envvar=True,
              help="Discard the guest's stdout and stderr (default: passed through).")
@pool_options
@click.pass_context
@_guarded
def serve(ctx: click.Context, file: Path, addr: str, pooled: bool, max_concurrency: int,
          timeout: float, max_memory: int | None, max_body: int, envs: tuple[str, ...],
          kv: str, variables: tuple[str, ...], allow_outbound: tuple[str, ...],
          outbound_timeout: float, quiet: bool, pool_instances: int,
          pool_keep_resident: int) -> None:
    """Serve FILE, a wasi:http/proxy component, over HTTP until interrupted.

    \b
    Examples:
      trellis serve http-hello.wasm
      trellis serve --addr 0.0.0.0:8080 --pooled --max-concurrency 32 app.wasm
      trellis serve --kv redis://127.0.0.1:6379 --var greeting=hi http-spin.wasm
      trellis serve --allow-outbound api.example.com --allow-outbound 127.0.0.1:9000 app.wasm
      curl http://127.0.0.1:8080/
    """
    env = []
    for item in envs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--env")
        env.append((key, value))
    values = variables_from_env(os.environ)
    for item in variables:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--var")
        values[name] = value
    out = "discard" if quiet else "inherit"
    options = ServeOptions(
        file=file, addr=addr, pooled=pooled, max_concurrency=max_concurrency, timeout=timeout,
        max_memory=None if max_memory is None else max_memory * 2**20,
        max_body=max_body * 2**20,
        wasi=WasiOptions(env=tuple(env), stdout=out, stderr=out),
        cache_dir=ctx.obj["cache_dir"], kv=kv, variables=tuple(sorted(values.items())),
        allow_outbound=allow_outbound, outbound_timeout=outbound_timeout,
        pool=PoolConfig(pool_instances, pool_keep_resident * 2**20) if pool_instances else None,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _progress(f"loading {file}…")

    def ready(s: Serving) -> Any:
        mode = "pooled" if pooled else "fresh instance per request"
        _progress(f"serving {file} on {s.url}/ ({mode}); Ctrl-C to stop")

    try:
        asyncio.run(serve_forever(options, ready))
    except KeyboardInterrupt:
        _progress("stopped")
