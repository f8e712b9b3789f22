"""A tiny HTTP/1.1 client on asyncio streams (the test environment has no HTTP client library):
enough to send bytes exactly as given and read status, headers and a framed body."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


async def read_reply(reader: asyncio.StreamReader, head_only: bool = False) -> Reply:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw[:-4].decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip().lower(), v.strip()))
    h = dict(headers)
    if head_only:
        return Reply(status, headers, b"")
    if h.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    elif "content-length" in h:
        body = await reader.readexactly(int(h["content-length"]))
    else:
        body = await reader.read()
    return Reply(status, headers, body)


async def request(url: str, method: str = "GET", path: str = "/", body: bytes = b"",
                  headers: list[tuple[str, str]] | None = None, raw: bytes | None = None,
                  timeout: float = 60) -> Reply:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        if raw is None:
            hdrs = [("host", f"{host}:{port}"), *(headers or [])]
            if body or method in ("POST", "PUT"):
                hdrs.append(("content-length", str(len(body))))
            head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs)
            raw = head.encode() + b"\r\n" + body
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(read_reply(reader, method == "HEAD"), timeout)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
