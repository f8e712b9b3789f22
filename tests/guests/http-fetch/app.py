"""A ``wasi:http/proxy`` test app for outgoing HTTP, on plain componentize-py bindings.

``/fetch?url=URL[&method=M][&connect=MS][&first=MS][&between=MS]`` sends a request to URL
with ``wasi:http/outgoing-handler`` (the incoming request's body, if any, streamed out as the
outgoing body, chunked) and answers with the origin's status, its ``content-type`` and its
body streamed through, plus ``x-origin-status``. If the request fails, the answer is 502 with
``error-code: <binding class name>`` (e.g. ``ErrorCode_HttpRequestDenied``) as the body; a
failure mid-body appends ``\\nbody-error: …``.

Waits are single-pollable ``block`` calls (no multi-pollable ``poll``), so the app runs on
hosts that only block on one pollable at a time.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler
from wit_world.imports.streams import InputStream, OutputStream, StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Get,
    Method_Other,
    Method_Post,
    Method_Put,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    RequestOptions,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
    http_error_code,
)

CHUNK = 4096
"""``blocking-write-and-flush`` accepts at most 4096 bytes per call."""
_METHODS = {"GET": Method_Get(), "POST": Method_Post(), "PUT": Method_Put()}


def _respond(out: ResponseOutparam, status: int, headers: list[tuple[str, bytes]],
             body: bytes) -> None:
    response = OutgoingResponse(Fields.from_list(headers))
    response.set_status_code(status)
    outgoing = response.body()
    ResponseOutparam.set(out, Ok(response))
    with outgoing.write() as stream:
        _write(stream, body)
    OutgoingBody.finish(outgoing, None)


def _write(stream: OutputStream, data: bytes) -> None:
    for i in range(0, len(data), CHUNK):
        stream.blocking_write_and_flush(data[i:i + CHUNK])


def _describe(code: object) -> str:
    value = getattr(code, "value", None)
    return type(code).__name__ + ("" if value is None else f" {value!r}")


def _read_all(stream: InputStream):  # type: ignore[no-untyped-def]
    """The stream's chunks; a failure other than the end raises ``_BodyError``."""
    while True:
        try:
            data = stream.blocking_read(65536)
        except Err as exc:
            if isinstance(exc.value, StreamError_Closed):
                return
            code = http_error_code(exc.value.value)
            raise _BodyError(_describe(code) if code is not None else "stream failed") from None
        if data:
            yield data


class _BodyError(Exception):
    pass


def _fetch(request: IncomingRequest, out: ResponseOutparam, query: str) -> None:
    args = {k: v[0] for k, v in parse_qs(query).items()}
    url = urlsplit(args["url"])
    method = args.get("method", "GET")
    outgoing = OutgoingRequest(Fields())
    outgoing.set_method(_METHODS.get(method) or Method_Other(method))
    outgoing.set_scheme(Scheme_Https() if url.scheme == "https" else Scheme_Http())
    outgoing.set_authority(url.netloc)
    outgoing.set_path_with_query(url.path + ("?" + url.query if url.query else ""))
    upload = request.consume() if method in ("POST", "PUT") else None
    out_body = outgoing.body() if upload is not None else None
    options = RequestOptions()
    for key, setter in (("connect", options.set_connect_timeout),
                        ("first", options.set_first_byte_timeout),
                        ("between", options.set_between_bytes_timeout)):
        if key in args:
            setter(int(args[key]) * 1_000_000)
    try:
        future = outgoing_handler.handle(outgoing, options)
    except Err as exc:
        _respond(out, 502, [], f"error-code: {_describe(exc.value)}".encode())
        return
    if upload is not None and out_body is not None:
        with upload.stream() as src, out_body.write() as dst:
            for data in _read_all(src):
                _write(dst, data)
        OutgoingBody.finish(out_body, None)
    with future.subscribe() as pollable:
        pollable.block()
    got = future.get()
    assert got is not None
    result = got.value  # Ok(Ok(response)) or Ok(Err(error-code))
    if isinstance(result, Err):
        _respond(out, 502, [], f"error-code: {_describe(result.value)}".encode())
        return
    response = result.value
    ctype = response.headers().get("content-type")
    status = response.status()
    headers = [("x-origin-status", str(status).encode())]
    headers += [("content-type", ctype[0])] if ctype else []
    answer = OutgoingResponse(Fields.from_list(headers))
    answer.set_status_code(status)
    body = answer.body()
    ResponseOutparam.set(out, Ok(answer))
    incoming = response.consume()
    with body.write() as dst:
        with incoming.stream() as src:
            try:
                for data in _read_all(src):
                    _write(dst, data)
            except _BodyError as exc:
                _write(dst, f"\nbody-error: {exc}".encode())
    OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        route, _, query = path.partition("?")
        if route == "/fetch":
            _fetch(request, response_out, query)
        else:
            _respond(response_out, 404, [], f"no route for {route}\n".encode())
