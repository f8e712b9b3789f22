"""An HTTP/1.1 server on asyncio streams that hands each request to a ``wasi:http`` component.

Malformed HTTP is answered here (400, 431, 501) and never reaches a component. A declared
body over ``max_body`` is refused with 413 before the guest starts; a chunked one that grows
past it fails the guest's reads and gets 413 if no response was sent yet. Bodies stream both
ways through bounded pipes. Failures: a trap → 500 with an error id in the log (the host keeps
serving: a trap only costs its Store), the deadline → 504, no free instance in time → 503.

Response framing: the guest's own ``content-length`` if it set one; else, when the whole body
is there by the time the head goes out (it waits for up to ``HEAD_HOLD`` bytes or the end, but
no longer than ``HttpExchange.HOLD_TIME`` after the guest set its response, so a slowly
streamed body starts at once), a computed ``content-length``; else (or when the guest sent
trailers) chunked, with the guest's trailers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from ...lattice.errors import CapacityTimeout, DeadlineExceeded
from ...lattice.http1 import (
    MAX_HEAD,
    BadRequest,
    Request,
    body_length,
    chunk_size,
    parse_head,
    path_of,
    read_line,
    read_trailers,
    serve_connection,
)
from ...lattice.http1 import status_line as _status_line
from .pipe import Exchange, Pipe, PipeClosed, RequestDeadline
from .proxy import HttpExchange, ProxyComponent, Response, ResponseError

log = logging.getLogger("trellis.http")

HEAD_HOLD = 64 * 1024
"""Response bytes held back to compute a ``content-length`` before the head is sent."""
IDLE_TIMEOUT = 30.0
"""Seconds a keep-alive connection may sit idle between requests."""


class BodyTooLarge(PipeClosed):
    """The request body grew past the configured limit."""


class HttpServer:
    """Serves one ``ProxyComponent`` on one address."""

    def __init__(self, proxy: ProxyComponent, *, max_body: int | None = None) -> None:
        self.proxy = proxy
        self.max_body = max_body
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self.stats = {"requests": 0, "errors": 0}

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._connection, host, port,
                                                  limit=MAX_HEAD)
        addr = self._server.sockets[0].getsockname()
        return addr[0], addr[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    # -- connections ---------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, self._one, self._conns, log)

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; ``True`` to keep the connection for another."""
        try:
            async with asyncio.timeout(IDLE_TIMEOUT):  # no task per request, as wait_for makes
                raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await self._plain(writer, 431, "request header section too large\n")
            return False
        except (asyncio.IncompleteReadError, TimeoutError):
            return False
        try:
            req = parse_head(raw)
            path, authority = path_of(req)
            length = body_length(req)
        except BadRequest as exc:
            await self._plain(writer, exc.status, f"{exc}\n")
            return False
        self.stats["requests"] += 1
        keep = self._keep_alive(req)
        if isinstance(length, int) and self.max_body is not None and length > self.max_body:
            await self._plain(writer, 413, f"request body over {self.max_body} bytes\n")
            return False
        if length is not None and any(v.lower() == b"100-continue" for v in req.header("expect")):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = Pipe(Exchange(None, None))
        feeder: asyncio.Task[None] | None = None
        if length is None:
            body.finish()  # no body: nothing to feed
        else:
            feeder = asyncio.create_task(self._feed(reader, body, length))
        ex = self.proxy.start(req.method, path, req.headers, body, authority=authority)
        try:
            keep = await self._respond(writer, req, ex, body) and keep
        finally:
            ex.release()
            if feeder is not None:
                if not feeder.done():  # the guest did not read it all: the stream is out of sync
                    feeder.cancel()
                    keep = False
                with contextlib.suppress(BaseException):
                    await feeder
        return keep

    @staticmethod
    def _keep_alive(req: Request) -> bool:
        conn = b",".join(req.header("connection")).lower()
        if req.version == "HTTP/1.0":
            return b"keep-alive" in conn
        return b"close" not in conn

    # -- request body --------------------------------------------------------------------

    async def _feed(self, reader: asyncio.StreamReader, pipe: Pipe,
                    length: int | str | None) -> None:
        try:
            if length == "chunked":
                await self._feed_chunked(reader, pipe)
            elif isinstance(length, int):
                left = length
                while left:
                    data = await reader.read(min(left, 65536))
                    if not data:
                        raise PipeClosed("the client closed the connection mid-body")
                    left -= len(data)
                    await pipe.write_async(data)
                pipe.finish()
            else:
                pipe.finish()
        except PipeClosed as exc:
            pipe.fail(exc)
            if not isinstance(exc, BodyTooLarge) and not pipe.consumer_gone:
                raise
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, BadRequest) as exc:
            pipe.fail(PipeClosed(f"request body: {exc}"))

    async def _feed_chunked(self, reader: asyncio.StreamReader, pipe: Pipe) -> None:
        total = 0
        while True:
            size = chunk_size(await read_line(reader))
            if size == 0:
                break
            total += size
            if self.max_body is not None and total > self.max_body:
                raise BodyTooLarge(f"request body over {self.max_body} bytes")
            left = size
            while left:
                data = await reader.read(min(left, 65536))
                if not data:
                    raise PipeClosed("the client closed the connection mid-body")
                left -= len(data)
                await pipe.write_async(data)
            if await reader.readexactly(2) != b"\r\n":
                raise BadRequest(400, "malformed chunk")
        pipe.finish(await read_trailers(reader))  # bounded, as the header section is

    # -- response ------------------------------------------------------------------------

    async def _respond(self, writer: asyncio.StreamWriter, req: Request, ex: HttpExchange,
                       body: Pipe) -> bool:
        assert ex.call is not None
        if not ex.response.done():
            await asyncio.wait((ex.response, ex.call), return_when=asyncio.FIRST_COMPLETED)
        if not ex.response.done() or ex.response.exception() is not None:
            if not ex.response.done():
                ex.response.cancel()
            exc = ex.call.exception() if ex.call.done() else ex.response.exception()
            if isinstance(body.error, BodyTooLarge):
                await self._plain(writer, 413, f"{body.error}\n")
                return False
            await self._failed(writer, exc)
            return False
        resp = ex.response.result()
        try:
            ok = await self._send(writer, req, resp, ex, body)
        except (ConnectionError, OSError) as exc:
            ex.aborted = exc
            resp.body.close_reader()
            body.fail(PipeClosed("client went away"))
            ok = False
        try:
            await ex.call
        except Exception as exc:
            error_id = self._log_failure(exc)
            log.error("request %s failed after its response started", error_id)
            return False
        return ok

    async def _send(self, writer: asyncio.StreamWriter, req: Request, resp: Response,
                    ex: HttpExchange, request_body: Pipe) -> bool:
        pipe = resp.body
        assert ex.call is not None
        headers = list(resp.headers)
        no_body = req.method == "HEAD" or resp.status in (204, 304) or resp.status < 200
        declared = any(k == "content-length" for k, _ in headers)
        chunked = False
        if not declared and not no_body:
            def held() -> bool:
                return pipe.eof or pipe.error is not None or pipe.size >= HEAD_HOLD

            if not held():  # (``HttpExchange`` usually hands the response over only then)
                hold = asyncio.ensure_future(pipe.wait_async(held))
                # A slow stream's head goes out at the hold time, chunked.
                await asyncio.wait((hold, ex.call), return_when=asyncio.FIRST_COMPLETED,
                                   timeout=max(0.0, resp.hold_until - time.monotonic()))
                hold.cancel()
            if pipe.eof and not pipe.trailers:  # trailers need chunked framing to go out
                headers.append(("content-length", str(pipe.size).encode()))
            elif pipe.error is not None:  # failed before anything was sent: answer for it
                if isinstance(request_body.error, BodyTooLarge):
                    await self._plain(writer, 413, f"{request_body.error}\n")
                else:
                    await self._failed(writer, ex.call.exception() if ex.call.done()
                                       and not ex.call.cancelled() else pipe.error)
                return False
            else:
                chunked = True
                headers.append(("transfer-encoding", b"chunked"))
        head = [_status_line(resp.status)]
        head += [k.encode("latin-1") + b": " + v + b"\r\n" for k, v in headers]
        head.append(b"\r\n")
        if not chunked and not no_body and pipe.eof and pipe.size <= HEAD_HOLD:
            head.append(pipe.take(HEAD_HOLD))  # a small finished body goes out with the head
        writer.write(b"".join(head))
        while True:
            try:
                data = await pipe.read_async()
            except PipeClosed as exc:  # the guest failed mid-body: cut the connection
                log.error("response body of %s %s failed: %s", req.method, req.target, exc)
                return False
            if not data:
                break
            if no_body:
                continue
            writer.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            await writer.drain()
        if chunked:
            trailers = pipe.trailers or []
            writer.write(b"0\r\n" + b"".join(k.encode("latin-1") + b": " + v + b"\r\n"
                                             for k, v in trailers) + b"\r\n")
        await writer.drain()
        return True

    # -- errors --------------------------------------------------------------------------

    def _log_failure(self, exc: BaseException | None) -> str:
        error_id = uuid.uuid4().hex[:12]
        self.stats["errors"] += 1
        log.error("request failed [error id %s]: %s: %s", error_id, type(exc).__name__, exc)
        return error_id

    async def _failed(self, writer: asyncio.StreamWriter, exc: BaseException | None) -> None:
        cause = exc.__cause__ if exc is not None else None
        if isinstance(exc, DeadlineExceeded) or isinstance(cause, RequestDeadline):
            status, text = 504, "the component did not answer in time\n"
        elif isinstance(exc, CapacityTimeout):
            status, text = 503, "no free instance in time\n"
        elif isinstance(exc, ResponseError):
            status, text = 500, "the component answered with an error\n"
        else:
            status, text = 500, "internal server error\n"
        error_id = self._log_failure(exc if exc is not None else
                                     RuntimeError("the component set no response"))
        await self._plain(writer, status, text.rstrip("\n") + f" (error id {error_id})\n")

    async def _plain(self, writer: asyncio.StreamWriter, status: int, text: str) -> None:
        body = text.encode()
        writer.write(_status_line(status) + b"content-type: text/plain\r\n"
                     + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
