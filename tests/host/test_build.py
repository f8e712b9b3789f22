"""host/build.py: digest caching, atomic concurrent builds, errors; the guests themselves.

Real componentize-py runs cost ~10 s each, so the cache, locking and timeout behaviour is tested
against a fake componentize-py script; only the session guests and one broken build are real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from _wasmtime_cli import WasmtimeCliError, wasmtime_cache_config, wasmtime_invoke
from trellis.host import build
from trellis.host.build import BuildError, build_python_component, source_digest
from wasmtime import component as wc

# Paths as in tests/conftest.py (imported by name `conftest` it would be ambiguous).
_REPO = Path(__file__).resolve().parents[2]
GREETER_DIR = _REPO / "examples" / "greeter"
CALC_WAT = _REPO / "examples" / "calc-wat" / "calc.wat"
GREETING = "Hello from Python, Developer! Built with the Component Model."

FAKE_TOOL = """\
#!{python}
# A stand-in for componentize-py: logs each build, sleeps, writes a component header.
import os, sys, time

args = sys.argv[1:]
if args == ["--version"]:
    print("componentize-py 0.0.0-fake")
    sys.exit(0)
with open({log!r}, "a") as fh:
    fh.write(" ".join(args) + "\\n")
    fh.write("VIRTUAL_ENV=" + os.environ.get("VIRTUAL_ENV", "") + "\\n")
    fh.write("APP_DIR=" + ",".join(sorted(os.listdir(args[args.index("-p") + 1]))) + "\\n")
time.sleep(float(os.environ.get("FAKE_SLEEP", "0.3")))
if os.environ.get("FAKE_FAIL"):
    sys.stderr.write("AssertionError: NameError: name 'oops' is not defined\\n")
    sys.exit(1)
with open(args[args.index("-o") + 1], "wb") as fh:
    fh.write(b"\\0asm\\x0d\\x00\\x01\\x00" + b"fake component")
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private TRELLIS_CACHE_DIR; returns its guests/ directory."""
    monkeypatch.setenv("TRELLIS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "guests"


@pytest.fixture
def guest(tmp_path: Path) -> Path:
    """A private copy of the greeter's sources, free to edit."""
    dst = tmp_path / "greeter"
    shutil.copytree(GREETER_DIR, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.fixture
def fake_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install the fake componentize-py; returns its invocation log."""
    log = tmp_path / "fake.log"
    script = tmp_path / "bin" / "componentize-py"
    script.parent.mkdir()
    script.write_text(FAKE_TOOL.format(python=sys.executable, log=str(log)))
    script.chmod(0o755)
    monkeypatch.setattr(build, "find_componentize_py", lambda: script)
    return log


def _builds(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if " componentize " in line]


def _digest(src: Path, **kw: object) -> str:
    kw.setdefault("tool_version", "componentize-py 0.25.1")
    return source_digest(src, **kw)  # type: ignore[arg-type]


# --- digest -------------------------------------------------------------------------------------


def test_digest_covers_app_wit_world_and_tool(guest: Path, tmp_path: Path) -> None:
    base = _digest(guest)
    other_checkout = tmp_path / "elsewhere"
    shutil.copytree(guest, other_checkout)
    assert _digest(other_checkout) == base, "location must not matter: caches are shared"

    (guest / "app.py").write_text((guest / "app.py").read_text() + "\n# edit\n")
    edited = _digest(guest)
    assert edited != base

    wit = guest / "wit" / "greeter.wit"
    wit.write_text(wit.read_text().replace("greet: func", "greet2: func"))
    assert _digest(guest) not in (base, edited)

    assert _digest(other_checkout, world="greeter-world") != base
    assert _digest(other_checkout, tool_version="componentize-py 9.9.9") != base
    assert _digest(other_checkout, export_names={"a:b/c": "d"}) != base
    (other_checkout / "helpers").mkdir()
    (other_checkout / "helpers" / "util.py").write_text("X = 1\n")
    assert _digest(other_checkout) != base, "every .py file counts, in subpackages too"


def test_digest_ignores_non_sources(guest: Path) -> None:
    base = _digest(guest)
    (guest / "README.md").write_text("changed\n")
    (guest / "__pycache__").mkdir(exist_ok=True)
    (guest / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    (guest / "old.wasm").write_bytes(b"junk")
    assert _digest(guest) == base


# --- real builds ----------------------------------------------------------------------------


def test_second_build_is_a_cache_hit(greeter_wasm: Path) -> None:
    lines: list[str] = []
    started = time.perf_counter()
    again = build_python_component(GREETER_DIR, progress=lines.append)
    elapsed = time.perf_counter() - started
    assert again == greeter_wasm
    assert elapsed < 2.0
    assert lines == [f"cached: {greeter_wasm}"]
    assert greeter_wasm.parent == build.guest_cache_dir()


def test_out_receives_a_copy(greeter_wasm: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist" / "greeter.wasm"
    assert build_python_component(GREETER_DIR, out=out) == out
    assert out.read_bytes() == greeter_wasm.read_bytes()


@pytest.mark.slow
def test_broken_app_raises_build_error_with_python_error(guest: Path, cache: Path) -> None:
    app = guest / "app.py"
    app.write_text(app.read_text() + "\nundefined_helper_for_the_test()\n")
    lines: list[str] = []
    with pytest.raises(BuildError) as info:
        build_python_component(guest, progress=lines.append)
    message = str(info.value)
    assert "componentize-py failed" in message
    assert "NameError: name 'undefined_helper_for_the_test' is not defined" in message
    assert info.value.stderr.strip() in message
    assert lines and lines[0].startswith("building ") and "componentize-py (≈10 s)" in lines[0]
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


# --- errors -------------------------------------------------------------------------------------


def test_missing_componentize_py_says_how_to_install(
    guest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setattr(sys, "executable", str(empty / "python"))
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(BuildError, match=r"pip install -e '\.\[dev\]'"):
        build_python_component(guest)


def test_bad_source_dirs(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="not a directory"):
        build_python_component(tmp_path / "missing")
    (tmp_path / "g").mkdir()
    with pytest.raises(BuildError, match=r"no app\.py"):
        build_python_component(tmp_path / "g")
    (tmp_path / "g" / "app.py").write_text("")
    with pytest.raises(BuildError, match="no WIT"):
        build_python_component(tmp_path / "g")


# --- cache, locking and timeouts, with the fake tool -------------------------------------------


def test_fake_build_is_hermetic_and_cached(guest: Path, cache: Path, fake_tool: Path) -> None:
    (guest / "README.md").write_text("not shipped\n")
    first = build_python_component(guest, world="greeter-world")
    assert first.parent == cache and first.read_bytes().startswith(b"\0asm")
    assert first.stat().st_mode & 0o777 == 0o644, "the cache is shared: not mkstemp's 0600"
    assert build_python_component(guest, world="greeter-world") == first
    log = fake_tool.read_text()
    assert len(_builds(fake_tool)) == 1
    assert "-w greeter-world componentize -p " in log and " app -o " in log
    assert "APP_DIR=app.py\n" in log, "only the hashed sources are handed to componentize-py"
    venv = log.split("VIRTUAL_ENV=")[1].splitlines()[0]
    assert venv and not venv.startswith(sys.prefix), "componentize-py must not see our venv"
    assert sorted(p.name for p in cache.iterdir()) == [first.name, f"{first.name}.lock"]


def test_concurrent_threads_build_once(
    guest: Path, cache: Path, fake_tool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SLEEP", "1.0")
    results: list[Path] = []
    errors: list[BaseException] = []
    lines: list[str] = []

    def run() -> None:
        try:
            results.append(build_python_component(guest, progress=lines.append))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results) == 4 and len(set(results)) == 1
    assert len(_builds(fake_tool)) == 1
    assert sum(line.startswith("building ") for line in lines) == 1
    assert any(line.startswith("waiting for a concurrent build") for line in lines)
    assert sum(line.startswith("cached: ") for line in lines) == 3


def test_concurrent_processes_build_once(guest: Path, cache: Path, fake_tool: Path) -> None:
    tool = fake_tool.parent / "bin" / "componentize-py"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from trellis.host import build
        build.find_componentize_py = lambda: Path({str(tool)!r})
        print(build.build_python_component(Path({str(guest)!r})))
        """
    )
    env = dict(os.environ, FAKE_SLEEP="1.0")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )
        for _ in range(2)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    assert outputs[0] == outputs[1] and Path(outputs[0]).is_file()
    assert len(_builds(fake_tool)) == 1


def test_timeout_kills_the_build(
    guest: Path, cache: Path, fake_tool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SLEEP", "30")
    started = time.monotonic()
    with pytest.raises(BuildError, match="did not finish within 1 s"):
        build_python_component(guest, timeout=1.0)
    assert time.monotonic() - started < 10
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_failure_carries_stderr(
    guest: Path, cache: Path, fake_tool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "1")
    with pytest.raises(BuildError) as info:
        build_python_component(guest)
    assert "NameError: name 'oops' is not defined" in info.value.stderr
    assert "NameError: name 'oops' is not defined" in str(info.value)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


# --- the guests run in plain wasmtime-py ----------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.cache = str(wasmtime_cache_config())  # 18 MB guests take ~12 s to compile cold
    return wasmtime.Engine(config)


def _instantiate(engine: wasmtime.Engine, path: Path) -> tuple[wasmtime.Store, wc.Instance]:
    component = wc.Component.from_file(engine, str(path))
    linker = wc.Linker(engine)
    linker.add_wasip2()
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    return store, linker.instantiate(store, component)


def _call(
    store: wasmtime.Store, inst: wc.Instance, iface: str | None, name: str, *args: Any
) -> Any:
    parent = inst.get_export_index(store, iface) if iface else None
    index = inst.get_export_index(store, name, parent)
    assert index is not None, f"{iface}#{name} not exported"
    func = inst.get_func(store, index)
    assert func is not None
    return func(store, *args)


def test_greeter_runs_in_wasmtime_py(engine: wasmtime.Engine, greeter_wasm: Path) -> None:
    store, inst = _instantiate(engine, greeter_wasm)
    assert _call(store, inst, "example:greeter/greet@0.1.0", "greet", "Developer") == GREETING


def test_kitchen_runs_in_wasmtime_py(engine: wasmtime.Engine, kitchen_wasm: Path) -> None:
    store, inst = _instantiate(engine, kitchen_wasm)
    assert _call(store, inst, None, "hello") == "Hello from the kitchen!"
    assert _call(store, inst, "test:kitchen/types@0.1.0", "add", 2, 40) == 42
    assert _call(store, inst, "test:kitchen/other@0.1.0", "add", 2, 40) == 1042
    types = "test:kitchen/types@0.1.0"
    assert _call(store, inst, types, "echo-string", "héllo ✓") == "héllo ✓"
    counter = _call(store, inst, types, "[constructor]counter", 5)
    assert _call(store, inst, types, "[method]counter.inc", counter) == 6
    assert _call(store, inst, types, "read-counter", counter) == 6  # borrow<counter>
    made = _call(store, inst, types, "make-counter", 41)  # own<counter> returned
    assert _call(store, inst, types, "[method]counter.inc", made) == 42


def test_calc_wat_loads_from_text(calc_wat: str) -> None:
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    inst = wc.Linker(engine).instantiate(store, wc.Component(engine, calc_wat))
    iface = "example:calc/calc@0.1.0"
    assert _call(store, inst, iface, "add", 1, 2) == 3
    for _ in range(3):  # post-return resets the bump heap; repeated calls must not corrupt
        assert _call(store, inst, iface, "greet", "Developer") == "Hello, Developer!"
    assert _call(store, inst, iface, "greet", "ü" * 50_000) == f"Hello, {'ü' * 50_000}!"
    assert _call(store, inst, None, "version") == "calc 0.1.0 (hand-written WAT)"
    with pytest.raises(wasmtime.WasmtimeError, match="unreachable"):
        _call(store, inst, iface, "fail")


# --- the reference CLI: exact output format -------------------------------------------------

PERSON = (
    '{name: "Ann", age: 42, score: 1.5, active: true, home: {x: 1, y: -2}, '
    'nickname: some("annie"), lucky-numbers: [7, 13]}'
)
# A `none` option field is left out of the CLI's record output.
PERSON_NONE_IN = (
    '{name: "Bo", age: 0, score: 0.0, active: false, home: {x: 0, y: 0}, nickname: none, '
    "lucky-numbers: []}"
)
PERSON_NONE_OUT = (
    '{name: "Bo", age: 0, score: 0, active: false, home: {x: 0, y: 0}, lucky-numbers: []}'
)

CLI_CASES = [
    ("echo-bool(true)", "true"),
    ("echo-s8(-128)", "-128"),
    ("echo-u64(18446744073709551615)", "18446744073709551615"),
    ("echo-f32(0.1)", "0.1"),
    ("echo-f64(-0.0)", "-0"),
    ("echo-f64(nan)", "nan"),
    ("echo-char('✓')", "'✓'"),
    ('echo-string("tab\\t \\"q\\" it\'s")', '"tab\\t \\"q\\" it\\\'s"'),
    ("echo-bytes([1, 2, 255])", "[1, 2, 255]"),
    ('echo-list(["a", "b c"])', '["a", "b c"]'),
    (f"echo-record({PERSON})", PERSON),
    (f"echo-record({PERSON_NONE_IN})", PERSON_NONE_OUT),
    ('echo-tuple((1, "two", 3.5))', '(1, "two", 3.5)'),
    ("echo-variant(nothing)", "nothing"),
    ("echo-variant(at({x: 1, y: 2}))", "at({x: 1, y: 2})"),
    ("echo-enum(dark-orange)", "dark-orange"),
    ("echo-flags({admin-only, read})", "{read, admin-only}"),
    ("echo-option(none)", "none"),
    ("echo-nested-option(some(none))", "some(none)"),
    ("echo-result(err(blue))", "err(blue)"),
    ("echo-result-unit(ok)", "ok"),
    (f"echo-list-records([{PERSON}])", f"[{PERSON}]"),
    ("noop()", "()"),
    ("hello()", '"Hello from the kitchen!"'),
    ("test:kitchen/types.add@0.1.0(2147483647, 1)", "-2147483648"),
    ("test:kitchen/other.add@0.1.0(1, 2)", "1003"),
]


@pytest.mark.parametrize(("expr", "expected"), CLI_CASES, ids=[c[0][:40] for c in CLI_CASES])
def test_kitchen_through_wasmtime_cli(
    wasmtime_cli: Path, kitchen_wasm: Path, expr: str, expected: str
) -> None:
    assert wasmtime_invoke(wasmtime_cli, kitchen_wasm, expr) == expected


def test_wasmtime_cli_errors(wasmtime_cli: Path, kitchen_wasm: Path) -> None:
    with pytest.raises(WasmtimeCliError, match="Multiple instances contained funcs named `add`"):
        wasmtime_invoke(wasmtime_cli, kitchen_wasm, "add(1, 2)")
    with pytest.raises(WasmtimeCliError) as info:
        wasmtime_invoke(wasmtime_cli, kitchen_wasm, 'fail("boom")')
    assert info.value.returncode == 134  # the CLI exits like abort() on a trap
    assert "RuntimeError: boom" in info.value.stderr
    assert "wasm trap: wasm `unreachable` instruction executed" in info.value.stderr


def test_calc_wat_through_wasmtime_cli(wasmtime_cli: Path) -> None:
    assert wasmtime_invoke(wasmtime_cli, CALC_WAT, "example:calc/calc.add@0.1.0(1, 2)") == "3"
    assert wasmtime_invoke(wasmtime_cli, CALC_WAT, 'greet("Developer")') == '"Hello, Developer!"'


def test_wit_deps_are_staged_outside_the_source_and_hashed(
    guest: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wit_deps`` (standard WIT from installed packages) join the guest's WIT as
    ``deps/<name>`` in a scratch directory; the source tree is untouched and the digest
    covers them."""
    dep = tmp_path / "installed" / "keyvalue-2024-10-17"
    dep.mkdir(parents=True)
    (dep / "store.wit").write_text("package wasi:keyvalue@0.2.0-draft2;\ninterface store {}\n")
    base = _digest(guest)
    with_dep = _digest(guest, wit_deps=[dep])
    assert with_dep != base
    seen: list[list[str]] = []

    def fake_run(exe: Path, src: Path, wit: Path, *args: Any) -> None:
        seen.append(sorted(p.relative_to(wit).as_posix() for p in wit.rglob("*.wit")))
        assert not wit.is_relative_to(guest)
        args[2].write_bytes(b"\0asm\x0d\x00\x01\x00")  # (world, export_names, target, …)

    monkeypatch.setattr(build, "_run_componentize", fake_run)
    monkeypatch.setattr(build, "_componentize_py_version", lambda _exe: "componentize-py 0")
    monkeypatch.setattr(build, "find_componentize_py", lambda: Path(sys.executable))
    out = build_python_component(guest, wit_deps=[dep])
    assert seen == [["deps/keyvalue-2024-10-17/store.wit", "greeter.wit"]]
    assert not (guest / "wit" / "deps").exists()
    assert build_python_component(guest, wit_deps=[dep]) == out and len(seen) == 1  # cached
    dep.joinpath("store.wit").write_text("package wasi:keyvalue@0.2.0-draft2;\n")
    assert _digest(guest, wit_deps=[dep]) != with_dep
    with pytest.raises(BuildError, match="not a directory"):
        build_python_component(guest, wit_deps=[tmp_path / "missing"])
