"""The ``trellis`` command line: thin — parse, build config, call the library, map errors.

Exit codes (also in ``trellis --help``):
  0 success · 1 the guest failed (trap, limit, ``run`` returned an error) · 2 bad usage or
  arguments · 3 the component cannot be loaded or its imports cannot be satisfied ·
  124 deadline exceeded · for ``wasi:cli/command`` components, the guest's own exit code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from ..lattice.errors import (
    ArgumentError,
    ComponentLoadError,
    DeadlineExceeded,
    FunctionNotFound,
    TrellisError,
    UnsatisfiedImports,
    WitValueError,
)
from ..lattice.wit import wave

EXIT_GUEST, EXIT_USAGE, EXIT_LOAD, EXIT_TIMEOUT = 1, 2, 3, 124

EPILOG = """\b
Exit codes: 0 ok, 1 guest failed (trap or limit), 2 bad usage or arguments,
3 component cannot be loaded, 124 deadline exceeded; `run` of a wasi:cli
command exits with the guest's own code. Every option can also be set
through the environment variable shown next to it."""


def _progress(msg: str) -> None:
    click.echo(msg, err=True)


def _fail(exc: BaseException) -> NoReturn:
    click.echo(f"{type(exc).__name__}: {exc}", err=True)
    if isinstance(exc, DeadlineExceeded):
        sys.exit(EXIT_TIMEOUT)
    if isinstance(exc, (ComponentLoadError, UnsatisfiedImports)):
        sys.exit(EXIT_LOAD)
    if isinstance(exc, (ArgumentError, WitValueError, FunctionNotFound)):
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_GUEST)


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn TrellisErrors into `TypeName: message` and a meaningful exit code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TrellisError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trellis", prog_name="trellis")
@click.option("--cache-dir", type=click.Path(path_type=Path), envvar="TRELLIS_CACHE_DIR",
              show_envvar=True, help="Compile/build cache (default ~/.cache/trellis).")
@click.pass_context
def main(ctx: click.Context, cache_dir: Path | None) -> None:
    """Trellis: run WebAssembly components (Component Model, WASI 0.2) on a lattice.

    \b
    Start here:
      trellis build examples/greeter            build a Python guest (componentize-py)
      trellis inspect greeter.wasm              print its world in WIT
      trellis run --invoke 'greet("Developer")' greeter.wasm
    """
    ctx.obj = {"cache_dir": cache_dir}


def _runtime(ctx: click.Context, *, fuel: bool = False) -> Any:
    from .runtime.engine import EngineConfig
    from .runtime.runtime import Runtime

    return Runtime(engine=EngineConfig(consume_fuel=fuel), cache_dir=ctx.obj["cache_dir"])


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print exports/imports as JSON instead.")
@click.pass_context
@_guarded
def inspect(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Print FILE's world (imports and exports) in WIT syntax."""
    from ..lattice.wit.printer import render_world
    from .runtime.loader import load_component

    rt = _runtime(ctx)
    try:
        compiled = load_component(rt.engine, file, cache=rt.cache, progress=_progress)
    finally:
        rt.close()
    if as_json:
        click.echo(json.dumps({
            "name": compiled.name, "digest": compiled.ref, "size": compiled.size,
            "imports": [i.name for i in compiled.world.imports]
            + [f.name for f in compiled.world.import_funcs],
            "exports": sorted(compiled.functions),
        }, indent=2))
        return
    click.echo(render_world(compiled.world), nl=False)


# Everything after FILE belongs to the guest, as with `wasmtime run`.
@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("file", type=click.Path(path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--invoke", "expr", envvar="TRELLIS_INVOKE", show_envvar=True, metavar="CALL",
              help="Call an export: WAVE form 'greet(\"Developer\")', or a bare function name "
                   "with its arguments after FILE. Without it, run the wasi:cli/run export.")
@click.option("--timeout", type=float, envvar="TRELLIS_TIMEOUT", show_envvar=True,
              help="Wall-clock deadline in seconds (the guest is interrupted).")
@click.option("--max-memory", type=int, envvar="TRELLIS_MAX_MEMORY", show_envvar=True,
              metavar="MIB", help="Cap on the guest's linear memory, in MiB.")
@click.option("--fuel", type=int, envvar="TRELLIS_FUEL", show_envvar=True,
              help="Fuel budget (instructions, roughly); enables fuel metering.")
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE",
              help="Environment variable for the guest (repeatable).")
@click.option("--dir", "dirs", multiple=True, metavar="HOST[::GUEST]",
              help="Preopen a host directory for the guest (repeatable).")
@click.pass_context
@_guarded
def run(ctx: click.Context, file: Path, args: tuple[str, ...], expr: str | None,
        timeout: float | None, max_memory: int | None, fuel: int | None,
        envs: tuple[str, ...], dirs: tuple[str, ...]) -> None:
    """Run FILE once: call one export (--invoke) or run it as a wasi:cli command.

    \b
    Examples:
      trellis run --invoke 'greet("Developer")' greeter.wasm
      trellis run --invoke greet greeter.wasm Developer
      trellis run --invoke 'example:greeter/greet#greet("x")' greeter.wasm
      trellis run --timeout 2 --max-memory 64 hello-cli.wasm arg1 arg2
    """
    from .runtime.instances import GuestExit, InstancePolicy, Limits, WasiOptions
    from .runtime.runtime import ComponentConfig

    if args[:1] == ("--",):  # `trellis run app.wasm -- -x` still means argv [-x]
        args = args[1:]
    env_pairs = []
    for item in envs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--env")
        env_pairs.append((key, value))
    preopens = []
    for item in dirs:
        host, _, guest = item.partition("::")
        if not Path(host).is_dir():
            raise click.BadParameter(f"{host!r} is not a directory", param_hint="--dir")
        preopens.append((host, guest or host))
    try:
        limits = Limits(timeout, fuel, None if max_memory is None else max_memory * 2**20)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    wasi = WasiOptions(
        args=(file.name, *args) if expr is None else (file.name,),
        env=tuple(env_pairs), preopens=tuple(preopens), stdout="inherit", stderr="inherit",
    )
    config = ComponentConfig(InstancePolicy(max_instances=1), limits, wasi, missing_imports="trap")
    rt = _runtime(ctx, fuel=fuel is not None)
    try:
        comp = rt.load(file, config=config, progress=_progress)
        if comp.instances.unsatisfied:
            shown = ", ".join(comp.instances.unsatisfied[:6])
            more = f" and {len(comp.instances.unsatisfied) - 6} more" \
                if len(comp.instances.unsatisfied) > 6 else ""
            click.echo(f"warning: not provided here, traps if called: {shown}{more}", err=True)
        if expr is None:
            _run_command(comp)
            return
        if "(" in expr:
            name, raw_args = wave.parse_call(expr)
            fn = comp.resolve(name)
            values = wave.parse_args(raw_args, fn.type.params)
        else:
            fn = comp.resolve(expr)
            params = fn.type.params
            if len(args) != len(params):
                raise ArgumentError(
                    f"{fn.key} takes {len(params)} argument(s) "
                    f"({', '.join(n for n, _ in params) or 'none'}), got {len(args)}"
                )
            values = []
            for (pname, pty), text in zip(params, args, strict=True):
                try:
                    values.append(wave.parse_cli_arg(text, pty))
                except WitValueError as exc:
                    raise ArgumentError(f"argument `{pname}`: {exc}") from None
        try:
            result = comp.call(fn.key, *values)
        except GuestExit as exc:
            sys.exit(exc.code)
        # Like `wasmtime run --invoke`: a function without a result prints `()`.
        click.echo("()" if fn.type.result is None else wave.format_value(result, fn.type.result))
    finally:
        rt.close()


def _run_command(comp: Any) -> None:
    from .runtime.instances import GuestExit

    runs = [k for k in comp.functions() if k.startswith("wasi:cli/run@") and k.endswith("#run")]
    if not runs:
        raise ArgumentError(
            f"{comp.name} is not a wasi:cli command (no wasi:cli/run export); "
            "pass --invoke to call one of: " + ", ".join(comp.functions()[:10])
        )
    from ..lattice.wit.values import Err

    try:
        outcome = comp.call(runs[0])
    except GuestExit as exc:
        sys.exit(exc.code)
    if isinstance(outcome, Err):
        sys.exit(EXIT_GUEST)


@main.command()
@click.argument("src", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--world", envvar="TRELLIS_BUILD_WORLD", show_envvar=True,
              help="WIT world to build (default: the only world in SRC/wit).")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Also copy the component here.")
@click.option("--wit", type=click.Path(path_type=Path, exists=True),
              help="The guest's WIT (default: SRC/wit).")
@click.option("--wit-dep", "wit_deps", multiple=True,
              type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A WIT package folder the guest's WIT uses (repeatable), e.g. one shipped "
                   "in an installed package such as spin-sdk; staged outside SRC for the build.")
@_guarded
def build(src: Path, world: str | None, output: Path | None, wit: Path | None,
          wit_deps: tuple[Path, ...]) -> None:
    """Build the Python guest in SRC (app.py + wit/) into a component, cached by digest.

    A Spin Python SDK app (app.py importing spin_sdk, no wit/) builds against the SDK's WIT.
    Prints the path of the built .wasm. Needs componentize-py (the dev extras).
    """
    from .build import build_python_component

    app = src / "app.py"
    if wit is None and not (src / "wit").exists() and app.is_file() \
            and "spin_sdk" in app.read_text(errors="replace"):
        from .http.spin import build_spin_app  # a Spin Python SDK app: the SDK's own WIT

        path = build_spin_app(src, out=output, progress=_progress)
    else:
        path = build_python_component(src, world=world, wit=wit, wit_deps=wit_deps,
                                      out=output, progress=_progress)
    click.echo(str(output or path))


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_context
@_guarded
def compile(ctx: click.Context, file: Path) -> None:  # noqa: A001 - the verb users expect
    """Compile FILE into the AOT cache now, so the first run starts fast."""
    rt = _runtime(ctx)
    try:
        comp = rt.load(file, progress=_progress)
    finally:
        rt.close()
    how = "cached" if comp.compiled.compile_seconds is None else \
        f"compiled in {comp.compiled.compile_seconds:.2f}s"
    click.echo(f"{comp.compiled.ref} {how}")


def _register_lattice_commands() -> None:
    from .cli_lattice import COMMANDS
    from .cli_links import COMMANDS as LINK_COMMANDS
    from .cli_providers import COMMANDS as PROVIDER_COMMANDS
    from .cli_spy import spy

    for cmd in (*COMMANDS, *LINK_COMMANDS, *PROVIDER_COMMANDS):
        main.add_command(cmd)
    main.add_command(spy)
    from .cli_http import serve  # noqa: E402 - `trellis serve` (wasi:http/proxy)
    main.add_command(serve)


_register_lattice_commands()

if __name__ == "__main__":
    main()
