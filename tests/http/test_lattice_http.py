"""HTTP through the lattice: the ``http-server`` provider on host A routes by link config to
http-hello on host B; each request crosses NATS (``trellis.http.{lattice}.{component}``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _client import request
from trellis.host import Host
from trellis.host.http.serve import ServeOptions, Serving
from trellis.host.runtime.cache import default_cache_dir
from trellis.lattice.client import LatticeClient
from trellis.lattice.links import LinkDef
from trellis.providers.http_server import HttpServerProvider
from trellis.providers.sdk import Link, ProviderContext

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lattice"))
from _lattice import Hosts  # noqa: E402

pytestmark = pytest.mark.slow
MiB = 2**20


def http_link(provider: str, component: str, name: str, config: str | None = None) -> LinkDef:
    return LinkDef(source_id=provider, target_id=component, wit_namespace="wasi",
                   wit_package="http", interfaces=["incoming-handler"], name=name,
                   source_config=config)


@dataclass
class Lattice:
    url: str
    provider: HttpServerProvider
    lc: LatticeClient
    hosts: Hosts
    b: Host
    mode: str


async def until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture(params=["fresh", "pooled"])
async def web(request: pytest.FixtureRequest, nats_url: str, lattice: str, tmp_path: Path,
              http_hello_wasm: Path) -> AsyncIterator[Lattice]:
    """http-hello on host b (fresh or pooled instances); http-server ``web`` on host a routing
    ``/hello`` (stripped) to it."""
    hosts = Hosts(nats_url, lattice, tmp_path, aot_dir=Path(default_cache_dir()))
    try:
        a = await hosts.start("a")
        b = await hosts.start("b")
        async with LatticeClient(nats_url, lattice, timeout=10.0) as lc:
            await lc.start_component(http_hello_wasm, "hello", host_id="b", timeout=300,
                                     mode=request.param, max_instances=4)
            await lc.put_config("web", {"addr": "127.0.0.1:0", "timeout": "3",
                                        "max_body": str(8 * MiB)})
            await lc.put_config("hello-route", {"path": "/hello", "strip_prefix": "true"})
            await lc.start_provider("http-server", "web", host_id="a", config="web")
            await lc.put_link(http_link("web", "hello", "hello", "hello-route"))
            provider = a.providers.local("web")
            assert isinstance(provider, HttpServerProvider)
            await until(lambda: provider.routes)
            yield Lattice(provider.url, provider, lc, hosts, b, request.param)
    finally:
        await hosts.aclose()


async def test_answers_like_trellis_serve(web: Lattice, http_hello_wasm: Path) -> None:
    cases = [("GET", "/", b"", []), ("GET", "/headers?q=1", b"", [("x-custom", "abc")]),
             ("POST", "/echo", b"ping " * 1000, [("content-type", "text/x-ping")]),
             ("GET", "/status/418", b"", []), ("GET", "/missing", b"", []),
             ("HEAD", "/", b"", []),
             ("POST", "/trailers", b"abc", [])]
    async with Serving(ServeOptions(file=http_hello_wasm, addr="127.0.0.1:0")) as s:
        for method, path, body, headers in cases:
            want = await request(s.url, method, path, body, headers=headers)
            got = await request(web.url, method, "/hello" + path, body, headers=headers)
            assert (got.status, got.headers, got.body) == (want.status, want.headers,
                                                           want.body), (method, path)
    r = await request(web.url, path="/hello")  # the prefix itself: the component's "/"
    assert (r.status, r.body, r.header("x-hello")) == (200, b"hello from trellis\n", "1")


async def test_large_bodies_cross_nats_as_streams(web: Lattice) -> None:
    assert web.provider.context is not None
    assert web.provider.context.nc.max_payload < 5 * MiB  # so it must be streamed
    data = bytes(range(256)) * (5 * MiB // 256)
    up = await request(web.url, "POST", "/hello/echo", data,
                       headers=[("content-type", "application/octet-stream")])
    assert (up.status, len(up.body)) == (200, len(data)) and up.body == data
    down = await request(web.url, path=f"/hello/size/{5 * MiB}")
    assert (down.status, down.body) == (200, b"x" * 5 * MiB)


async def test_no_route_trap_and_stopped_component(web: Lattice) -> None:
    for path in ("/", "/helloworld", "/other/x"):
        r = await request(web.url, path=path)
        assert r.status == 404 and b"no route" in r.body, path
    r = await request(web.url, path="/hello/trap")
    assert r.status == 500 and b"error id" in r.body
    r = await request(web.url, path="/hello/")
    assert (r.status, r.body) == (200, b"hello from trellis\n")  # the provider keeps serving
    # Fresh instances are made ahead of requests, as under `trellis serve`; stopping drops them.
    spares = web.b.local_component("hello").instances._spares
    assert (spares is not None) == (web.mode == "fresh")

    await web.lc.stop_component("hello", host_id="b")
    assert spares is None or spares._closed
    r = await request(web.url, path="/hello/")
    assert r.status == 503 and b"no host runs component 'hello'" in r.body


async def test_deadline_body_limit_and_malformed(web: Lattice) -> None:
    started = time.monotonic()
    r = await request(web.url, path="/hello/spin", timeout=20)
    assert r.status == 504 and time.monotonic() - started < 10
    assert b"error id" in r.body, r.body  # the host stopped the guest and answered
    for framing in (b"content-length: %d\r\n\r\n" % (9 * MiB),
                    b"transfer-encoding: chunked\r\n\r\n%x\r\n" % (9 * MiB)):
        r = await request(web.url, raw=b"POST /hello/echo HTTP/1.1\r\nhost: x\r\n" + framing)
        assert r.status == 413
    r = await request(web.url, raw=b"GET /hello/ HTTP/1.1\r\nbad header\r\n\r\n")
    assert r.status == 400
    r = await request(web.url, path="/hello/")
    assert r.status == 200


async def test_routes_by_longest_prefix_and_host() -> None:
    p = HttpServerProvider({"addr": "127.0.0.1:0"})
    p.context = ProviderContext(provider_id="web")

    async def put(target: str, name: str, **config: str) -> None:
        await p.link_put(Link(source="web", target=target, namespace="wasi", package="http",
                              interfaces=("incoming-handler",), name=name,
                              source_config=config))

    await put("root", "r")
    await put("api", "a", path="/api/")
    await put("v2", "v", path="/api/v2")
    await put("site", "s", host="example.com")
    await put("other", "o", path="/x")
    await p.link_put(Link(source="someone", target="kv", namespace="wasi", package="keyvalue",
                          interfaces=("store",)))  # not a route

    def target(path: str, host: str | None = None) -> str | None:
        r = p.route(path, host)
        return r.component if r else None

    assert target("/") == "root" and target("/apix") == "root"
    assert target("/api") == "api" and target("/api/v1?x") == "api"
    assert target("/api/v2") == "v2" and target("/api/v2/users") == "v2"
    assert target("/", "example.com:8080") == "site" and target("/", "EXAMPLE.com") == "site"
    assert target("/api", "example.com") == "api"  # a longer prefix beats a host match
    assert len(p.routes) == 5


def test_trellis_up_serves_http_on_a_route(http_hello_wasm: Path, lattice: str) -> None:
    """``trellis up --http ADDR --route ID=/PREFIX``: the provider in the up host, one link."""
    cmd = [sys.executable, "-m", "trellis.host.cli", "up", "--nats-port", "0", "--lattice",
           lattice, "--start", f"hello={http_hello_wasm}", "--http", "127.0.0.1:0",
           "--route", "hello=/hi"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env={**os.environ, "TRELLIS_NATS_URL": ""}) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(6)]  # NATS … started, http, route
            url = next(x.split()[1] for x in lines if x.startswith("http:"))
            assert any(x.startswith("route:") and x.rstrip().endswith("-> hello")
                       for x in lines)
            r = asyncio.run(request(url, path="/hi/"))
            assert (r.status, r.body) == (200, b"hello from trellis\n")
            assert asyncio.run(request(url, path="/")).status == 404
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_what_the_component_prints_reaches_the_host_log(
        web: Lattice, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="trellis.component.hello"):
        got = await request(web.url, "GET", "/hello/log")
        assert got.status == 200
        await until(lambda: len(caplog.records) >= 2)
    lines = {(r.levelno, r.getMessage()) for r in caplog.records
             if r.name == "trellis.component.hello"}
    assert lines == {(logging.INFO, "hello on stdout"), (logging.WARNING, "hello on stderr")}
