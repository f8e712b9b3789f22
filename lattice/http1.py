"""HTTP/1.1 message parsing, and HTTP requests carried over NATS to a component.

Pure functions on bytes and asyncio streams, no Trellis host code: ``trellis serve``
(``host/http/server.py``) and the ``http-server`` provider (``providers/http_server.py``) parse
requests with the same rules, so malformed HTTP is refused the same way by both and never
reaches a component.

The second half is the lattice wire format of one HTTP exchange (docs/protocol.md, "HTTP over
the lattice"): the request head travels in NATS headers, the body as the payload, or as a
stream (``lattice/bodies.py``) when it does not fit one message; ``BodyReader`` reads a request
body piece by piece for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_HEAD = 64 * 1024
"""Bytes of request line plus headers at most (431 beyond)."""
MAX_TRAILERS = 100
"""Trailer fields of a chunked request body at most (431 beyond)."""
MAX_TRAILER_BYTES = MAX_HEAD
"""Bytes of a chunked request body's trailer section at most (431 beyond)."""
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_TARGET = re.compile(rb"^[\x21-\x7e]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(reason)


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> list[bytes]:
        return [v for k, v in self.headers if k == name]


def parse_head(raw: bytes) -> Request:
    """The request line and headers (``raw`` ends with the blank line). Raises ``BadRequest``."""
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise BadRequest(400, "malformed method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadRequest(505 if version.startswith(b"HTTP/") else 400, "unsupported version")
    if not _TARGET.match(target):
        raise BadRequest(400, "malformed request target")
    headers: list[tuple[str, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise BadRequest(400, "malformed header line")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise BadRequest(400, "control character in a header value")
        headers.append((name.decode("ascii").lower(), value))
    return Request(method.decode("ascii"), target.decode("ascii"), version.decode("ascii"),
                   headers)


def path_of(req: Request) -> tuple[str, str | None]:
    """(path-with-query, authority) from the target (origin-, absolute- or asterisk-form)."""
    target = req.target
    hosts = req.header("host")
    if len(hosts) > 1:
        raise BadRequest(400, "more than one Host header")
    authority = hosts[0].decode("latin-1") if hosts else None
    if target.startswith("/"):
        return target, authority
    if target == "*" and req.method == "OPTIONS":
        return "*", authority
    m = re.match(r"^https?://([^/?#]+)([^#]*)$", target)
    if m is None:
        raise BadRequest(400, "malformed request target")
    return m.group(2) or "/", m.group(1)


def body_length(req: Request) -> int | str | None:
    """``"chunked"``, a byte count, or ``None`` for no body."""
    te = req.header("transfer-encoding")
    cl = req.header("content-length")
    if te:
        if cl:
            raise BadRequest(400, "both Transfer-Encoding and Content-Length")
        codings = [c.strip().lower() for c in b",".join(te).split(b",")]
        if codings != [b"chunked"]:
            raise BadRequest(501, "unsupported transfer coding")
        return "chunked"
    if cl:
        values = {c.strip() for v in cl for c in v.split(b",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise BadRequest(400, "malformed Content-Length")
        return int(next(iter(values)))
    return None


def keep_alive(req: Request) -> bool:
    conn = b",".join(req.header("connection")).lower()
    if req.version == "HTTP/1.0":
        return b"keep-alive" in conn
    return b"close" not in conn


def status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


class BodyTooLarge(Exception):
    """A request body grew past the configured limit."""


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """One CRLF-terminated line of a chunked body (size line or trailer); ``BadRequest`` when
    it is longer than the reader's limit (``MAX_HEAD`` on our servers)."""
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise BadRequest(400, "chunk size or trailer line too long") from None


def chunk_size(line: bytes) -> int:
    try:
        return int(line.split(b";", 1)[0].strip(), 16)
    except ValueError:
        raise BadRequest(400, "malformed chunk size") from None


async def read_trailers(reader: asyncio.StreamReader) -> list[tuple[str, bytes]] | None:
    """The trailer section after a chunked body's last chunk, up to its blank line; at most
    ``MAX_TRAILERS`` fields in ``MAX_TRAILER_BYTES`` (``BadRequest`` 431 beyond, as for the
    header section)."""
    trailers: list[tuple[str, bytes]] = []
    size = 0
    while (line := await read_line(reader)) != b"\r\n":
        size += len(line)
        if len(trailers) >= MAX_TRAILERS or size > MAX_TRAILER_BYTES:
            raise BadRequest(431, "request trailer section too large")
        name, _, value = line[:-2].partition(b":")
        trailers.append((name.decode("latin-1").strip().lower(), value.strip()))
    return trailers or None


async def read_body(reader: asyncio.StreamReader, length: int | str | None,
                    max_body: int | None) -> tuple[bytes, list[tuple[str, bytes]] | None]:
    """A whole request body (and a chunked body's trailers). Raises ``BodyTooLarge``,
    ``BadRequest`` (malformed chunking) or ``asyncio.IncompleteReadError``."""
    if length is None:
        return b"", None
    if isinstance(length, int):
        if max_body is not None and length > max_body:
            raise BodyTooLarge(f"request body over {max_body} bytes")
        return await reader.readexactly(length), None
    parts: list[bytes] = []
    total = 0
    while True:
        size = chunk_size(await read_line(reader))
        if size == 0:
            break
        total += size
        if max_body is not None and total > max_body:
            raise BodyTooLarge(f"request body over {max_body} bytes")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest(400, "malformed chunk")
    return b"".join(parts), await read_trailers(reader)


class BodyReader:
    """A request body read piece by piece as it arrives (de-chunked), so a proxy can pass it
    on without holding it whole. ``trailers`` are set once ``read`` returned ``b""``.

    Raises what ``read_body`` raises: ``BodyTooLarge``, ``BadRequest``,
    ``asyncio.IncompleteReadError``.
    """

    def __init__(self, reader: asyncio.StreamReader, length: int | str | None,
                 max_body: int | None) -> None:
        self.reader, self.max_body = reader, max_body
        self.chunked = length == "chunked"
        self._left = length if isinstance(length, int) else 0
        """Bytes left: of the whole body, or (chunked) of the current chunk."""
        self.done = length is None or length == 0
        self.total = 0
        self.trailers: list[tuple[str, bytes]] | None = None
        if isinstance(length, int) and max_body is not None and length > max_body:
            raise BodyTooLarge(f"request body over {max_body} bytes")

    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes of the body; ``b""`` at its end."""
        if self.done:
            return b""
        if self.chunked and self._left == 0 and not await self._next_chunk():
            return b""
        data = await self.reader.read(min(n, self._left))
        if not data:
            raise asyncio.IncompleteReadError(b"", self._left)
        self._left -= len(data)
        self.total += len(data)
        if self._left == 0:
            if not self.chunked:
                self.done = True
            elif await self.reader.readexactly(2) != b"\r\n":
                raise BadRequest(400, "malformed chunk")
        return data

    async def read_upto(self, limit: int) -> bytes:
        """The body's next bytes until more than ``limit`` were read or it ended (then
        ``done``): whether a body is small enough for one message, without reading it all."""
        parts: list[bytes] = []
        size = 0
        while size <= limit and (data := await self.read(limit + 1 - size)):
            parts.append(data)
            size += len(data)
        return b"".join(parts)

    async def _next_chunk(self) -> bool:
        size = chunk_size(await read_line(self.reader))
        if size == 0:
            self.trailers, self.done = await read_trailers(self.reader), True
            return False
        if self.max_body is not None and self.total + size > self.max_body:
            raise BodyTooLarge(f"request body over {self.max_body} bytes")
        self._left = size
        return True


LINGER = 2.0
"""Seconds a connection closed with request bytes unread keeps discarding what still comes."""


async def close_unread(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       seconds: float = LINGER) -> None:
    """End a connection whose request body was not all read, after its answer: our side
    first (the client sees the end of the answer), then what the client still sends is
    discarded until it closes too, for ``seconds`` at most. Closing on unread bytes would
    reset the connection, and a reset may destroy the answer before the client read it."""
    with contextlib.suppress(Exception):
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass


def plain_response(status: int, text: str) -> bytes:
    """A complete ``text/plain`` response that closes the connection."""
    body = text.encode()
    return (status_line(status) + b"content-type: text/plain\r\n"
            + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)


# -- HTTP over the lattice (docs/protocol.md, "HTTP over the lattice") -----------------------

class HttpHeaders:
    """NATS header names of one HTTP exchange on ``trellis.http.{lattice}.{component}``."""

    METHOD = "Trellis-Http-Method"
    PATH = "Trellis-Http-Path"
    """Path with query, as the client sent it (``/a/b?x=1``)."""
    SCHEME = "Trellis-Http-Scheme"
    AUTHORITY = "Trellis-Http-Authority"
    """The ``Host`` header (or the absolute-form target's authority); absent when none."""
    FIELDS = "Trellis-Http-Headers"
    """HTTP header fields: a JSON array of ``[name, value]`` pairs, in order (values are the
    raw bytes read as Latin-1, so any byte round-trips; ASCII-only JSON)."""
    TRAILERS = "Trellis-Http-Trailers"
    """Trailer fields, same encoding; absent when none."""
    STATUS = "Trellis-Http-Status"
    """Response status code (decimal)."""
    ERROR_ID = "Trellis-Http-Error-Id"
    """On a response the host made for a failure (500/503/504): the id it logged."""


def fields_to_json(fields: Iterable[tuple[str, bytes]]) -> str:
    return json.dumps([[k, v.decode("latin-1")] for k, v in fields], separators=(",", ":"))


def fields_from_json(text: str | None) -> list[tuple[str, bytes]]:
    """The inverse of ``fields_to_json``; ``ValueError`` when it is not such an array."""
    if not text:
        return []
    items = json.loads(text)
    if not isinstance(items, list) or not all(
            isinstance(i, list) and len(i) == 2 and all(isinstance(s, str) for s in i)
            for i in items):
        raise ValueError(f"{text[:80]!r} is not a JSON array of [name, value] pairs")
    return [(k.lower(), v.encode("latin-1")) for k, v in items]


def trailers_of(headers: Mapping[str, str]) -> list[tuple[str, bytes]] | None:
    return fields_from_json(headers.get(HttpHeaders.TRAILERS)) or None


OneRequest = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           one: OneRequest, tracked: set[asyncio.Task[Any]],
                           log: logging.Logger) -> None:
    """Serve requests on one keep-alive connection with ``one`` until it says stop; the task
    is in ``tracked`` meanwhile (so a server can cancel its connections when it closes). A
    bug in ``one`` is logged and closes only this connection."""
    task = asyncio.current_task()
    assert task is not None
    tracked.add(task)
    try:
        while await one(reader, writer):
            pass
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
        pass
    except Exception:  # never let one connection's bug reach the loop's handler
        log.exception("connection failed")
    finally:
        tracked.discard(task)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
