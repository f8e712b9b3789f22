"""`trellis` CLI: output identical to `wasmtime run --invoke`, clear errors, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _wasmtime_cli import wasmtime_invoke

ROOT = Path(__file__).resolve().parents[2]
CALC = ROOT / "examples" / "calc-wat" / "calc.wat"


def trellis(*args: str, timeout: float = 300, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trellis.host.cli", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )


def trellis_ok(*args: str) -> str:
    out = trellis(*args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# (trellis call, wasmtime call): wasmtime spells interface functions `ns:pkg/iface.func@ver`.
KITCHEN_CALLS = [
    "echo-bool(true)",
    "echo-s8(-128)",
    "echo-u8(255)",
    "echo-s16(-32768)",
    "echo-u16(65535)",
    "echo-s32(-2147483648)",
    "echo-u32(4294967295)",
    "echo-s64(-9223372036854775808)",
    "echo-u64(18446744073709551615)",
    "echo-f32(0.1)",
    "echo-f32(16777217)",
    "echo-f32(nan)",
    "echo-f64(0.30000000000000004)",
    "echo-f64(-0.0)",
    "echo-f64(1e300)",
    "echo-f64(-inf)",
    "echo-char('✓')",
    "echo-char('\\'')",
    'echo-string("héllo \\"q\\" \\n tab\\t ✓ it\'s \\u{1}")',
    'echo-string("")',
    "echo-bytes([1, 2, 255])",
    "echo-bytes([])",
    'echo-list(["a", "b c"])',
    '''echo-record({name: "Ann", age: 42, score: 1.5, active: true, home: {x: 1, y: -2},
      nickname: some("annie"), lucky-numbers: [7, 13]})''',
    'echo-record({name: "Bo", age: 0, score: 0, active: false, home: {x: 0, y: 0},'
    ' nickname: none, lucky-numbers: []})',
    'echo-tuple((255, "", -0.0))',
    "echo-variant(nothing)",
    "echo-variant(circle(2.5))",
    'echo-variant(label("hi"))',
    "echo-variant(at({x: 1, y: 2}))",
    "echo-enum(dark-orange)",
    "echo-flags({admin-only, read})",
    "echo-flags({})",
    "echo-option(some(5))",
    "echo-option(none)",
    'echo-nested-option(some(some("x")))',
    "echo-nested-option(some(none))",
    "echo-nested-option(none)",
    'echo-result(ok("yes"))',
    "echo-result(err(blue))",
    "echo-result-unit(ok)",
    "echo-result-unit(err)",
    'echo-list-records([{name: "A", age: 1, score: 2.5, active: true, home: {x: 3, y: 4},'
    ' lucky-numbers: [5]}])',
    "types#add(2147483647, 1)",
    "noop()",
]


def _wasmtime_spelling(call: str, iface: str = "test:kitchen/types", ver: str = "0.1.0") -> str:
    name, paren, rest = call.partition("(")
    name = name.removeprefix("types#")
    return f"{iface}.{name}@{ver}{paren}{rest}"


def test_kitchen_output_identical_to_wasmtime(kitchen_wasm: Path, wasmtime_cli: Path) -> None:
    """Every WIT type, one process each side; the outputs must match to the character."""
    mismatches = []
    ours = _batch_run(kitchen_wasm, KITCHEN_CALLS)
    for call, got in zip(KITCHEN_CALLS, ours, strict=True):
        want = wasmtime_invoke(wasmtime_cli, kitchen_wasm, _wasmtime_spelling(call))
        if got != want:
            mismatches.append(f"{call}\n  trellis:  {got}\n  wasmtime: {want}")
    assert not mismatches, "\n".join(mismatches)


def _batch_run(wasm: Path, calls: list[str]) -> list[str]:
    """Run the calls through the CLI code path in one process (the compile is cached anyway,
    but 45 interpreter start-ups would dominate the test's time)."""
    script = (
        "import sys, io, contextlib, json\n"
        "from trellis.host.cli import main\n"
        "out = []\n"
        "for call in json.loads(sys.argv[1]):\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try: main(['run', '--invoke', call, sys.argv[2]], standalone_mode=False)\n"
        "        except SystemExit as e: buf.write(f'<exit {e.code}>')\n"
        "    out.append(buf.getvalue().strip())\n"
        "print(json.dumps(out))\n"
    )
    import json

    res = subprocess.run([sys.executable, "-c", script, json.dumps(calls), str(wasm)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_greeter_matches_wasmtime_in_both_call_forms(greeter_wasm: Path,
                                                     wasmtime_cli: Path) -> None:
    want = wasmtime_invoke(wasmtime_cli, greeter_wasm, 'greet("Developer")')
    assert want == '"Hello from Python, Developer! Built with the Component Model."'
    assert trellis_ok("run", "--invoke", 'greet("Developer")', str(greeter_wasm)) == want
    # The seed article's form: function name, then plain arguments after the file.
    assert trellis_ok("run", "--invoke", "greet", str(greeter_wasm), "Developer") == want
    assert trellis_ok("run", "--invoke", 'greet#greet("Developer")', str(greeter_wasm)) == want


def test_ambiguous_name_is_refused_like_wasmtime(kitchen_wasm: Path) -> None:
    out = trellis("run", "--invoke", "add(1, 2)", str(kitchen_wasm))
    assert out.returncode == 2
    assert "several interfaces" in out.stderr and "test:kitchen/other@0.1.0#add" in out.stderr
    assert trellis_ok("run", "--invoke", "other#add(1, 2)", str(kitchen_wasm)) == "1003"


def test_wat_example_matches_wasmtime(wasmtime_cli: Path) -> None:
    for ours, theirs in [
        ("add(2, 40)", "example:calc/calc.add@0.1.0(2, 40)"),
        ('greet("WAT")', 'example:calc/calc.greet@0.1.0("WAT")'),
        ("version()", "version()"),
    ]:
        assert trellis_ok("run", "--invoke", ours, str(CALC)) == \
            wasmtime_invoke(wasmtime_cli, CALC, theirs)


def test_inspect_prints_wit(greeter_wasm: Path) -> None:
    out = trellis_ok("inspect", str(greeter_wasm))
    assert "package example:greeter@0.1.0" in out
    assert "greet: func(name: string) -> string;" in out
    assert "export example:greeter/greet@0.1.0;" in out
    calc = trellis_ok("inspect", str(CALC))
    assert "export version: func() -> string;" in calc


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "--invoke", "add(1)", str(CALC)], 2, "expected 2 argument"),
        (["run", "--invoke", 'add(1, "x")', str(CALC)], 2, "`b`"),
        (["run", "--invoke", "add(1, 99999999999)", str(CALC)], 2, "u32"),
        (["run", "--invoke", "nope()", str(CALC)], 2, "no exported function 'nope'"),
        (["run", "--invoke", "add(1, 2", str(CALC)], 2, "WitValueError"),
        (["run", "--invoke", "fail()", str(CALC)], 1, "GuestTrap"),
        (["run", "--invoke", "add(1,2)", "/nonexistent.wasm"], 3, "no such file"),
        (["run", "--max-memory", "0", "--invoke", "version()", str(CALC)], 2, "max_memory"),
    ],
)
def test_errors_are_one_line_with_exit_codes(args: list[str], code: int, message: str) -> None:
    out = trellis(*args)
    assert out.returncode == code, (out.returncode, out.stderr)
    assert message in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("garbage", [os.urandom(64), b"\n(\xff\xfe\x00" + os.urandom(59)],
                         ids=["random", "binary-with-a-paren"])
def test_garbage_file(tmp_path: Path, garbage: bytes) -> None:
    """Bytes that are neither a binary nor UTF-8 WAT text are named as such, even when a line of
    them starts with ``(`` as WAT does."""
    bad = tmp_path / "garbage.wasm"
    bad.write_bytes(garbage)
    out = trellis("inspect", str(bad))
    assert out.returncode == 3 and "not a WebAssembly binary" in out.stderr
    assert "Traceback" not in out.stderr


def test_help_mentions_env_vars_and_exit_codes() -> None:
    out = trellis_ok("run", "--help")
    assert "TRELLIS_TIMEOUT" in out and "TRELLIS_MAX_MEMORY" in out and "TRELLIS_FUEL" in out
    assert "124" in trellis_ok("--help")


def test_timeout_flag_and_env(tmp_path: Path) -> None:
    from _wat import LIMITS

    wat = tmp_path / "limits.wat"
    wat.write_text(LIMITS)
    out = trellis("run", "--timeout", "0.2", "--invoke", "spin()", str(wat))
    assert out.returncode == 124 and "DeadlineExceeded" in out.stderr
    out = trellis("run", "--invoke", "spin()", str(wat), env={"TRELLIS_TIMEOUT": "0.2"})
    assert out.returncode == 124
    out = trellis("run", "--fuel", "1000", "--invoke", "spin()", str(wat))
    assert out.returncode == 1 and "fuel" in out.stderr
    out = trellis("run", "--max-memory", "1", "--invoke", "hog()", str(wat))
    assert out.returncode == 1 and "memory" in out.stderr
