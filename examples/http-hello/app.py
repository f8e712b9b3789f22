"""A minimal ``wasi:http/proxy`` app on plain componentize-py bindings (no framework).

Routes (anything else is the app's own 404):

- ``GET /`` — ``hello from trellis`` as text/plain, with an ``x-hello`` header;
- ``POST /echo`` — the request body streamed back unchanged (any size), same content-type;
- ``GET /headers`` — the request's method, path and headers, one per line;
- ``GET /status/N`` — an empty response with status N;
- ``GET /size/N`` — N bytes of ``x``, streamed in 64 KiB writes;
- ``GET /slow?n=3&ms=300`` — ``n`` lines (``line 0`` …), one every ``ms`` milliseconds: the
  first at once, the body finished after the last (a slow stream, like server-sent events);
- ``GET /log`` — prints a line to stdout and one to stderr, answers ``logged``;
- ``GET /trap`` — raises (the component traps); ``GET /spin`` — loops forever;
- ``GET /hog/N`` — allocates N MiB before answering;
- ``POST /trailers`` — reads the body, then its trailers; answers with the byte count and the
  request's trailers, one per line, and sends response trailers ``x-body-bytes`` (the count)
  and ``x-trailer-count`` (how many request trailers came).
"""

from __future__ import annotations

import sys

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import monotonic_clock
from wit_world.imports.streams import InputStream, OutputStream, StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Get,
    Method_Head,
    Method_Post,
    Method_Put,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

CHUNK = 4096
"""``blocking-write-and-flush`` accepts at most 4096 bytes per call."""

_METHODS = {Method_Get: "GET", Method_Head: "HEAD", Method_Post: "POST", Method_Put: "PUT"}


def _method(request: IncomingRequest) -> str:
    m = request.method()
    return _METHODS.get(type(m)) or str(getattr(m, "value", type(m).__name__))


def _respond(out: ResponseOutparam, status: int, headers: list[tuple[str, bytes]],
             chunks: object, trailers: list[tuple[str, bytes]] | None = None) -> None:
    response = OutgoingResponse(Fields.from_list(headers))
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(out, Ok(response))
    with body.write() as stream:
        for chunk in chunks:  # type: ignore[attr-defined]
            _write(stream, chunk)
    OutgoingBody.finish(body, None if trailers is None else Fields.from_list(trailers))


def _write(stream: OutputStream, data: bytes) -> None:
    for i in range(0, len(data), CHUNK):
        stream.blocking_write_and_flush(data[i:i + CHUNK])


def _read_all(stream: InputStream):  # type: ignore[no-untyped-def]
    while True:
        try:
            data = stream.blocking_read(65536)
        except Exception as exc:  # Err(StreamError_Closed) is the end of the body
            if isinstance(getattr(exc, "value", None), StreamError_Closed):
                return
            raise
        if data:
            yield data


def _trailers(request: IncomingRequest, out: ResponseOutparam) -> None:
    body = request.consume()
    n = 0
    with body.stream() as stream:  # the stream must be gone before the body is finished
        for data in _read_all(stream):
            n += len(data)
    future = IncomingBody.finish(body)
    with future.subscribe() as pollable:
        pollable.block()
    got = future.get()  # option<result<result<option<trailers>, error-code>>>
    fields = got.value.value if got is not None else None
    entries = fields.entries() if fields is not None else []
    lines = [f"{n} bytes"] + [f"{k}: {v.decode()}" for k, v in entries]
    _respond(out, 200, [("content-type", b"text/plain")], ["\n".join(lines).encode() + b"\n"],
             [("x-body-bytes", str(n).encode()), ("x-trailer-count", str(len(entries)).encode())])


def _size(n: int):  # type: ignore[no-untyped-def]
    block = b"x" * 65536
    while n > 0:
        yield block[:n]
        n -= len(block)


def _slow(n: int, ms: int):  # type: ignore[no-untyped-def]
    for i in range(n):
        if i:
            with monotonic_clock.subscribe_duration(ms * 1_000_000) as pollable:
                pollable.block()
        yield f"line {i}\n".encode()


def _query(query: str) -> dict[str, str]:
    return dict(p.partition("=")[::2] for p in query.split("&") if p)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method = _method(request)
        path = request.path_with_query() or "/"
        route, _, query = path.partition("?")
        text = [("content-type", b"text/plain")]
        if route == "/" and method == "GET":
            _respond(response_out, 200, [*text, ("x-hello", b"1")], [b"hello from trellis\n"])
        elif route == "/echo" and method in ("POST", "PUT"):
            headers = request.headers()
            ctype = headers.get("content-type") or [b"application/octet-stream"]
            length = headers.get("content-length")
            extra = [("content-length", length[0])] if length else []
            body = request.consume()
            with body.stream() as stream:
                _respond(response_out, 200, [("content-type", ctype[0]), *extra],
                         _read_all(stream))
        elif route == "/headers":
            lines = [f"{method} {path}"]
            lines += [f"{k}: {v.decode()}" for k, v in request.headers().entries()
                      if k not in ("host", "user-agent")]
            _respond(response_out, 200, text, ["\n".join(lines).encode() + b"\n"])
        elif route.startswith("/status/"):
            _respond(response_out, int(route[8:]), [], [])
        elif route.startswith("/size/"):
            n = int(route[6:])
            _respond(response_out, 200, [("content-length", str(n).encode())], _size(n))
        elif route == "/slow":
            args = _query(query)
            _respond(response_out, 200, text,
                     _slow(int(args.get("n", "3")), int(args.get("ms", "300"))))
        elif route == "/log":
            print("hello on stdout", flush=True)
            print("hello on stderr", file=sys.stderr, flush=True)
            _respond(response_out, 200, text, [b"logged\n"])
        elif route == "/trap":
            raise RuntimeError("the app failed on purpose")
        elif route == "/spin":
            while True:
                pass
        elif route == "/trailers" and method in ("POST", "PUT"):
            _trailers(request, response_out)
        elif route.startswith("/hog/"):
            hog = bytearray(int(route[5:]) << 20)
            _respond(response_out, 200, text, [f"{len(hog)}\n".encode()])
        else:
            _respond(response_out, 404, text, [f"no route for {route}\n".encode()])
