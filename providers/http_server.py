"""``http-server``: the lattice's HTTP front door. Listens on one address and hands each request
to the component its links route it to, wherever that component runs.

Routes are links *from* the provider *to* a component, one per route (give each its own link
name), with the route in the link's config (source config, else target config)::

    trellis config put hello-route path=/hello strip_prefix=true
    trellis link put http-server hello wasi:http --interface incoming-handler \\
        --name hello --source-config hello-route

- ``path=/prefix`` — requests whose path is the prefix or below it (``/hello``, ``/hello/x``,
  ``/hello?q``; not ``/helloworld``); default ``/`` (everything). The longest prefix wins; on a
  tie, a route with a ``host`` beats one without.
- ``host=example.com`` — only requests with this ``Host`` (case-insensitive; without a port in
  the route, any port matches).
- ``strip_prefix=true`` — the component sees the path below the prefix (``/hello/x`` → ``/x``).

Provider config: ``addr=127.0.0.1:8080`` (``:0`` picks a free port; ``bound`` in ``describe``),
``timeout=30`` (seconds per request, the component's deadline), ``max_body=104857600`` (bytes).

Each request crosses NATS to ``trellis.http.{lattice}.{component}`` (queue group per component,
answered by ``host/http/lattice.py`` on a host running it); the wire format is in
``lattice/http1.py`` and docs/protocol.md; ``http_forward.py`` runs one exchange. A body that
fits one NATS message travels in it; a bigger one (up to ``max_body``) is streamed both ways
with flow control, never held whole in memory.

Errors: malformed HTTP → 400 (431, 501, 505 as they apply; never forwarded); no route → 404;
body over ``max_body`` → 413; no host runs the component → 503; no answer by the deadline →
504; the component's own failures come back as the host made them (500 with an error id, 504).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..lattice.http1 import (
    MAX_HEAD,
    BadRequest,
    BodyReader,
    BodyTooLarge,
    body_length,
    close_unread,
    keep_alive,
    parse_head,
    path_of,
    plain_response,
    serve_connection,
)
from .http_forward import INLINE_ROOM, Answer, Forward
from .sdk import Health, Link, Provider, ProviderContext, ProviderError

log = logging.getLogger("trellis.provider.http")

DEFAULT_ADDR = "127.0.0.1:8080"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_BODY = 100 * 2**20
IDLE_TIMEOUT = 30.0
"""Seconds a keep-alive connection may sit idle between requests."""


@dataclass(frozen=True)
class Route:
    component: str
    prefix: str
    host: str | None
    strip: bool
    key: tuple[str, str, str]

    def matches(self, path: str, authority: str | None) -> bool:
        if self.host is not None:
            got = (authority or "").lower()
            if ":" not in self.host:
                got = got.rsplit(":", 1)[0] if not got.endswith("]") else got
            if got != self.host:
                return False
        if self.prefix == "/":
            return True
        after = path[len(self.prefix):len(self.prefix) + 1]
        return path.startswith(self.prefix) and after in ("", "/", "?")

    def rewrite(self, path: str) -> str:
        if not self.strip or self.prefix == "/":
            return path
        rest = path[len(self.prefix):]
        return rest if rest.startswith("/") else "/" + rest


def route_of(link: Link) -> Route:
    """The route a link declares; ``ProviderError`` naming the bad setting."""
    config = {**link.target_config, **link.source_config}
    prefix = config.get("path", "/").strip() or "/"
    if not prefix.startswith("/") or "?" in prefix or "#" in prefix:
        raise ProviderError(f"http route {link.source} → {link.target}: path={prefix!r} must be "
                            "a path prefix starting with '/' (no query)")
    if prefix != "/":
        prefix = prefix.rstrip("/")
    host = config.get("host", "").strip().lower() or None
    strip = config.get("strip_prefix", "false").strip().lower() in ("1", "true", "yes", "on")
    return Route(link.target, prefix, host, strip, link.key)


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ProviderError(f"http-server addr={addr!r}: use HOST:PORT, e.g. {DEFAULT_ADDR}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _number(config: Mapping[str, str], key: str, default: float) -> float:
    try:
        value = float(config.get(key, default))
    except ValueError:
        raise ProviderError(f"http-server {key}={config[key]!r}: expected a number") from None
    if value <= 0:
        raise ProviderError(f"http-server {key}={value:g}: must be > 0")
    return value


class HttpServerProvider(Provider):
    name = "http-server"
    interfaces = ()
    """It serves no import: it *calls* components' ``wasi:http/incoming-handler``."""

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        super().__init__(config)
        self.addr = split_addr(self.config.get("addr", DEFAULT_ADDR))
        self.timeout = _number(self.config, "timeout", DEFAULT_TIMEOUT)
        self.max_body = int(_number(self.config, "max_body", DEFAULT_MAX_BODY))
        self.routes: dict[tuple[str, str, str], Route] = {}
        self.bound: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self.stats = {"requests": 0, "errors": 0}

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, context: ProviderContext) -> None:
        await super().start(context)
        if context.nc is None:
            raise ProviderError("http-server needs a lattice (a NATS connection) to reach "
                                "components; run it in a host or with `trellis provider run`")
        host, port = self.addr
        try:
            self._server = await asyncio.start_server(self._connection, host, port,
                                                      limit=MAX_HEAD)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ProviderError(f"http-server cannot listen on {host}:{port} ({reason}): set "
                                "addr=HOST:PORT in its config to a free address") from exc
        sock = self._server.sockets[0].getsockname()
        self.bound = (sock[0], sock[1])
        self.log.info("http-server listening on http://%s:%d", *self.bound)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await server.wait_closed()

    async def health(self) -> Health:
        ok = self._server is not None and self._server.is_serving()
        return Health(ok, f"{len(self.routes)} route(s)" if ok else "not listening")

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.bound is not None:
            out["bound"] = f"{self.bound[0]}:{self.bound[1]}"
        return out

    @property
    def url(self) -> str:
        assert self.bound is not None, "not started"
        return f"http://{self.bound[0]}:{self.bound[1]}"

    # -- links = routes --------------------------------------------------------------------------

    def _mine(self, link: Link) -> bool:
        me = self.context.provider_id if self.context else None
        return link.source == me and link.namespace == "wasi" and link.package == "http"

    async def link_put(self, link: Link) -> None:
        await super().link_put(link)
        if self._mine(link):
            route = route_of(link)
            self.routes[link.key] = route
            self.log.info("route %s%s → %s", route.host or "*", route.prefix, route.component)

    async def link_del(self, link: Link) -> None:
        await super().link_del(link)
        self.routes.pop(link.key, None)

    def route(self, path: str, authority: str | None) -> Route | None:
        """The longest matching prefix; a host-specific route wins a tie."""
        best: Route | None = None
        for r in self.routes.values():
            if r.matches(path, authority) and (
                    best is None or (len(r.prefix), r.host is not None)
                    > (len(best.prefix), best.host is not None)):
                best = r
        return best

    # -- connections -----------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, self._one, self._conns, log)

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; ``True`` to keep the connection for another."""
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
        except asyncio.LimitOverrunError:
            await _refuse(reader, writer,
                          plain_response(431, "request header section too large\n"))
            return False
        except (asyncio.IncompleteReadError, TimeoutError):
            return False
        assert self.context is not None
        try:
            req = parse_head(raw)
            path, authority = path_of(req)
            length = body_length(req)
            body = BodyReader(reader, length, self.max_body)
            if length is not None and any(v.lower() == b"100-continue"
                                          for v in req.header("expect")):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            # A body that fits one message goes whole; a bigger one is streamed as it comes.
            first = await asyncio.wait_for(
                body.read_upto(self.context.nc.max_payload - INLINE_ROOM), self.timeout)
        except BadRequest as exc:
            await _refuse(reader, writer, plain_response(exc.status, f"{exc}\n"))
            return False
        except BodyTooLarge as exc:
            await _refuse(reader, writer, plain_response(413, f"{exc}\n"))
            return False
        except TimeoutError:
            await _refuse(reader, writer,
                          plain_response(408, "request body not received in time\n"))
            return False
        self.stats["requests"] += 1
        route = self.route(path, authority)
        if route is None:
            answer = plain_response(404, f"no route for {authority or ''}{path}\n")
            await (_send(writer, answer) if body.done else _refuse(reader, writer, answer))
            return False
        exchange = Forward(self, route, req, route.rewrite(path), authority, body, first)
        return await exchange.run(writer) and keep_alive(req)

    def error(self, status: int, text: str) -> Answer:
        """Our own answer for a failure to reach the component (logged)."""
        self.stats["errors"] += 1
        log.warning("%d: %s", status, text)
        return Answer(status, [("content-type", b"text/plain")], (text + "\n").encode())


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  data: bytes) -> None:
    """An answer given with the request not read to its end (it closes the connection)."""
    await _send(writer, data)
    await close_unread(reader, writer)
