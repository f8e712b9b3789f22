"""``wasi:http/types`` in Python: the resources a ``wasi:http/proxy`` guest handles.

Values follow the Trellis value model (``lattice/wit/values.py``): ``method`` is
``Case("get")`` / ``Case("other", "PURGE")``, ``error-code`` a ``Case`` named as in the WIT
(``HTTP-request-denied``, ``internal-error``…), results ``Ok``/``Err``. Header names are
lower-cased (as wasmtime does); forbidden and malformed fields are refused with
``header-error``; the headers of a request or of a response handed to a constructor are
immutable. Bodies are ``Pipe``s (``pipe.py``): bounded, so they stream with backpressure.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ...lattice.wit.values import Case, Err, Ok
from .pipe import Exchange, Pipe, PipeClosed
from .wasi_io import (
    Error,
    InputStream,
    OutputStream,
    Pollable,
    current_exchange,
    enter_exchange,
    event_pollable,
    pipe_pollable,
)

FORBIDDEN = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host",
    "http2-settings", "te",
})
"""Hop-by-hop fields a guest may not set (the list wasmtime's wasi-http uses)."""
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
STANDARD_METHODS = ("get", "head", "post", "put", "delete", "connect", "options", "trace",
                    "patch")


def method_case(method: str) -> Case:
    low = method.lower()
    return Case(low) if low in STANDARD_METHODS and method.isupper() else Case("other", method)


def method_text(case: Case) -> str:
    return str(case.value) if case.name == "other" else case.name.upper()


def valid_name(name: str) -> bool:
    return bool(_TOKEN.match(name.encode("latin-1", "replace")))


def valid_value(value: bytes) -> bool:
    return not _BAD_VALUE.search(value)


_INVALID = Err(Case("invalid-syntax"))
_FORBIDDEN = Err(Case("forbidden"))
_IMMUTABLE = Err(Case("immutable"))


class Fields:
    """``fields`` (also ``headers`` and ``trailers``): ordered, case-insensitive names."""

    def __init__(self, entries: Iterable[tuple[str, bytes]] = (), *, immutable: bool = False,
                 forbidden: frozenset[str] = FORBIDDEN) -> None:
        self.items: list[tuple[str, bytes]] = [(k.lower(), bytes(v)) for k, v in entries]
        self.immutable = immutable
        self.forbidden = forbidden

    @classmethod
    def from_list(cls, entries: list[tuple[str, bytes]]) -> Ok | Err:
        for name, value in entries:
            bad = _check(name, value)
            if bad is not None:
                return bad
        return Ok(cls(entries))

    def get(self, name: str) -> list[bytes]:
        low = name.lower()
        return [v for k, v in self.items if k == low]

    def has(self, name: str) -> bool:
        low = name.lower()
        return any(k == low for k, _ in self.items)

    def set(self, name: str, values: list[bytes]) -> Ok | Err:
        if self.immutable:
            return _IMMUTABLE
        for v in values:
            bad = _check(name, v)
            if bad is not None:
                return bad
        low = name.lower()
        self.items = [(k, v) for k, v in self.items if k != low] + [(low, bytes(v))
                                                                   for v in values]
        return Ok(None)

    def delete(self, name: str) -> Ok | Err:
        if self.immutable:
            return _IMMUTABLE
        if not valid_name(name):
            return _INVALID
        if name.lower() in self.forbidden:
            return _FORBIDDEN
        low = name.lower()
        self.items = [(k, v) for k, v in self.items if k != low]
        return Ok(None)

    def append(self, name: str, value: bytes) -> Ok | Err:
        if self.immutable:
            return _IMMUTABLE
        bad = _check(name, value)
        if bad is not None:
            return bad
        self.items.append((name.lower(), bytes(value)))
        return Ok(None)

    def entries(self) -> list[tuple[str, bytes]]:
        return list(self.items)

    def clone(self) -> Fields:
        return Fields(self.items)

    def frozen(self) -> Fields:
        """This fields object, made immutable (it now belongs to a request or response)."""
        self.immutable = True
        return self


def _check(name: str, value: bytes) -> Err | None:
    if not valid_name(name) or not valid_value(value):
        return _INVALID
    if name.lower() in FORBIDDEN:
        return _FORBIDDEN
    return None


# --- incoming requests -----------------------------------------------------------------------

class IncomingBody:
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self._stream_taken = False

    def stream(self) -> Ok | Err:
        if self._stream_taken:
            return Err(None)
        self._stream_taken = True
        return Ok(InputStream(self.pipe))

    @staticmethod
    def finish(this: IncomingBody) -> FutureTrailers:
        return FutureTrailers(this.pipe)


class FutureTrailers:
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self._taken = False

    def _done(self) -> bool:
        return self.pipe.eof or self.pipe.error is not None

    def subscribe(self) -> Pollable:
        return pipe_pollable(self.pipe, self._done)

    def get(self) -> Any:
        if not self._done():
            return None
        if self._taken:
            return Err(None)
        self._taken = True
        if self.pipe.error is not None:
            return Ok(Err(Case("HTTP-protocol-error")))
        trailers = self.pipe.trailers
        return Ok(Ok(Fields(trailers, immutable=True) if trailers else None))


class IncomingRequest:
    """What the server hands to ``incoming-handler.handle``."""

    def __init__(self, exchange: Exchange, method: str, path_with_query: str | None,
                 scheme: str | None, authority: str | None,
                 headers: Iterable[tuple[str, bytes]], body: Pipe) -> None:
        self.exchange = exchange
        self._method = method_case(method)
        self._path = path_with_query
        self._scheme = None if scheme is None else Case(scheme.upper()) \
            if scheme.lower() in ("http", "https") else Case("other", scheme)
        self._authority = authority
        self._headers = Fields(headers, immutable=True)
        self.body = body
        self._consumed = False

    def method(self) -> Case:
        enter_exchange(self.exchange)
        return self._method

    def path_with_query(self) -> str | None:
        enter_exchange(self.exchange)
        return self._path

    def scheme(self) -> Case | None:
        return self._scheme

    def authority(self) -> str | None:
        return self._authority

    def headers(self) -> Fields:
        enter_exchange(self.exchange)
        return self._headers

    def consume(self) -> Ok | Err:
        enter_exchange(self.exchange)
        if self._consumed:
            return Err(None)
        self._consumed = True
        return Ok(IncomingBody(self.body))

    def close(self) -> None:
        if not self._consumed:  # the guest will never read it: stop the socket reader
            self.body.close_reader()


# --- outgoing responses ----------------------------------------------------------------------

class OutgoingBody:
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self._written = False
        self.finished = False

    def write(self) -> Ok | Err:
        if self._written:
            return Err(None)
        self._written = True
        return Ok(OutputStream(self.pipe))

    @staticmethod
    def finish(this: OutgoingBody, trailers: Fields | None) -> Ok | Err:
        this.finished = True
        expected = getattr(this, "content_length", None)
        if expected is not None and this.pipe.total != expected:
            err = Case("HTTP-response-body-size", this.pipe.total)
            this.pipe.fail(PipeClosed(f"body of {this.pipe.total} bytes, content-length "
                                      f"{expected}"))
            return Err(err)
        this.pipe.finish(trailers.entries() if trailers is not None else None)
        return Ok(None)

    def close(self) -> None:
        if not self.finished:  # dropped without finish: the body is incomplete
            self.pipe.fail(PipeClosed("the guest dropped the outgoing-body without finish"))


class OutgoingResponse:
    def __init__(self, headers: Fields) -> None:
        self._headers = headers.frozen()
        self.status = 200
        self.body_obj: OutgoingBody | None = None

    def status_code(self) -> int:
        return self.status

    def set_status_code(self, code: int) -> Ok | Err:
        if not 100 <= code <= 999:
            return Err(None)
        self.status = code
        return Ok(None)

    def headers(self) -> Fields:
        return self._headers

    def body(self) -> Ok | Err:
        if self.body_obj is not None:
            return Err(None)
        ex = current_exchange() or Exchange(None, None)
        body = self.body_obj = OutgoingBody(Pipe(ex))
        cl = self._headers.get("content-length")
        if len(cl) == 1 and cl[0].strip().isdigit():
            body.content_length = int(cl[0])  # type: ignore[attr-defined]
        return Ok(body)


class ResponseOutparam:
    """Where the guest puts its response; ``on_set`` tells the server (thread-safe)."""

    def __init__(self, on_set: Callable[[Ok | Err], None]) -> None:
        self._on_set: Callable[[Ok | Err], None] | None = on_set

    @staticmethod
    def set(param: ResponseOutparam, response: Ok | Err) -> None:
        on_set, param._on_set = param._on_set, None
        if on_set is not None:
            on_set(response)


# --- outgoing requests (the client side; served by the outgoing handler) ----------------------

class RequestOptions:
    def __init__(self) -> None:
        self.timeouts: dict[str, int | None] = {"connect": None, "first-byte": None,
                                                "between-bytes": None}

    def connect_timeout(self) -> int | None:
        return self.timeouts["connect"]

    def set_connect_timeout(self, d: int | None) -> Ok:
        self.timeouts["connect"] = d
        return Ok(None)

    def first_byte_timeout(self) -> int | None:
        return self.timeouts["first-byte"]

    def set_first_byte_timeout(self, d: int | None) -> Ok:
        self.timeouts["first-byte"] = d
        return Ok(None)

    def between_bytes_timeout(self) -> int | None:
        return self.timeouts["between-bytes"]

    def set_between_bytes_timeout(self, d: int | None) -> Ok:
        self.timeouts["between-bytes"] = d
        return Ok(None)


class OutgoingRequest:
    def __init__(self, headers: Fields) -> None:
        self._headers = headers.frozen()
        self._method = Case("get")
        self._path: str | None = None
        self._scheme: Case | None = None
        self._authority: str | None = None
        self.body_obj: OutgoingBody | None = None

    def body(self) -> Ok | Err:
        if self.body_obj is not None:
            return Err(None)
        self.body_obj = OutgoingBody(Pipe(current_exchange() or Exchange(None, None)))
        return Ok(self.body_obj)

    def method(self) -> Case:
        return self._method

    def set_method(self, m: Case) -> Ok | Err:
        if m.name == "other" and not valid_name(str(m.value)):
            return Err(None)
        self._method = m
        return Ok(None)

    def path_with_query(self) -> str | None:
        return self._path

    def set_path_with_query(self, p: str | None) -> Ok | Err:
        if p is not None and any(c in p for c in " \r\n"):
            return Err(None)
        self._path = p
        return Ok(None)

    def scheme(self) -> Case | None:
        return self._scheme

    def set_scheme(self, s: Case | None) -> Ok:
        self._scheme = s
        return Ok(None)

    def authority(self) -> str | None:
        return self._authority

    def set_authority(self, a: str | None) -> Ok | Err:
        if a is not None and any(c in a for c in " /\r\n"):
            return Err(None)
        self._authority = a
        return Ok(None)

    def headers(self) -> Fields:
        return self._headers


class IncomingResponse:
    def __init__(self, status: int, headers: Iterable[tuple[str, bytes]], body: Pipe) -> None:
        self._status = status
        self._headers = Fields(headers, immutable=True)
        self._body = body
        self._consumed = False

    def status(self) -> int:
        return self._status

    def headers(self) -> Fields:
        return self._headers

    def consume(self) -> Ok | Err:
        if self._consumed:
            return Err(None)
        self._consumed = True
        return Ok(IncomingBody(self._body))


class FutureIncomingResponse:
    """A response, decided now (``outcome``) or later by the outgoing handler: ``settle``
    (from any thread) fills it; the guest waits on ``subscribe`` and takes it with ``get``."""

    def __init__(self, outcome: Ok | Err | None = None,
                 exchange: Exchange | None = None) -> None:
        self.outcome: Ok | Err | None = outcome
        self.taken = False
        self.cancel: Callable[[], None] | None = None
        """Called if the guest drops the future (the request in flight stops)."""
        self._ready = threading.Event()
        self._exchange = exchange
        if outcome is not None:
            self._ready.set()

    def settle(self, outcome: Ok | Err) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self._ready.set()

    def subscribe(self) -> Pollable:
        return event_pollable(self._ready, self._exchange)

    def get(self) -> Any:
        if not self._ready.is_set():
            return None
        if self.taken:
            return Err(None)
        self.taken = True
        return Ok(self.outcome)

    def close(self) -> None:
        cancel, self.cancel = self.cancel, None
        if cancel is not None:
            cancel()


class HttpTypes:
    """``wasi:http/types``."""

    Fields = Fields
    IncomingRequest = IncomingRequest
    IncomingBody = IncomingBody
    FutureTrailers = FutureTrailers
    OutgoingResponse = OutgoingResponse
    OutgoingBody = OutgoingBody
    ResponseOutparam = ResponseOutparam
    OutgoingRequest = OutgoingRequest
    RequestOptions = RequestOptions
    IncomingResponse = IncomingResponse
    FutureIncomingResponse = FutureIncomingResponse
    InputStream = InputStream
    OutputStream = OutputStream
    Pollable = Pollable
    IoError = Error

    @staticmethod
    def http_error_code(err: Error) -> Case | None:
        code = getattr(err.cause, "error_code", None)
        return code if isinstance(code, Case) else None


class OutgoingHandler:
    """``wasi:http/outgoing-handler``: denied until the HTTP client provider is linked."""

    OutgoingRequest = OutgoingRequest
    RequestOptions = RequestOptions
    FutureIncomingResponse = FutureIncomingResponse

    @staticmethod
    def handle(request: OutgoingRequest, options: RequestOptions | None) -> Ok | Err:
        return Err(Case("HTTP-request-denied"))
