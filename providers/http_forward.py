"""One HTTP exchange of the ``http-server`` provider across the lattice (docs/protocol.md §8).

The request head goes as one NATS request to ``trellis.http.{lattice}.{component}``; its body
goes in the same message when it is complete and fits, else it is *streamed* as it arrives
from the socket (``lattice/bodies.py``: the host asks for it and grants credit as its guest
reads). The reply is the response head, again with the whole body or the announcement of a
stream, which is written to the client as it comes: chunked, unless the component declared a
``content-length``. So neither direction ever holds a large body in memory: the client's
socket, the NATS window and the guest's pipes push back on each other.

Resource handling: the upload runs in its own task (the response may start before the request
body ended, e.g. an echo) and is cancelled, with an ``abort`` to the host, when the exchange
ends first (at once when a reply came: a receiver that has not asked by then never will);
then the connection is not reused, since unread body bytes remain on it: an answer written
meanwhile says ``connection: close``, and the connection ends with ``close_unread`` (no reset
that could destroy the answer). Every wait ends at the request's deadline (plus
``REPLY_GRACE`` for the host's own 504).

Error handling: a client that sends a body too large (413), malformed chunking (400) or too
slowly (408) gets our answer if no response started; a response body that breaks mid-way
(the guest failed, the host vanished) cuts the connection, as HTTP/1.1 must.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from ..lattice import subjects
from ..lattice.bodies import (
    BodyReceiver,
    BodySender,
    StreamError,
    StreamHeaders,
    announced,
)
from ..lattice.http1 import (
    BadRequest,
    BodyReader,
    BodyTooLarge,
    HttpHeaders,
    Request,
    close_unread,
    fields_from_json,
    fields_to_json,
    keep_alive,
    status_line,
    trailers_of,
)
from ..lattice.models import Headers
from ..lattice.rpc import fits

if TYPE_CHECKING:
    from .http_server import HttpServerProvider, Route

log = logging.getLogger("trellis.provider.http")

REPLY_GRACE = 1.0
"""Seconds past a request's deadline to wait for the host's own answer (its 504 names the
error id it logged) before answering 504 here."""
INLINE_ROOM = 16 * 1024
"""Bytes of ``max_payload`` kept for headers: a body up to the rest may travel whole."""
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade",
               "proxy-connection", "trailer"}
Fields = list[tuple[str, bytes]]


@dataclass
class Answer:
    """A response head, with its whole body or the stream that carries it."""

    status: int
    fields: Fields
    data: bytes = b""
    trailers: Fields | None = None
    stream: str | None = None
    """The host's control inbox: the body follows as a stream (``data`` is empty)."""


class Forward:
    """One request to ``route.component``, wherever it runs, and its answer to the client."""

    def __init__(self, provider: HttpServerProvider, route: Route, req: Request, path: str,
                 authority: str | None, body: BodyReader, first: bytes) -> None:
        assert provider.context is not None
        self.provider, self.route, self.req = provider, route, req
        self.path, self.authority, self.body, self.first = path, authority, body, first
        self.nc = provider.context.nc
        self.deadline = asyncio.get_running_loop().time() + provider.timeout
        self.sender: BodySender | None = None
        self.upload: asyncio.Task[None] | None = None
        self.replied = False
        """A reply came (the host's answer, or NATS's "no responders"): whoever was going to
        take the request body has asked for it by now."""

    async def run(self, writer: asyncio.StreamWriter) -> bool:
        """Forward the request and write the answer; whether the connection may be reused."""
        try:
            answer = await self._ask()
            reusable = await self._write(writer, answer)
        finally:
            complete = await self._end_upload()
        if not complete:  # body bytes left unread: close without resetting the connection
            await close_unread(self.body.reader, writer)
        return reusable and complete

    # -- the request -----------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        ctx = self.provider.context
        assert ctx is not None
        headers = {
            Headers.INVOCATION_ID: uuid.uuid4().hex,
            Headers.CALLER: ctx.provider_id,
            Headers.DEADLINE: f"{time.time() + self.provider.timeout:.6f}",
            HttpHeaders.METHOD: self.req.method,
            HttpHeaders.PATH: self.path,
            HttpHeaders.SCHEME: "http",
            HttpHeaders.FIELDS: fields_to_json(self.req.headers),
        }
        if self.authority is not None:
            headers[HttpHeaders.AUTHORITY] = self.authority
        return headers

    async def _ask(self) -> Answer:
        """Send the request (streaming its body if need be); the host's answer, or ours for a
        failure to reach it."""
        p, component = self.provider, self.route.component
        headers = self._headers()
        payload = self.first
        if self.body.done and self.body.trailers:
            headers[HttpHeaders.TRAILERS] = fields_to_json(self.body.trailers)
        if not self.body.done or not fits(self.nc, payload, headers):
            self.sender = BodySender(self.nc, self.deadline + REPLY_GRACE)
            headers[StreamHeaders.BODY] = await self.sender.open()
            self.upload = asyncio.create_task(self._upload(payload))
            payload = b""
        subject = subjects.http_request(self.provider_lattice, component)
        request = asyncio.ensure_future(self.nc.request(
            subject, payload, timeout=p.timeout + REPLY_GRACE, headers=headers))
        try:
            while self.upload is not None and not request.done():
                await asyncio.wait((request, self.upload), return_when=asyncio.FIRST_COMPLETED)
                if self.upload.done() and not request.done():
                    refusal = self._refusal(self.upload)
                    if refusal is not None:
                        return refusal
                    break
            msg = await request
            self.replied = True
            hdrs = msg.headers or {}
            return Answer(int(hdrs[HttpHeaders.STATUS]),
                          fields_from_json(hdrs.get(HttpHeaders.FIELDS)), msg.data,
                          trailers_of(hdrs), announced(hdrs))
        except NoRespondersError:
            self.replied = True
            return p.error(503, f"no host runs component {component!r}")
        except (TimeoutError, NatsTimeoutError):
            return p.error(504, f"{component} did not answer within {p.timeout:g}s")
        except (KeyError, ValueError, json.JSONDecodeError) as exc:
            return p.error(502, f"unreadable answer from {component}: {exc}")
        except (asyncio.IncompleteReadError, ConnectionError):
            raise  # the client went away mid-upload: nobody to answer
        except Exception as exc:  # NATS down
            return p.error(502, f"cannot reach {component}: {type(exc).__name__}: {exc}")
        finally:
            if not request.done():
                request.cancel()

    @property
    def provider_lattice(self) -> str:
        assert self.provider.context is not None
        return self.provider.context.lattice

    def _refusal(self, upload: asyncio.Task[None]) -> Answer | None:
        """Our answer when the upload failed on the client's side before any response."""
        exc = None if upload.cancelled() else upload.exception()
        if isinstance(exc, BodyTooLarge):
            return self.provider.error(413, str(exc))
        if isinstance(exc, BadRequest):
            return self.provider.error(exc.status, str(exc))
        if isinstance(exc, (asyncio.IncompleteReadError, ConnectionError)):
            raise exc
        if isinstance(exc, TimeoutError) and not isinstance(exc, StreamError):
            return self.provider.error(408, "request body not received in time")
        return None  # done, or the host stopped taking it: its answer still comes

    async def _upload(self, first: bytes) -> None:
        sender = self.sender
        assert sender is not None
        try:
            await sender.send(first)
            while True:
                async with asyncio.timeout_at(self.deadline):  # the client's pace: 408
                    data = await self.body.read(sender.chunk)
                if not data:
                    break
                await sender.send(data)  # the host's pace: its own deadline, a StreamError
            trailers = self.body.trailers
            await sender.finish({HttpHeaders.TRAILERS: fields_to_json(trailers)}
                                if trailers else None)
        except BaseException as exc:
            await sender.abort(f"request body: {type(exc).__name__}: {exc}")
            raise

    async def _end_upload(self) -> bool:
        """Stop an upload still running; whether the whole body was sent (else unread bytes
        are left on the connection)."""
        upload = self.upload
        if upload is None:
            return True
        if self.replied and self.sender is not None:
            self.sender.answered()  # its abort must not wait for a receiver that never comes
        if not upload.done():
            upload.cancel()
        with contextlib.suppress(BaseException):
            await upload
        if self.sender is not None:
            await self.sender.close()
        return _sent_whole(upload)

    # -- the response ----------------------------------------------------------------------

    async def _write(self, writer: asyncio.StreamWriter, answer: Answer) -> bool:
        req = self.req
        no_body = req.method == "HEAD" or answer.status in (204, 304) or answer.status < 200
        headers = [(k, v) for k, v in answer.fields if k not in _HOP_BY_HOP]
        declared = any(k == "content-length" for k, _ in headers)
        receiver: BodyReceiver | None = None
        if answer.stream is not None:
            receiver = BodyReceiver(self.nc, answer.stream, self.deadline + REPLY_GRACE)
            if no_body:
                await receiver.cancel("this response has no body")
                receiver = None
        streamed = receiver is not None
        chunked = not no_body and (not declared if streamed else bool(answer.trailers))
        keep: bool = keep_alive(req)
        upload = self.upload
        if upload is not None and not _sent_whole(upload) and not (
                streamed and not upload.done()):
            # An answer before the whole request body was read (408, 413, 400, or the guest
            # did not read it): the connection closes after it, so the head must say so. A
            # streamed answer to a running upload (an echo) may still see it finish.
            keep = False
        if chunked and streamed and req.version == "HTTP/1.0":
            chunked = keep = False  # no chunked framing for 1.0: the close ends the body
        if chunked:
            headers = [(k, v) for k, v in headers if k != "content-length"]
            headers.append(("transfer-encoding", b"chunked"))
        elif not no_body and not streamed and not declared:
            headers.append(("content-length", str(len(answer.data)).encode()))
        if not keep:
            headers.append(("connection", b"close"))
        head = [status_line(answer.status)]
        head += [k.encode("latin-1") + b": " + v + b"\r\n" for k, v in headers]
        writer.write(b"".join(head) + b"\r\n")
        trailers = answer.trailers
        if receiver is not None:
            if not await self._relay(writer, receiver, chunked):
                return False
            trailers = trailers_of(receiver.end_headers)
        elif not no_body and answer.data:
            data = answer.data
            writer.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
        if chunked:
            writer.write(b"0\r\n" + b"".join(k.encode("latin-1") + b": " + v + b"\r\n"
                                             for k, v in trailers or ()) + b"\r\n")
        await writer.drain()
        return keep

    async def _relay(self, writer: asyncio.StreamWriter, receiver: BodyReceiver,
                     chunked: bool) -> bool:
        """Copy a streamed body to the client; ``False`` when it broke off (the connection
        must then close: the client can tell the body is incomplete)."""
        try:
            await receiver.open()
            async with asyncio.timeout_at(self.deadline + REPLY_GRACE):
                while data := await receiver.read():
                    writer.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
                    await writer.drain()  # credit goes back only as the client takes it
            return True
        except (StreamError, TimeoutError) as exc:
            log.error("response body from %s broke off after %d bytes: %s",
                      self.route.component, receiver.received, exc)
            return False
        finally:
            await receiver.cancel("the client went away")  # no-op once the body ended
            await receiver.close()


def _sent_whole(upload: asyncio.Task[None]) -> bool:
    """Whether an upload sent the whole request body (none of it is left on the connection)."""
    return upload.done() and not upload.cancelled() and upload.exception() is None
