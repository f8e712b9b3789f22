"""``wasi:cli/command`` components: argv, env, preopens and stdio reach the guest, output and
exit codes come back — through ``trellis run`` and through the Python API.

The guest is ``tests/guests/cli-app`` (componentize-py). Its exit status goes through WASI
0.2.0's ``exit(result)``, which carries ok/err only, so ``sys.exit(3)`` arrives as 1 (the
reference ``wasmtime run`` reports 1 too). That an arbitrary code passes through the host is
shown with a hand-written component that calls ``exit-with-code``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from trellis.host import ComponentConfig, Runtime
from trellis.host.runtime.instances import GuestExit, WasiOptions
from trellis.host.runtime.runtime import Component
from trellis.lattice.errors import GuestTrap
from trellis.lattice.wit.values import Ok

RUN_KEY = re.compile(r"^wasi:cli/run@0\.2\.\d+#run$")

# A minimal command: `run` exits through `wasi:cli/exit#exit-with-code(3)` (WASI >= 0.2.4,
# which wasmtime provides), so the host sees a code that WASI 0.2.0 guests cannot express.
EXIT_3_WAT = r"""
(component
  (import "wasi:cli/exit@0.2.6" (instance $exit
    (export "exit-with-code" (func (param "status-code" u8)))))
  (core func $exit_with_code (canon lower (func $exit "exit-with-code")))
  (core module $m
    (import "host" "exit-with-code" (func $exit (param i32)))
    (func (export "run") (result i32) (call $exit (i32.const 3)) (i32.const 0)))
  (core instance $i (instantiate $m
    (with "host" (instance (export "exit-with-code" (func $exit_with_code))))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run_instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run_instance))
)
"""


def trellis(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trellis.host.cli", *args], capture_output=True, text=True,
        timeout=300, env=dict(os.environ),
    )


def guest_report(stdout: str) -> tuple[list[str], str]:
    """The guest's argv (after argv[0]) and $GREETING, parsed from its first two lines."""
    lines = stdout.splitlines()
    assert lines[0].startswith("args: ") and lines[1].startswith("greeting: "), stdout
    return json.loads(lines[0].removeprefix("args: ")), lines[1].removeprefix("greeting: ")


def run_key(comp: Component) -> str:
    keys: list[str] = [k for k in comp.functions() if RUN_KEY.match(k)]
    assert len(keys) == 1, comp.functions()
    return keys[0]


def captured(
    args: tuple[str, ...],
    env: tuple[tuple[str, str], ...] = (),
    preopens: tuple[tuple[str, str], ...] = (),
) -> tuple[ComponentConfig, list[bytes], list[bytes]]:
    """A config whose stdout/stderr go into two lists (one chunk per guest write)."""
    out: list[bytes] = []
    err: list[bytes] = []
    wasi = WasiOptions(args=args, env=env, preopens=preopens,
                       stdout=out.append, stderr=err.append)
    return ComponentConfig(wasi=wasi), out, err


# -- trellis run ------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_args_env_stdio_and_exit_code(cli_app_wasm: Path) -> None:
    out = trellis("run", "--env", "GREETING=hi", str(cli_app_wasm), "a", "b", "--exit", "3")
    assert guest_report(out.stdout) == (["a", "b", "--exit", "3"], "hi")
    assert "to-stderr" in out.stderr
    assert out.returncode == 1, out.stderr  # sys.exit(3) under WASI 0.2.0: see the docstring
    assert "Traceback" not in out.stderr and "GuestExit" not in out.stderr

    out = trellis("run", "--env", "GREETING=hi", str(cli_app_wasm), "a", "b")
    assert out.returncode == 0, out.stderr
    assert guest_report(out.stdout) == (["a", "b"], "hi")
    assert "to-stderr" in out.stderr

    out = trellis("run", str(cli_app_wasm), "--exit", "0")
    assert out.returncode == 0, out.stderr
    assert guest_report(out.stdout) == (["--exit", "0"], "")


def test_cli_passes_any_exit_code_through(tmp_path: Path) -> None:
    wat = tmp_path / "exit3.wat"
    wat.write_text(EXIT_3_WAT)
    out = trellis("run", str(wat))
    assert out.returncode == 3, out.stderr
    assert out.stderr.count("\n") <= 1 and "Traceback" not in out.stderr


@pytest.mark.slow
def test_cli_preopened_directory(cli_app_wasm: Path, tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "x.txt").write_text("hello from the host\nsecond line\n")

    out = trellis("run", "--dir", f"{host_dir}::/data", str(cli_app_wasm), "--read", "/data/x.txt")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[2:] == ["hello from the host", "second line"]

    out = trellis("run", str(cli_app_wasm), "--read", "/data/x.txt")
    assert out.returncode == 1
    assert "hello from the host" not in out.stdout
    assert "FileNotFoundError" in out.stderr  # the guest's own traceback …
    frames = [ln for ln in out.stderr.splitlines() if ln.lstrip().startswith('File "')]
    assert frames and all('/app.py"' in ln for ln in frames), out.stderr  # … none of trellis
    assert out.stderr.rstrip().splitlines()[-1].startswith("GuestTrap: ")


@pytest.mark.slow
def test_cli_options_after_file_belong_to_the_guest(cli_app_wasm: Path) -> None:
    out = trellis("run", str(cli_app_wasm), "x", "--env", "GREETING=no", "--timeout", "5")
    assert guest_report(out.stdout) == (["x", "--env", "GREETING=no", "--timeout", "5"], "")


@pytest.mark.slow
def test_cli_double_dash_passes_option_lookalikes_to_the_guest(cli_app_wasm: Path) -> None:
    out = trellis("run", str(cli_app_wasm), "--", "x", "--env", "GREETING=no")
    assert out.returncode == 0, out.stderr
    assert guest_report(out.stdout) == (["x", "--env", "GREETING=no"], "")


# -- Python API -------------------------------------------------------------------------------


@pytest.mark.slow
def test_api_captures_stdio_and_returns_ok(cli_app_wasm: Path, tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("preopened\n")
    config, out, err = captured(
        args=("cli-app", "a", "b", "--read", "/data/x.txt"), env=(("GREETING", "hi"),),
        preopens=((str(tmp_path), "/data"),),
    )
    with Runtime() as rt:
        comp = rt.load(cli_app_wasm, config=config)
        assert comp.call(run_key(comp)) == Ok(None)
    stdout = b"".join(out).decode()
    assert guest_report(stdout) == (["a", "b", "--read", "/data/x.txt"], "hi")
    assert stdout.endswith("preopened\n")
    assert b"".join(err) == b"to-stderr\n"


@pytest.mark.slow
def test_api_exit_zero_is_success_and_nonzero_raises_guest_exit(cli_app_wasm: Path) -> None:
    config, out, err = captured(args=("cli-app", "--exit", "0"))
    with Runtime() as rt:
        comp = rt.load(cli_app_wasm, config=config)
        assert comp.call(run_key(comp)) == Ok(None)  # exit(ok) ends the run successfully
    config, out, err = captured(args=("cli-app", "--exit", "3"))
    with Runtime() as rt:
        comp = rt.load(cli_app_wasm, config=config)
        with pytest.raises(GuestExit) as info:
            comp.call(run_key(comp))
    assert info.value.code == 1  # WASI 0.2.0 exit takes only ok/err, so 3 arrives as 1
    assert guest_report(b"".join(out).decode())[0] == ["--exit", "3"]
    assert b"to-stderr" in b"".join(err)


@pytest.mark.slow
def test_api_failed_read_is_a_guest_trap(cli_app_wasm: Path) -> None:
    config, _out, err = captured(args=("cli-app", "--read", "/data/x.txt"))
    with Runtime() as rt:
        comp = rt.load(cli_app_wasm, config=config)
        with pytest.raises(GuestTrap):
            comp.call(run_key(comp))
    assert b"FileNotFoundError" in b"".join(err)


def test_api_passes_any_exit_code_through(tmp_path: Path) -> None:
    wat = tmp_path / "exit3.wat"
    wat.write_text(EXIT_3_WAT)
    with Runtime() as rt:
        comp = rt.load(wat)
        with pytest.raises(GuestExit) as info:
            comp.call(run_key(comp))
    assert info.value.code == 3


@pytest.mark.slow
async def test_concurrent_components_keep_their_output_apart(cli_app_wasm: Path) -> None:
    per_component = 6
    names = ("alpha", "beta")
    captures = {name: captured(args=("cli-app", name), env=(("GREETING", name),))
                for name in names}
    async with Runtime() as rt:
        comps = {name: await rt.load_async(cli_app_wasm, config=config)
                 for name, (config, _out, _err) in captures.items()}
        key = run_key(comps["alpha"])
        results = await asyncio.gather(
            *(comps[name].invoke(key) for _ in range(per_component) for name in names)
        )
    assert results == [Ok(None)] * per_component * len(names)
    for name, other in (names, names[::-1]):  # each against the other
        _config, out, err = captures[name]
        stdout = b"".join(out).decode()
        # Runs of one component share its callback and may interleave chunk by chunk, but
        # nothing of the other component's runs may appear.
        assert other not in stdout
        assert stdout.count(f'["{name}"]') == per_component
        assert stdout.count(f"greeting: {name}") == per_component
        stderr = b"".join(err)
        assert stderr.count(b"to-stderr") == per_component
        assert stderr.replace(b"to-stderr", b"").strip() == b""
