"""``wasi:http/outgoing-handler``: real outgoing HTTP/1.1 for components, on asyncio streams.

Policy first: a request goes out only if its authority matches the component's allow-list
(``OutboundPolicy``); anything else — and everything when the list is empty, the default — is
refused at once with ``HTTP-request-denied``. The allow-list is the whole policy: loopback and
private addresses are not special, so an operator lists exactly what a component may reach.

How a request runs: ``handle`` (on the guest's worker thread) checks the request and starts
``_Call.run`` on the host's event loop, returning a ``future-incoming-response`` at once. The
loop connects (http, or https with the system CAs), streams the guest's body out of its pipe
(content-length or chunked, trailers too), reads the response head and settles the future;
the guest's ``pollable.block`` waits on a ``threading.Event`` (bounded by its own request's
deadline). The response body then streams socket → bounded pipe → guest, so backpressure holds
both ways and a large body never sits in host memory.

Timeouts (``request-options``, each capped by the policy's ``timeout``, which is also the
default): connect → ``connection-timeout``; first byte of the response head →
``connection-read-timeout``; between body bytes → ``connection-read-timeout``. Failures map to
``error-code`` cases: DNS → ``DNS-error``, refused → ``connection-refused``, certificate →
``TLS-certificate-error``, malformed responses → ``HTTP-protocol-error``…; a body that fails
midway fails the guest's stream with the code (``http-error-code`` recovers it).

One connection per request (``connection: close``): no pooling yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...lattice.wit.values import Case, Err, Ok
from ..runtime.hostcalls import HostLoop
from .pipe import Exchange, Pipe, PipeClosed
from .wasi_http import (
    FutureIncomingResponse,
    IncomingResponse,
    OutgoingRequest,
    RequestOptions,
    method_text,
    valid_name,
    valid_value,
)
from .wasi_io import current_exchange

_Request = OutgoingRequest
_Options = RequestOptions

DEFAULT_TIMEOUT = 30.0
MAX_HEAD = 64 * 1024
"""Bytes of response status line plus headers at most."""
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                        "upgrade", "te"})
"""Connection-level response fields the guest does not see (RFC 9110 §7.6.1)."""
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_PATTERN = re.compile(r"^(?:(https?)://)?(\*|(?:\*\.)?[a-z0-9_.\-]+|\[[0-9a-f:.]+\])"
                      r"(?::(\*|\d{1,5}))?$")


# --- the allow-list -------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    scheme: str | None
    host: str
    port: int | None

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if self.scheme is not None and self.scheme != scheme:
            return False
        if self.port is not None and self.port != port:
            return False
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


def parse_rule(pattern: str) -> Rule:
    """``example.com``, ``*.example.com`` (subdomains), ``127.0.0.1:8081``, ``[::1]:80``,
    ``https://api.example.com``, ``*`` — host names match any port unless one is given."""
    m = _PATTERN.match(pattern.strip().lower())
    if m is None:
        raise ValueError(f"outbound pattern {pattern!r} is not HOST, *.DOMAIN, HOST:PORT, "
                         "[IPv6]:PORT or *, optionally after http:// or https://")
    scheme, host, port = m.groups()
    if port is not None and port != "*" and not 0 < int(port) < 65536:
        raise ValueError(f"outbound pattern {pattern!r}: port out of range")
    return Rule(scheme, host.strip("[]").rstrip("."), None if port in (None, "*") else int(port))


@dataclass(frozen=True)
class OutboundPolicy:
    """What one component may reach, and how long it may wait."""

    allow: tuple[str, ...] = ()
    """Allow-list patterns (``parse_rule``); empty: every request is denied."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds: the default and the cap of each request-options timeout."""
    ca_file: str | Path | None = None
    """Extra CA certificates (PEM) trusted besides the system's."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(parse_rule(p) for p in self.allow))
        if not self.timeout > 0:
            raise ValueError("the outbound timeout must be positive seconds")

    def allows(self, scheme: str, host: str, port: int) -> bool:
        rules: tuple[Rule, ...] = getattr(self, "rules")  # noqa: B009 - set in __post_init__
        return any(r.matches(scheme, host, port) for r in rules)


# --- errors -----------------------------------------------------------------------------------

class OutgoingError(Exception):
    """A failed outgoing request; ``error_code`` is the wasi:http ``error-code`` value, which
    ``http-error-code`` hands the guest when it fails a body stream."""

    def __init__(self, code: str, payload: Any = None, detail: str = "") -> None:
        self.error_code = Case(code, payload)
        super().__init__(detail or code)


def _error_for(exc: BaseException) -> OutgoingError:
    """The ``error-code`` of a connect-time exception."""
    if isinstance(exc, OutgoingError):
        return exc
    if isinstance(exc, socket.gaierror):
        return OutgoingError("DNS-error", {"rcode": exc.strerror, "info-code": None}, str(exc))
    if isinstance(exc, ConnectionRefusedError):
        return OutgoingError("connection-refused", detail=str(exc))
    if isinstance(exc, ssl.SSLCertVerificationError):
        return OutgoingError("TLS-certificate-error", detail=str(exc))
    if isinstance(exc, ssl.SSLError):
        return OutgoingError("TLS-protocol-error", detail=str(exc))
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)):
        return OutgoingError("connection-terminated", detail=str(exc))
    if isinstance(exc, OSError) and exc.errno in (101, 113):  # ENETUNREACH, EHOSTUNREACH
        return OutgoingError("destination-unavailable", detail=str(exc))
    return OutgoingError("internal-error", f"{type(exc).__name__}: {exc}")


# --- the target of a request --------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    authority: str
    path: str


def target_of(request: OutgoingRequest) -> Target | Case:
    """Where ``request`` goes, or the ``error-code`` that refuses it."""
    scheme_case = request.scheme()
    scheme = "http" if scheme_case is None else (
        str(scheme_case.value).lower() if scheme_case.name == "other" else scheme_case.name.lower())
    if scheme not in ("http", "https"):
        return Case("HTTP-protocol-error")
    authority = request.authority()
    if not authority or "@" in authority:
        return Case("HTTP-request-URI-invalid")
    m = re.match(r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?$", authority)
    if m is None:
        return Case("HTTP-request-URI-invalid")
    host = m.group(1).strip("[]").lower().rstrip(".")
    port = int(m.group(2)) if m.group(2) else (443 if scheme == "https" else 80)
    if not 0 < port < 65536:
        return Case("HTTP-request-URI-invalid")
    path = request.path_with_query() or "/"
    if not (path.startswith("/") or path == "*"):
        return Case("HTTP-request-URI-invalid")
    return Target(scheme, host, port, authority, path)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _seconds(ns: int | None, cap: float) -> float:
    return cap if ns is None else min(ns / 1e9, cap)


# --- the handler --------------------------------------------------------------------------------

class OutgoingHttp:
    """``wasi:http/outgoing-handler`` for one component, under ``policy``."""

    OutgoingRequest = OutgoingRequest
    RequestOptions = RequestOptions
    FutureIncomingResponse = FutureIncomingResponse

    def __init__(self, policy: OutboundPolicy | None = None) -> None:
        self.policy = policy or OutboundPolicy()
        self._host_loop = HostLoop()
        self._ssl: ssl.SSLContext | None = None
        self._calls: set[_Call] = set()
        self._lock = threading.Lock()

    def handle(self, request: _Request, options: _Options | None) -> Ok | Err:
        target = target_of(request)
        if isinstance(target, Case):
            return Err(target)
        if not self.policy.allows(target.scheme, target.host, target.port):
            return Err(Case("HTTP-request-denied"))
        ex = current_exchange()
        loop = ex.loop if ex is not None and ex.loop is not None and not ex.loop.is_closed() \
            else None
        if loop is None or _running_loop() is loop:  # no other thread's loop to do the I/O
            loop = self._host_loop.get()
        ex = ex or Exchange(loop, None)
        timeouts: dict[str, int | None] = options.timeouts if options is not None else {}
        cap = self.policy.timeout
        call = _Call(self, target, request, ex, connect=_seconds(timeouts.get("connect"), cap),
                     first_byte=_seconds(timeouts.get("first-byte"), cap),
                     between=_seconds(timeouts.get("between-bytes"), cap))
        with self._lock:
            self._calls.add(call)
        call.start(loop)
        return Ok(call.future)

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context()
            if self.policy.ca_file is not None:
                ctx.load_verify_locations(cafile=str(self.policy.ca_file))
            self._ssl = ctx
        return self._ssl

    def _done(self, call: _Call) -> None:
        with self._lock:
            self._calls.discard(call)

    async def aclose(self) -> None:
        """Cancel the requests still in flight (on the caller's loop) and stop a private
        loop, if one was started."""
        with self._lock:
            calls = list(self._calls)
        for call in calls:
            call.abort()
        mine = asyncio.get_running_loop()
        tasks = [c.task for c in calls if c.task is not None and c.task.get_loop() is mine]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._host_loop.close()


class _Response(IncomingResponse):
    """An ``incoming-response`` whose body stops the socket reader if nobody consumes it."""

    def close(self) -> None:
        if not self._consumed:
            self._body.close_reader()


class _Call:
    """One outgoing request, from connect to the last body byte (on the loop)."""

    def __init__(self, owner: OutgoingHttp, target: Target, request: OutgoingRequest,
                 ex: Exchange, *, connect: float, first_byte: float, between: float) -> None:
        self.owner = owner
        self.target = target
        self.request = request
        self.ex = ex
        self.connect_timeout, self.first_byte, self.between = connect, first_byte, between
        self.future = FutureIncomingResponse(exchange=ex)
        self.future.cancel = self.cancel
        self.task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

        def begin() -> None:
            self.task = loop.create_task(self.run())
        loop.call_soon_threadsafe(begin)

    def cancel(self) -> None:
        """The guest dropped the future (or the host closes): stop, unless a response was
        handed over (its body then belongs to the guest's ``incoming-response``)."""
        outcome = self.future.outcome
        if outcome is not None:
            if isinstance(outcome, Ok) and not self.future.taken:
                outcome.value.close()
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel_task)

    def abort(self) -> None:
        """Stop now, whatever stage the request is in (the host is closing)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel_task)

    def _cancel_task(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def run(self) -> None:
        writer: asyncio.StreamWriter | None = None
        sender: asyncio.Task[None] | None = None
        body: Pipe | None = None
        try:
            reader, writer = await self._connect()
            sender = asyncio.create_task(self._send(writer))
            status, headers = await self._head(reader, sender)
            body = Pipe(self.ex)
            response = _Response(status, [(k, v) for k, v in headers if k not in HOP_BY_HOP],
                                 body)
            self.future.settle(Ok(response))
            await self._pump(reader, body, status, headers)
            if not sender.done():  # the origin answered before taking the whole body
                sender.cancel()
        except OutgoingError as exc:
            self.future.settle(Err(exc.error_code))
        except asyncio.CancelledError:
            self.future.settle(Err(Case("internal-error", "the request was cancelled")))
            if body is not None:
                body.fail(OutgoingError("internal-error", "cancelled", "the host is closing"))
        except Exception as exc:
            self.future.settle(Err(_error_for(exc).error_code))
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
            if sender is not None:
                with contextlib.suppress(BaseException):
                    await sender
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            self.owner._done(self)

    # -- connect ------------------------------------------------------------------------

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        t = self.target
        tls = self.owner.ssl_context() if t.scheme == "https" else None
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(t.host, t.port, ssl=tls, limit=MAX_HEAD,
                                        server_hostname=t.host if tls else None),
                self.connect_timeout)
        except TimeoutError:
            raise OutgoingError("connection-timeout",
                                detail=f"connecting to {t.authority}") from None
        except OSError as exc:
            raise _error_for(exc) from exc

    # -- request -----------------------------------------------------------------------

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        """The request head, then its body from the guest's pipe (backpressure: we read the
        pipe only as fast as the socket drains)."""
        req, t = self.request, self.target
        method = method_text(req.method())
        fields = [(k, v) for k, v in req.headers().entries() if k not in HOP_BY_HOP]
        body = req.body_obj.pipe if req.body_obj is not None else None
        declared = [v for k, v in fields if k == "content-length"]
        length: int | None = None
        if declared:
            if len(set(declared)) != 1 or not declared[0].strip().isdigit():
                raise OutgoingError("HTTP-request-header-size", None, "bad content-length")
            length = int(declared[0])
            fields = [(k, v) for k, v in fields if k != "content-length"]
        elif body is None:
            length = None if method in _NO_BODY_METHODS else 0
        elif body.eof and not body.trailers:  # the guest wrote it all before handle
            length = body.size
        chunked = body is not None and length is None
        head = [f"{method} {t.path} HTTP/1.1\r\nhost: {t.authority}\r\n".encode("latin-1")]
        head += [k.encode("latin-1") + b": " + v + b"\r\n" for k, v in fields]
        if length is not None:
            head.append(b"content-length: %d\r\n" % length)
        elif chunked:
            head.append(b"transfer-encoding: chunked\r\n")
        head.append(b"connection: close\r\n\r\n")
        writer.write(b"".join(head))
        await writer.drain()
        if body is None:
            return
        sent = 0
        while data := await body.read_async():  # raises when the guest dropped it unfinished
            sent += len(data)
            if length is not None and sent > length:
                raise OutgoingError("HTTP-request-body-size", sent, "body over content-length")
            writer.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            await writer.drain()
        if length is not None and sent != length:
            raise OutgoingError("HTTP-request-body-size", sent, "body under content-length")
        if chunked:
            trailers = body.trailers or []
            writer.write(b"0\r\n" + b"".join(k.encode("latin-1") + b": " + v + b"\r\n"
                                             for k, v in trailers) + b"\r\n")
            await writer.drain()

    # -- response ----------------------------------------------------------------------

    async def _head(self, reader: asyncio.StreamReader,
                    sender: asyncio.Task[None]) -> tuple[int, list[tuple[str, bytes]]]:
        """The final response head (1xx skipped), within the first-byte timeout. A failed
        request body fails the request, unless the origin answered first."""
        read = asyncio.ensure_future(self._read_head(reader))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.first_byte
        try:
            done, _ = await asyncio.wait((read, sender), timeout=self.first_byte,
                                         return_when=asyncio.FIRST_COMPLETED)
            if read not in done and sender in done and sender.exception() is not None:
                exc = sender.exception()
                assert exc is not None
                if isinstance(exc, PipeClosed):
                    raise OutgoingError("HTTP-request-body-size", None,
                                        f"request body: {exc}") from exc
                raise _error_for(exc) from exc
            if read not in done:
                done, _ = await asyncio.wait((read,), timeout=max(0, deadline - loop.time()))
            if read not in done:
                raise OutgoingError("connection-read-timeout",
                                    detail="no response within the first-byte timeout")
            return read.result()
        finally:
            if not read.done():
                read.cancel()
                with contextlib.suppress(BaseException):
                    await read

    async def _read_head(self, reader: asyncio.StreamReader
                         ) -> tuple[int, list[tuple[str, bytes]]]:
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise OutgoingError("HTTP-response-header-section-size", None) from None
            except asyncio.IncompleteReadError as exc:
                code = "connection-terminated" if not exc.partial else "HTTP-response-incomplete"
                raise OutgoingError(code, detail="the origin closed before its answer") from None
            status, headers = parse_response_head(raw)
            if status >= 200 or status == 101:
                return status, headers

    async def _pump(self, reader: asyncio.StreamReader, pipe: Pipe, status: int,
                    headers: list[tuple[str, bytes]]) -> None:
        """Socket → pipe for the response body; failures fail the guest's stream."""
        try:
            framing = response_framing(method_text(self.request.method()), status, headers)
            if framing == "chunked":
                await self._pump_chunked(reader, pipe)
                return
            left = framing if isinstance(framing, int) else None
            while left is None or left > 0:
                data = await self._read(reader.read(65536 if left is None else min(left, 65536)))
                if not data:
                    if left is not None:
                        raise OutgoingError("HTTP-response-incomplete",
                                            detail="body shorter than its content-length")
                    break
                if left is not None:
                    left -= len(data)
                await self._deliver(pipe, data)
            pipe.finish()
        except PipeClosed:
            return  # the guest dropped the body: stop reading
        except OutgoingError as exc:
            pipe.fail(exc)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            pipe.fail(OutgoingError("HTTP-response-incomplete", detail=str(exc)))

    async def _pump_chunked(self, reader: asyncio.StreamReader, pipe: Pipe) -> None:
        while True:
            line = await self._read(reader.readuntil(b"\r\n"))
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise OutgoingError("HTTP-protocol-error", detail="malformed chunk size") from None
            if size == 0:
                break
            left = size
            while left:
                data = await self._read(reader.read(min(left, 65536)))
                if not data:
                    raise OutgoingError("HTTP-response-incomplete", detail="body cut short")
                left -= len(data)
                await self._deliver(pipe, data)
            if await self._read(reader.readexactly(2)) != b"\r\n":
                raise OutgoingError("HTTP-protocol-error", detail="malformed chunk")
        trailers: list[tuple[str, bytes]] = []
        while (line := await self._read(reader.readuntil(b"\r\n"))) != b"\r\n":
            name, colon, value = line[:-2].partition(b":")
            value = value.strip(b" \t")
            if not colon or not valid_name(name.decode("latin-1")) or not valid_value(value):
                raise OutgoingError("HTTP-protocol-error", detail="malformed trailer")
            trailers.append((name.decode("latin-1").lower(), value))
        pipe.finish(trailers or None)

    async def _read(self, aw: Any) -> Any:
        try:
            return await asyncio.wait_for(aw, self.between)
        except TimeoutError:
            raise OutgoingError("connection-read-timeout",
                                detail="the origin stalled within the body") from None

    async def _deliver(self, pipe: Pipe, data: bytes) -> None:
        """Into the guest's pipe once it has room; a guest that stops reading for the whole
        policy timeout loses the body (its socket must not be held forever)."""
        try:
            await asyncio.wait_for(pipe.wait_async(pipe.writable), self.owner.policy.timeout)
        except TimeoutError:
            raise PipeClosed("the component stopped reading the response body") from None
        pipe.put(data)


def parse_response_head(raw: bytes) -> tuple[int, list[tuple[str, bytes]]]:
    """Status and fields of a response head (``raw`` ends with the blank line)."""
    lines = raw[:-4].split(b"\r\n")
    m = re.match(rb"^HTTP/1\.[01] (\d{3})(?: .*)?$", lines[0])
    if m is None:
        raise OutgoingError("HTTP-protocol-error", detail="malformed status line")
    headers: list[tuple[str, bytes]] = []
    for line in lines[1:]:
        name_b, colon, value = line.partition(b":")
        name = name_b.decode("latin-1")
        value = value.strip(b" \t")
        if not colon or not valid_name(name) or not valid_value(value):
            raise OutgoingError("HTTP-protocol-error", detail="malformed response header")
        headers.append((name.lower(), value))
    return int(m.group(1)), headers


def response_framing(method: str, status: int, headers: list[tuple[str, bytes]]
                     ) -> int | str | None:
    """``"chunked"``, a byte count, or ``None`` for "until the connection closes"."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    te = [v for k, v in headers if k == "transfer-encoding"]
    if te:
        codings = [c.strip().lower() for c in b",".join(te).split(b",")]
        if codings[-1] != b"chunked" or len(codings) > 1:
            raise OutgoingError("HTTP-response-transfer-coding",
                                b",".join(te).decode("latin-1"))
        return "chunked"
    cl = {c.strip() for k, v in headers if k == "content-length" for c in v.split(b",")}
    if cl:
        if len(cl) != 1 or not next(iter(cl)).isdigit():
            raise OutgoingError("HTTP-protocol-error", detail="malformed content-length")
        return int(next(iter(cl)))
    return None
