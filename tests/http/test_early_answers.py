"""HTTP over the lattice at the edges of an exchange: answers given before the request body
was all read say ``connection: close`` and close at once, a slowly streamed response reaches
the client as it is written (also under ``trellis serve``), oversized chunked framing is a
4xx, and a host never keeps a subscription for a body stream it could not open."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from _client import Reply, read_reply
from test_lattice_http import http_link, until
from trellis.host.host import Host
from trellis.host.http.serve import ServeOptions, Serving
from trellis.host.runtime.cache import default_cache_dir
from trellis.lattice import subjects
from trellis.lattice.bodies import StreamHeaders
from trellis.lattice.client import LatticeClient
from trellis.lattice.http1 import MAX_HEAD, MAX_TRAILERS, HttpHeaders
from trellis.lattice.models import Headers
from trellis.providers.http_server import HttpServerProvider

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lattice"))
from _lattice import Hosts  # noqa: E402

pytestmark = pytest.mark.slow
MiB = 2**20


@dataclass
class Web:
    url: str
    lattice: str
    b: Host


@pytest.fixture
async def web(nats_url: str, lattice: str, tmp_path: Path,
              http_hello_wasm: Path) -> AsyncIterator[Web]:
    """http-server on host a (max_body 4 MiB) routing ``/hello`` to http-hello on host b and
    ``/ghost`` to a component that runs nowhere."""
    hosts = Hosts(nats_url, lattice, tmp_path, aot_dir=Path(default_cache_dir()))
    try:
        a = await hosts.start("a")
        b = await hosts.start("b")
        async with LatticeClient(nats_url, lattice, timeout=10.0) as lc:
            await lc.start_component(http_hello_wasm, "hello", host_id="b", timeout=300)
            await lc.put_config("web", {"addr": "127.0.0.1:0", "timeout": "10",
                                        "max_body": str(4 * MiB)})
            await lc.put_config("hello-route", {"path": "/hello", "strip_prefix": "true"})
            await lc.put_config("ghost-route", {"path": "/ghost", "strip_prefix": "true"})
            await lc.start_provider("http-server", "web", host_id="a", config="web")
            await lc.put_link(http_link("web", "hello", "hello", "hello-route"))
            await lc.put_link(http_link("web", "ghost", "ghost", "ghost-route"))
            provider = a.providers.local("web")
            assert isinstance(provider, HttpServerProvider)
            await until(lambda: len(provider.routes) == 2)
            yield Web(provider.url, lattice, b)
    finally:
        await hosts.aclose()


async def _exchange(url: str, raw: bytes) -> tuple[Reply, float]:
    """Send ``raw`` (a request whose body may be unfinished); the reply, and the seconds from
    its end until the server closed the connection."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        with_body = asyncio.create_task(writer.drain())
        reply = await asyncio.wait_for(read_reply(reader), 20)
        answered = time.monotonic()
        # The server ends the connection (without a reset: the answer was read whole).
        assert await asyncio.wait_for(reader.read(), 20) == b""
        closed = time.monotonic() - answered
        with_body.cancel()
        return reply, closed
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_an_answer_before_the_body_was_read_says_connection_close(web: Web) -> None:
    # The guest answers without reading: 2 of 3 MiB sent, the rest never comes.
    r, _ = await _exchange(web.url, b"POST /hello/status/201 HTTP/1.1\r\nhost: x\r\n"
                           b"content-length: %d\r\n\r\n%b" % (3 * MiB, b"x" * 2 * MiB))
    assert (r.status, r.header("connection")) == (201, "close")
    # A chunked body that grows past max_body after it started streaming: 413.
    r, _ = await _exchange(web.url, b"POST /hello/trailers HTTP/1.1\r\nhost: x\r\n"
                           b"transfer-encoding: chunked\r\n\r\n%x\r\n%b\r\n%x\r\n"
                           % (2 * MiB, b"y" * 2 * MiB, 3 * MiB))
    assert (r.status, r.header("connection")) == (413, "close")


async def test_no_responders_answers_and_closes_at_once(web: Web) -> None:
    # The body is streamed (over max_payload) but nobody takes it: the 503 must not wait the
    # abort grace for a receiver that never comes before the connection is let go.
    r, closed = await _exchange(web.url, b"POST /ghost/ HTTP/1.1\r\nhost: x\r\n"
                                b"content-length: %d\r\n\r\n%b" % (2 * MiB, b"z" * 2 * MiB))
    assert (r.status, r.header("connection")) == (503, "close")
    assert closed < 0.5, f"the connection stayed open {closed:.2f}s after the answer"


async def test_oversized_chunked_framing_is_refused(web: Web) -> None:
    head = b"POST /hello/trailers HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    many = b"".join(b"x-t%d: v\r\n" % i for i in range(MAX_TRAILERS + 1))
    for body in (b"3\r\nabc\r\n0\r\n" + many + b"\r\n",  # whole: refused before forwarding
                 b"%x\r\n%b\r\n0\r\n%b\r\n" % (2 * MiB, b"a" * 2 * MiB, many)):  # streamed
        r, _ = await _exchange(web.url, head + body)
        assert (r.status, r.header("connection")) == (431, "close"), r.body
    r, _ = await _exchange(web.url, head + b"1" * (MAX_HEAD + 100))  # an endless size line
    assert (r.status, r.header("connection")) == (400, "close"), r.body


async def test_a_body_stream_the_host_cannot_open_leaves_no_subscription(web: Web) -> None:
    before = len(web.b.nc._subs)
    nc = await nats.connect(web.b.config.nats_url)
    try:
        msg = await nc.request(subjects.http_request(web.lattice, "hello"), b"", timeout=10,
                               headers={Headers.DEADLINE: f"{time.time() + 10:.6f}",
                                        HttpHeaders.METHOD: "POST", HttpHeaders.PATH: "/echo",
                                        StreamHeaders.BODY: "not a subject"})
    finally:
        await nc.close()
    assert (msg.headers or {}).get(HttpHeaders.STATUS) == "400", msg.data
    assert len(web.b.nc._subs) == before  # type: ignore[attr-defined]


async def _slow_stream(url: str, path: str) -> tuple[float, float]:
    """GET a chunked response; seconds from the request to its first chunk, and from the
    first chunk to the end of the body."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        sent = time.monotonic()
        writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        async with asyncio.timeout(20):
            head = await reader.readuntil(b"\r\n\r\n")
            assert b" 200 " in head.split(b"\r\n")[0] and b"transfer-encoding: chunked" in head
            size = int(await reader.readuntil(b"\r\n"), 16)
            assert await reader.readexactly(size + 2) == b"line 0\n\r\n"
            first = time.monotonic()
            lines = 1
            while size := int(await reader.readuntil(b"\r\n"), 16):
                await reader.readexactly(size + 2)
                lines += 1
            assert await reader.readuntil(b"\r\n") == b"\r\n" and lines == 3
            return first - sent, time.monotonic() - first
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_slow_stream_reaches_the_client_as_it_is_written(web: Web) -> None:
    assert (await _exchange(web.url, b"GET /hello/ HTTP/1.1\r\nhost: x\r\n"
                            b"connection: close\r\n\r\n"))[0].status == 200  # warm
    to_first, rest = await _slow_stream(web.url, "/hello/slow?n=3&ms=400")
    assert rest > 0.5, f"head and first line held back until the end ({to_first:.2f}s)"


@pytest.mark.parametrize("pooled", [False, True])
async def test_a_slow_stream_under_trellis_serve(http_hello_wasm: Path, pooled: bool) -> None:
    async with Serving(ServeOptions(file=http_hello_wasm, addr="127.0.0.1:0", pooled=pooled,
                                    timeout=10.0)) as s:
        to_first, rest = await _slow_stream(s.url, "/slow?n=3&ms=400")
    assert rest > 0.5, f"head and first line held back until the end ({to_first:.2f}s)"
