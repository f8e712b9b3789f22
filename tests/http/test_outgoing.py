"""Outgoing HTTP from a component (``wasi:http/outgoing-handler``) under ``trellis serve``.

The http-fetch test guest (tests/guests/http-fetch) fetches ``/fetch?url=…`` with its
componentize-py bindings and answers with the origin's status and body, or 502 and the
``error-code`` it got. The origin is a small asyncio HTTP/1.1 server started here on a free
port: allowed hosts are reached and bodies stream through both ways; others are denied with
``HTTP-request-denied``; timeouts, refused ports, DNS and TLS failures map to their codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from _client import Reply, request
from trellis.host.http.outgoing import OutboundPolicy, parse_rule
from trellis.host.http.serve import ServeOptions, Serving
from trellis.host.runtime.instances import WasiOptions

MiB = 2**20
BIG = 5 * MiB
BLOCK = bytes(range(256)) * 256  # 64 KiB, not all one byte


# --- the origin -------------------------------------------------------------------------------

Handler = Callable[[str, str, bytes, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    method, path, _ = head[0].split(" ")
    fields = dict((k.strip().lower(), v.strip()) for k, _, v in
                  (line.partition(":") for line in head[1:] if line))
    body = b""
    if fields.get("transfer-encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass
    elif "content-length" in fields:
        body = await reader.readexactly(int(fields["content-length"]))
    return method, path, body


async def _origin_handler(method: str, path: str, body: bytes,
                          writer: asyncio.StreamWriter) -> None:
    if path == "/hello":
        text = b"hello from the origin\n"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/x-origin\r\n"
                     b"content-length: %d\r\n\r\n%b" % (len(text), text))
    elif path == "/teapot":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 418 I'm a teapot\r\n"
                     b"content-length: 0\r\n\r\n")
    elif path == "/upload":
        text = f"{method} got {len(body)} bytes {hashlib.sha256(body).hexdigest()}".encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(text), text))
    elif path == "/big":  # chunked, 5 MiB, written as fast as the client drains
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        for _ in range(BIG // len(BLOCK)):
            writer.write(b"%x\r\n%b\r\n" % (len(BLOCK), BLOCK))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
    elif path == "/never":  # accepts, reads, never answers
        await asyncio.sleep(3600)
    elif path == "/stall":  # a head and some body, then nothing
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst part")
        await writer.drain()
        await asyncio.sleep(3600)
    await writer.drain()


class Origin:
    """An HTTP/1.1 origin on a free port (optionally TLS); one request per connection."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.server: asyncio.Server | None = None
        self.port = 0
        self.seen: list[tuple[str, str, int]] = []
        self._conns: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Origin:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            method, path, body = await _read_request(reader)
            self.seen.append((method, path, len(body)))
            await _origin_handler(method, path, body, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError,
                ssl.SSLError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with Origin() as o:
        yield o


@contextlib.asynccontextmanager
async def serving(wasm: Path, *allow: str, outbound_timeout: float = 10.0,
                  ca: Path | None = None) -> AsyncIterator[Serving]:
    options = ServeOptions(file=wasm, addr="127.0.0.1:0", timeout=30.0, wasi=WasiOptions(),
                           allow_outbound=allow, outbound_timeout=outbound_timeout,
                           outbound_ca=ca)
    async with Serving(options) as s:
        yield s


async def fetch(s: Serving, url: str, query: str = "", method: str = "GET",
                body: bytes = b"") -> Reply:
    return await request(s.url, method, f"/fetch?url={quote(url, safe='')}{query}", body)


# --- the allow-list ---------------------------------------------------------------------------

def test_allow_list_patterns() -> None:
    policy = OutboundPolicy(("example.com", "*.corp.test", "127.0.0.1:8081",
                             "https://secure.test", "[::1]:9000"))
    assert policy.allows("http", "example.com", 80) and policy.allows("https", "example.com", 8443)
    assert not policy.allows("http", "www.example.com", 80)
    assert policy.allows("http", "a.b.corp.test", 80) and not policy.allows("http", "corp.test", 80)
    assert policy.allows("http", "127.0.0.1", 8081) and not policy.allows("http", "127.0.0.1", 80)
    assert policy.allows("https", "secure.test", 443)
    assert not policy.allows("http", "secure.test", 80)
    assert policy.allows("http", "::1", 9000)
    assert not OutboundPolicy().allows("http", "example.com", 80)
    assert OutboundPolicy(("*",)).allows("http", "anything.test", 1)
    for bad in ("http://", "exa mple.com", "host:99999", "ftp://x.test", "a/b"):
        with pytest.raises(ValueError, match="outbound pattern"):
            parse_rule(bad)


# --- through a component ----------------------------------------------------------------------

async def test_allowed_host_streams_through(http_fetch_wasm: Path, origin: Origin) -> None:
    async with serving(http_fetch_wasm, f"127.0.0.1:{origin.port}") as s:
        r = await fetch(s, f"http://127.0.0.1:{origin.port}/hello")
        assert (r.status, r.body) == (200, b"hello from the origin\n")
        assert r.header("content-type") == "text/x-origin"
        assert r.header("x-origin-status") == "200"
        r = await fetch(s, f"http://127.0.0.1:{origin.port}/teapot")  # 1xx skipped
        assert (r.status, r.body) == (418, b"")
    assert ("GET", "/hello", 0) in origin.seen


async def test_not_allowed_is_denied(http_fetch_wasm: Path, origin: Origin) -> None:
    url = f"http://127.0.0.1:{origin.port}/hello"
    async with serving(http_fetch_wasm) as s:  # the default: nothing allowed
        r = await fetch(s, url)
        assert (r.status, r.body) == (502, b"error-code: ErrorCode_HttpRequestDenied")
    async with serving(http_fetch_wasm, "example.com", f"127.0.0.1:{origin.port + 1}") as s:
        r = await fetch(s, url)
        assert (r.status, r.body) == (502, b"error-code: ErrorCode_HttpRequestDenied")
    assert origin.seen == []


async def test_origin_that_never_answers_times_out(http_fetch_wasm: Path,
                                                   origin: Origin) -> None:
    url = f"http://127.0.0.1:{origin.port}/never"
    async with serving(http_fetch_wasm, "127.0.0.1", outbound_timeout=1.0) as s:
        started = time.monotonic()
        r = await fetch(s, url, "&first=300")  # the guest's first-byte-timeout: 0.3 s
        took = time.monotonic() - started
        assert (r.status, r.body) == (502, b"error-code: ErrorCode_ConnectionReadTimeout")
        assert took < 1.0, took
        started = time.monotonic()
        r = await fetch(s, url, "&first=60000")  # capped by the host's outbound timeout: 1 s
        took = time.monotonic() - started
        assert (r.status, r.body) == (502, b"error-code: ErrorCode_ConnectionReadTimeout")
        assert 0.9 < took < 5.0, took


async def test_stalled_body_fails_the_stream(http_fetch_wasm: Path, origin: Origin) -> None:
    async with serving(http_fetch_wasm, "127.0.0.1") as s:
        r = await fetch(s, f"http://127.0.0.1:{origin.port}/stall", "&between=300")
        assert r.status == 200
        assert r.body == b"first part\nbody-error: ErrorCode_ConnectionReadTimeout"


async def test_refused_port_and_unknown_host(http_fetch_wasm: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with serving(http_fetch_wasm, "127.0.0.1", "nowhere.invalid") as s:
        r = await fetch(s, f"http://127.0.0.1:{port}/")
        assert (r.status, r.body) == (502, b"error-code: ErrorCode_ConnectionRefused")
        r = await fetch(s, "http://nowhere.invalid/")
        assert r.status == 502 and r.body.startswith(b"error-code: ErrorCode_DnsError")


async def test_five_mib_response_streams_through(http_fetch_wasm: Path, origin: Origin) -> None:
    async with serving(http_fetch_wasm, f"127.0.0.1:{origin.port}") as s:
        r = await fetch(s, f"http://127.0.0.1:{origin.port}/big")
    assert r.status == 200 and r.header("content-type") == "application/octet-stream"
    assert len(r.body) == BIG
    assert r.body == BLOCK * (BIG // len(BLOCK))


async def test_request_body_streams_out(http_fetch_wasm: Path, origin: Origin) -> None:
    data = bytes(range(251)) * (3 * MiB // 251)
    async with serving(http_fetch_wasm, "127.0.0.1") as s:
        r = await fetch(s, f"http://127.0.0.1:{origin.port}/upload", "&method=POST", "POST",
                        data)
    assert r.status == 200
    assert r.body == f"POST got {len(data)} bytes {hashlib.sha256(data).hexdigest()}".encode()


# --- https ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the openssl CLI)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True, timeout=60)
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no usable openssl CLI: {exc}")
    return cert, key


async def test_https_checks_certificates(http_fetch_wasm: Path,
                                         certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    async with Origin(tls) as o:
        url = f"https://127.0.0.1:{o.port}/hello"
        async with serving(http_fetch_wasm, "127.0.0.1") as s:  # system CAs only
            r = await fetch(s, url)
            assert (r.status, r.body) == (502, b"error-code: ErrorCode_TlsCertificateError")
        async with serving(http_fetch_wasm, f"https://127.0.0.1:{o.port}", ca=cert) as s:
            r = await fetch(s, url)
            assert (r.status, r.body) == (200, b"hello from the origin\n")
            r = await fetch(s, f"http://127.0.0.1:{o.port}/hello")  # scheme not allowed
            assert r.body == b"error-code: ErrorCode_HttpRequestDenied"
