"""``trellis serve`` end to end: the http-hello example (componentize-py, plain wasi:http
bindings) behind the asyncio HTTP/1.1 server, fresh and pooled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _client import request
from trellis.host.http.serve import ServeOptions, Serving
from trellis.host.runtime.instances import WasiOptions

MiB = 2**20


@pytest.fixture(params=["fresh", "pooled"])
async def served(request: pytest.FixtureRequest, http_hello_wasm: Path,
                 tmp_path: Path) -> AsyncIterator[tuple[Serving, list[bytes]]]:
    out: list[bytes] = []
    options = ServeOptions(
        file=http_hello_wasm, addr="127.0.0.1:0", pooled=request.param == "pooled",
        timeout=3.0, max_body=64 * MiB, max_concurrency=4,
        wasi=WasiOptions(stdout=out.append, stderr=out.append),
    )
    async with Serving(options) as s:
        yield s, out


async def test_get_hello(served: tuple[Serving, list[bytes]]) -> None:
    s, _ = served
    r = await request(s.url)
    assert (r.status, r.body) == (200, b"hello from trellis\n")
    assert r.header("content-type") == "text/plain" and r.header("x-hello") == "1"
    assert r.header("content-length") == "19"


async def test_post_echo_and_request_headers(served: tuple[Serving, list[bytes]]) -> None:
    s, _ = served
    r = await request(s.url, "POST", "/echo", b"ping " * 1000,
                      headers=[("content-type", "text/x-ping")])
    assert (r.status, r.body) == (200, b"ping " * 1000)
    assert r.header("content-type") == "text/x-ping"
    r = await request(s.url, "GET", "/headers?q=1", headers=[("x-custom", "abc")])
    assert r.status == 200
    assert r.body.splitlines() == [b"GET /headers?q=1", b"x-custom: abc"]


async def test_status_404_and_stdout(served: tuple[Serving, list[bytes]]) -> None:
    s, out = served
    r = await request(s.url, path="/status/201")
    assert (r.status, r.body, r.header("content-length")) == (201, b"", "0")
    r = await request(s.url, path="/missing")
    assert (r.status, r.body) == (404, b"no route for /missing\n")
    r = await request(s.url, path="/log")
    assert (r.status, r.body) == (200, b"logged\n")
    assert b"".join(out).splitlines() == [b"hello on stdout", b"hello on stderr"]


async def test_chunked_upload_and_large_streaming_bodies(
        served: tuple[Serving, list[bytes]]) -> None:
    s, _ = served
    chunks = [bytes([65 + i % 26]) * 70000 for i in range(20)]
    raw = (b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
           + b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n")
    r = await request(s.url, "POST", raw=raw)
    assert (r.status, r.body) == (200, b"".join(chunks))
    assert r.header("transfer-encoding") == "chunked"  # too big to hold back for a length
    r = await request(s.url, path=f"/size/{5 * MiB}")
    assert r.status == 200 and len(r.body) == 5 * MiB and r.body.count(b"x") == 5 * MiB


async def test_trap_is_500_with_an_error_id_and_serving_goes_on(
        served: tuple[Serving, list[bytes]], caplog: pytest.LogCaptureFixture) -> None:
    s, _ = served
    with caplog.at_level(logging.ERROR, logger="trellis.http"):
        r = await request(s.url, path="/trap")
    assert r.status == 500
    error_id = r.body.decode().split("error id ")[1].rstrip(")\n")
    assert any(error_id in rec.getMessage() and "GuestTrap" in rec.getMessage()
               for rec in caplog.records)
    assert (await request(s.url)).status == 200


async def test_timeout_is_504_and_serving_goes_on(served: tuple[Serving, list[bytes]]) -> None:
    s, _ = served
    loop = asyncio.get_running_loop()
    started = loop.time()
    r = await request(s.url, path="/spin")
    assert r.status == 504
    assert loop.time() - started < 3.0 + 2.0
    assert (await request(s.url)).status == 200


async def test_body_over_the_limit_is_413(http_hello_wasm: Path) -> None:
    options = ServeOptions(file=http_hello_wasm, addr="127.0.0.1:0", max_body=1000,
                           wasi=WasiOptions())
    async with Serving(options) as s:
        r = await request(s.url, "POST", "/echo", b"x" * 1001)
        assert r.status == 413
        raw = (b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
               b"3e8\r\n" + b"y" * 1000 + b"\r\n" + b"10\r\n" + b"z" * 16 + b"\r\n0\r\n\r\n")
        r = await request(s.url, "POST", raw=raw)
        assert r.status in (413, 200)  # 413 unless the guest already answered with 200
        assert (await request(s.url, "POST", "/echo", b"x" * 1000)).status == 200


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
    b"GET / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx",
    b"GET nothing HTTP/1.1\r\n\r\n",
])
async def test_malformed_http_is_400_and_never_reaches_the_component(
        http_hello_wasm: Path, raw: bytes) -> None:
    async with Serving(ServeOptions(file=http_hello_wasm, addr="127.0.0.1:0",
                                    wasi=WasiOptions())) as s:
        r = await request(s.url, raw=raw)
        assert r.status == 400
        assert s.server is not None
        assert s.server.proxy.component.instances.stats.calls == 0
