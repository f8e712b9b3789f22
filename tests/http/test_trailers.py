"""Trailers both ways through ``trellis serve``: a chunked request's trailers reach the guest
(``incoming-body.finish`` → ``future-trailers``), and the trailers the guest passes to
``outgoing-body.finish`` go out after the last chunk (http-hello's ``POST /trailers``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from trellis.host.http.serve import ServeOptions, Serving
from trellis.host.runtime.instances import WasiOptions


@pytest.fixture(params=["fresh", "pooled"])
async def url(request: pytest.FixtureRequest, http_hello_wasm: Path) -> AsyncIterator[str]:
    options = ServeOptions(file=http_hello_wasm, addr="127.0.0.1:0", timeout=10.0,
                           pooled=request.param == "pooled", wasi=WasiOptions())
    async with Serving(options) as s:
        yield s.url


async def exchange(url: str, raw: bytes) -> tuple[int, dict[str, str], bytes, dict[str, str]]:
    """Send ``raw``; (status, headers, body, trailers) of the reply."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        await writer.drain()
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).decode("latin-1")
        lines = head.split("\r\n")
        headers = dict(_field(line) for line in lines[1:] if line)
        body, trailers = b"", {}
        if headers.get("transfer-encoding") == "chunked":
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                body += (await reader.readexactly(size + 2))[:-2]
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                k, v = _field(line[:-2].decode("latin-1"))
                trailers[k] = v
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split(" ")[1]), headers, body, trailers
    finally:
        writer.close()
        await writer.wait_closed()


def _field(line: str) -> tuple[str, str]:
    k, _, v = line.partition(":")
    return k.strip().lower(), v.strip()


def chunked(path: str, chunks: list[bytes], trailers: list[tuple[str, str]]) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n"
            "trailer: " + ", ".join(k for k, _ in trailers) + "\r\n\r\n").encode() \
        + b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) \
        + b"0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in trailers).encode() + b"\r\n"


async def test_request_trailers_reach_the_guest_and_response_trailers_come_back(
        url: str) -> None:
    raw = chunked("/trailers", [b"a" * 1000, b"b" * 500],
                  [("x-checksum", "abc123"), ("X-Extra", "two words")])
    status, headers, body, trailers = await exchange(url, raw)
    assert status == 200
    assert body.decode().splitlines() == ["1500 bytes", "x-checksum: abc123",
                                          "x-extra: two words"]
    # Small enough to hold back for a content-length, but trailers need chunked framing.
    assert headers.get("transfer-encoding") == "chunked" and "content-length" not in headers
    assert trailers == {"x-body-bytes": "1500", "x-trailer-count": "2"}


async def test_no_request_trailers_and_a_sized_body(url: str) -> None:
    raw = b"POST /trailers HTTP/1.1\r\nhost: test\r\ncontent-length: 7\r\n\r\npayload"
    status, _, body, trailers = await exchange(url, raw)
    assert (status, body) == (200, b"7 bytes\n")
    assert trailers == {"x-body-bytes": "7", "x-trailer-count": "0"}
    # A chunked request without trailers.
    status, _, body, trailers = await exchange(url, chunked("/trailers", [b"z" * 70000], [])
                                               .replace(b"trailer: \r\n", b""))
    assert (status, body) == (200, b"70000 bytes\n")
    assert trailers == {"x-body-bytes": "70000", "x-trailer-count": "0"}
