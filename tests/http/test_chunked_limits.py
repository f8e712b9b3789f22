"""lattice/http1.py's chunked-body parsing is bounded like the header section: a chunk-size
or trailer line longer than the reader's limit, or a trailer section with too many fields or
bytes, is a ``BadRequest`` (never an ``asyncio.LimitOverrunError`` escaping to the server)."""

from __future__ import annotations

import asyncio

import pytest
from trellis.lattice.http1 import (
    MAX_HEAD,
    MAX_TRAILER_BYTES,
    MAX_TRAILERS,
    BadRequest,
    BodyReader,
    read_body,
)


def _stream(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=MAX_HEAD)  # as our servers open connections
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def _read_all(data: bytes) -> tuple[bytes, list[tuple[str, bytes]] | None]:
    body = BodyReader(_stream(data), "chunked", None)
    parts = []
    while chunk := await body.read():
        parts.append(chunk)
    return b"".join(parts), body.trailers


def _trailers(n: int, size: int = 10) -> bytes:
    return b"".join(b"x-t%d: %s\r\n" % (i, b"v" * size) for i in range(n))


async def test_trailers_within_the_limits_arrive() -> None:
    data = b"3\r\nabc\r\n0\r\n" + _trailers(MAX_TRAILERS) + b"\r\n"
    body, trailers = await _read_all(data)
    assert body == b"abc" and trailers is not None and len(trailers) == MAX_TRAILERS
    assert await read_body(_stream(data), "chunked", None) == (body, trailers)


@pytest.mark.parametrize("trailers", [
    _trailers(MAX_TRAILERS + 1),  # too many fields
    _trailers(MAX_TRAILER_BYTES // 1000 + 1, 1000),  # too many bytes, each line short
])
async def test_too_many_trailers_are_431(trailers: bytes) -> None:
    data = b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n"
    with pytest.raises(BadRequest) as got:
        await _read_all(data)
    assert got.value.status == 431
    with pytest.raises(BadRequest):
        await read_body(_stream(data), "chunked", None)


@pytest.mark.parametrize("data", [
    b"3" * (MAX_HEAD + 10),  # a chunk-size line without an end
    b"3;" + b"e" * (MAX_HEAD + 10) + b"\r\nabc\r\n0\r\n\r\n",  # an endless chunk extension
    b"3\r\nabc\r\n0\r\nx-long: " + b"v" * (MAX_HEAD + 10) + b"\r\n\r\n",  # one huge trailer
])
async def test_a_line_over_the_reader_limit_is_400(data: bytes) -> None:
    with pytest.raises(BadRequest) as got:
        await _read_all(data)
    assert got.value.status == 400
    with pytest.raises(BadRequest):
        await read_body(_stream(data), "chunked", None)
