"""examples/http-spin (Spin Python SDK 3.x) through the lattice: the ``http-server`` provider on
host a, the Spin app on host b, answering as under ``trellis serve``. Spin key-value is the
app's ``wasi:keyvalue`` link (a keyvalue-memory provider), Spin variables its ``wasi:config``
link (the ``config`` provider, values from the link's target config)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _client import request
from test_lattice_http import http_link, until
from trellis.host.http.serve import ServeOptions, Serving
from trellis.host.http.spin import build_spin_app
from trellis.host.runtime.cache import default_cache_dir
from trellis.host.runtime.instances import WasiOptions
from trellis.lattice.client import LatticeClient
from trellis.lattice.links import LinkDef
from trellis.providers.http_server import HttpServerProvider

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lattice"))
from _lattice import Hosts  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
GREETING = "hello from config"


@pytest.fixture(scope="module")
def spin_app_wasm() -> Path:
    return build_spin_app(REPO / "examples" / "http-spin")


@pytest.fixture(params=["fresh", "pooled"])
async def spin_web(request: pytest.FixtureRequest, nats_url: str, lattice: str, tmp_path: Path,
                   spin_app_wasm: Path) -> AsyncIterator[str]:
    """The provider's URL: ``/`` routes to the Spin app on host b."""
    hosts = Hosts(nats_url, lattice, tmp_path, aot_dir=Path(default_cache_dir()))
    try:
        a = await hosts.start("a")
        await hosts.start("b")
        async with LatticeClient(nats_url, lattice, timeout=10.0) as lc:
            await lc.start_component(spin_app_wasm, "spin", host_id="b", timeout=300,
                                     mode=request.param, max_instances=4)
            await lc.start_provider("keyvalue-memory", "kv", host_id="b")
            await lc.start_provider("config", "vars", host_id="b")
            await lc.put_config("spin-vars", {"greeting": GREETING})
            await lc.put_link(LinkDef(source_id="spin", target_id="kv", wit_namespace="wasi",
                                      wit_package="keyvalue", interfaces=["store", "atomics"]))
            await lc.put_link(LinkDef(source_id="spin", target_id="vars", wit_namespace="wasi",
                                      wit_package="config", interfaces=["store"],
                                      target_config="spin-vars"))
            await lc.put_config("web", {"addr": "127.0.0.1:0", "timeout": "10"})
            await lc.start_provider("http-server", "web", host_id="a", config="web")
            await lc.put_link(http_link("web", "spin", "spin"))
            provider = a.providers.local("web")
            assert isinstance(provider, HttpServerProvider)
            await until(lambda: provider.routes)
            await until_linked(provider.url)
            yield provider.url
    finally:
        await hosts.aclose()


async def until_linked(url: str) -> None:
    """Until the links are bound on host b (within about a second): the variable answers."""
    deadline = time.monotonic() + 10
    while (await request(url, path="/var/greeting")).status != 200:
        assert time.monotonic() < deadline, "the wasi:config link never reached host b"
        await asyncio.sleep(0.05)


async def test_spin_answers_through_the_lattice_like_under_serve(
        spin_web: str, spin_app_wasm: Path) -> None:
    steps = [("GET", "/", b""), ("GET", "/var/greeting", b""), ("GET", "/var/missing", b""),
             ("GET", "/var/Bad-Name", b""), ("GET", "/kv/colour", b""),
             ("PUT", "/kv/colour", b"green"), ("GET", "/kv/colour", b""),
             ("GET", "/wasi-kv/colour", b""), ("GET", "/count", b""), ("GET", "/count", b""),
             ("GET", "/kv", b""), ("DELETE", "/kv/colour", b""), ("GET", "/kv/colour", b""),
             ("GET", "/nowhere", b"")]
    options = ServeOptions(file=spin_app_wasm, addr="127.0.0.1:0", timeout=10.0,
                           variables=(("greeting", GREETING),), wasi=WasiOptions())
    async with Serving(options) as served:
        for method, path, body in steps:
            want = await request(served.url, method, path, body)
            got = await request(spin_web, method, path, body)
            assert (got.status, got.headers, got.body) == (want.status, want.headers,
                                                           want.body), (method, path)
    assert (await request(spin_web, path="/kv/colour")).status == 404
    r = await request(spin_web, path="/var/greeting")
    assert (r.status, r.body) == (200, GREETING.encode() + b"\n")


async def test_unsupported_spin_import_is_a_500_and_serving_goes_on(spin_web: str) -> None:
    r = await request(spin_web, path="/sqlite")
    assert r.status == 500 and b"error id" in r.body
    assert (await request(spin_web)).status == 200
