"""HTTP requests from the lattice: a host answers ``trellis.http.{lattice}.{component}`` for each
component it serves that exports ``wasi:http/incoming-handler``.

The ``http-server`` provider (``providers/http_server.py``), on this host or any other, sends
each request it routes to the component's queue group (one replica answers); this module
drives the guest as ``trellis serve`` does (``ProxyComponent``: a fresh or pooled instance per
the component's policy) and replies with status, headers and body. The wire format is
``lattice/http1.py``'s (docs/protocol.md, "HTTP over the lattice"). Bodies that do not fit one
NATS message are streamed (``lattice/bodies.py``), both ways, with credit-based flow control
tied to the guest's reads and writes: a 50 MB body never sits in host memory.

Failures become HTTP answers, like ``trellis serve``'s: a trap → 500 with an error id in the
log, the request's deadline → 504, no free instance in time → 503; the host keeps serving.

Components also need the wasi:http host side to load on a host at all: ``with_http_imports``
and ``adapt_component`` are the hooks ``host/ctl.py`` calls when it starts one.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ...lattice import subjects
from ...lattice.bodies import (
    BodyReceiver,
    BodySender,
    StreamError,
    StreamHeaders,
    announced,
)
from ...lattice.connection import flush
from ...lattice.errors import CapacityTimeout, DeadlineExceeded
from ...lattice.http1 import HttpHeaders, fields_from_json, fields_to_json, trailers_of
from ...lattice.models import Headers
from ...lattice.rpc import fits
from ...lattice.wit import types as t
from ..links import LinkRouter, linked_imports
from ..runtime.imports import HostImports
from ..runtime.runtime import Component
from .imports import wasi_http_imports
from .pipe import Exchange, Pipe, PipeClosed, RequestDeadline
from .proxy import HANDLER, HttpExchange, ProxyComponent, ResponseError
from .spin import CONFIG, is_spin, spin_imports
from .wasi_io import Sink

if TYPE_CHECKING:
    from ..host import Host

log = logging.getLogger("trellis.http")

DEFAULT_TIMEOUT = 30.0
"""Seconds per request when the request carries no deadline."""
REPLY_MARGIN = 0.05
"""Seconds before the caller's deadline at which the guest is stopped, so the 504 reaches the
provider before it gives up (at most 10% of the budget)."""
KV_STORE = "wasi:keyvalue/store"
INLINE_ROOM = 16 * 1024
"""Bytes of ``max_payload`` kept for the reply's headers: a response body up to the rest that
is complete when the head is ready goes in the reply itself, a bigger one is streamed."""


# -- loading http components on a host --------------------------------------------------------

def is_http(world: t.WorldType) -> bool:
    """Whether a component speaks wasi:http (imports its types or exports the handler)."""
    return any(i.name.startswith("wasi:http/") for i in world.imports) or any(
        i.name.split("@")[0] == HANDLER for i in world.exports)


def with_http_imports(world: t.WorldType, static: HostImports, *,
                      component_id: str | None = None, links: LinkRouter | None = None,
                      stdout: Sink | str = "discard", stderr: Sink | str = "discard"
                      ) -> HostImports:
    """``static`` plus the Python wasi:io / wasi:http host side for a wasi:http component
    (else ``static``): links must not claim those interfaces, and wasmtime's native WASI
    cannot hand them our streams. A Spin app also gets Spin key-value and variables over its
    own links (``spin_on_links``) when the host names it (``component_id``, ``links``). What
    the guest prints goes to ``stdout`` / ``stderr`` (``wasi_http_imports``)."""
    if not is_http(world):
        return static
    imports = wasi_http_imports(base=static, stdout=stdout, stderr=stderr)
    if is_spin(world) and component_id is not None and links is not None:
        imports = spin_on_links(world, imports, component_id, links)
    return imports


def spin_on_links(world: t.WorldType, base: HostImports, component_id: str,
                  links: LinkRouter) -> HostImports:
    """``base`` plus Spin's interfaces, with ``fermyon:spin/key-value`` served by whatever the
    component's ``wasi:keyvalue/store`` link points at and ``fermyon:spin/variables`` by its
    ``wasi:config/store`` link (e.g. the ``config`` provider with the link's target config),
    looked up on each call like every linked import. A Spin app whose world does not import
    those WASI interfaces gets Spin key-value / variables that trap, naming why."""
    linked = linked_imports(component_id, world, links, base)

    def link_of(prefix: str) -> _StoreFree | None:
        name = next((i.name for i in world.imports if i.name.startswith(prefix + "@")), None)
        found = linked.find(name) if name is not None else None
        return _StoreFree(found) if found is not None and base.find(name or "") is None \
            else None

    return spin_imports(world, base, keyvalue=link_of(KV_STORE), config=link_of(CONFIG))


class _StoreFree(Mapping[str, Any]):
    """A link dispatcher's functions without their leading Store argument (the link name is
    then always the default): the shape Spin's adapters call."""

    def __init__(self, dispatch: Any) -> None:
        self._dispatch = dispatch

    def __getitem__(self, function: str) -> Any:
        fn = self._dispatch[function]
        return lambda *args: fn(0, *args)

    def __iter__(self) -> Iterator[str]:
        return iter(self._dispatch)

    def __len__(self) -> int:
        return len(self._dispatch)


SPARE_INSTANCES = 2
"""Fresh instances of a wasi:http component a host keeps made ahead of requests, as
``trellis serve`` does: instantiation then runs beside requests, not in their way."""


def adapt_component(component: Component) -> Component:
    """A wasi:http component's pooled calls must not start on the loop thread: its sync
    wasi:io imports block until the loop delivers body data (``InstancePolicy.inline``).
    In fresh mode it gets ``SPARE_INSTANCES`` (the host drops them when it stops or replaces
    the component)."""
    mgr = component.instances
    if not is_http(component.world):
        return component
    if mgr.policy.inline:
        mgr.policy = replace(mgr.policy, inline=False)
    if mgr.policy.mode == "fresh":
        mgr.prepare(min(SPARE_INSTANCES, mgr.policy.max_instances))
    return component


def exports_handler(component: Component) -> bool:
    return any(k.split("#")[0].split("@")[0] == HANDLER for k in component.compiled.functions)


# -- serving requests from NATS ---------------------------------------------------------------

def failure(exc: BaseException | None) -> tuple[int, str]:
    """Status and text for a request the guest did not answer (as ``trellis serve``)."""
    cause = exc.__cause__ if exc is not None else None
    if isinstance(exc, CapacityTimeout):
        return 503, "no free instance in time"
    if isinstance(exc, DeadlineExceeded | RequestDeadline | TimeoutError) or isinstance(
            cause, RequestDeadline):
        return 504, "the component did not answer in time"
    if isinstance(exc, ResponseError):
        return 500, "the component answered with an error"
    return 500, "internal server error"


class HttpLattice:
    """The HTTP side of one host: a subscription per wasi:http component it serves."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.subs: dict[str, Subscription] = {}
        self._proxies: dict[str, tuple[Component, ProxyComponent]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = {"requests": 0, "errors": 0}

    async def serve(self, component_id: str) -> None:
        """Answer HTTP for ``component_id`` if it runs here and exports the handler."""
        component = self.host.local_component(component_id)
        if component is None or not exports_handler(component) or component_id in self.subs:
            return
        lattice = self.host.lattice

        async def on_msg(msg: Msg) -> None:
            task = asyncio.create_task(self._handle(component_id, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self.subs[component_id] = await self.host.nc.subscribe(
            subjects.http_request(lattice, component_id),
            queue=subjects.http_queue(lattice, component_id), cb=on_msg)
        await flush(self.host.nc)  # reachable for real once serve returns

    async def unserve(self, component_id: str) -> None:
        sub = self.subs.pop(component_id, None)
        self._proxies.pop(component_id, None)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def close(self, timeout: float = 5.0) -> None:
        """Stop taking requests; give those in flight ``timeout`` seconds, then cancel them."""
        for cid in list(self.subs):
            await self.unserve(cid)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _proxy(self, component_id: str, timeout: float) -> ProxyComponent | None:
        component = self.host.local_component(component_id)
        if component is None:
            return None
        cached = self._proxies.get(component_id)
        if cached is None or cached[0] is not component:  # new, or rescaled to new code
            cached = self._proxies[component_id] = (component, ProxyComponent(component))
        proxy = copy.copy(cached[1])  # the deadline is per request
        proxy.timeout = timeout
        return proxy

    async def _handle(self, component_id: str, msg: Msg) -> None:
        self.stats["requests"] += 1
        try:
            await self._serve_one(component_id, msg, msg.headers or {})
        except Exception as exc:  # a bug here must not leave the provider waiting
            error_id = self._log_failure(component_id, exc)
            await self._reply(msg, 500, *_plain(f"internal server error (error id {error_id})"),
                              error_id)

    async def _reply(self, msg: Msg, status: int, fields: list[tuple[str, bytes]], body: bytes,
                     trailers: list[tuple[str, bytes]] | None, error_id: str | None = None,
                     stream: str | None = None) -> None:
        """The response head, with the whole body or (``stream``) the announcement of it."""
        if not msg.reply:
            return
        out = {HttpHeaders.STATUS: str(status), HttpHeaders.FIELDS: fields_to_json(fields),
               Headers.HOST: self.host.host_id}
        if trailers:
            out[HttpHeaders.TRAILERS] = fields_to_json(trailers)
        if error_id:
            out[HttpHeaders.ERROR_ID] = error_id
        if stream is not None:
            out[StreamHeaders.BODY] = stream
        try:
            await self.host.nc.publish(msg.reply, body, headers=out)
        except Exception as exc:
            log.error("cannot reply to HTTP request %s: %s",
                      (msg.headers or {}).get(Headers.INVOCATION_ID), exc)

    async def _serve_one(self, component_id: str, msg: Msg, hdrs: dict[str, str]) -> None:
        try:
            deadline = float(hdrs[Headers.DEADLINE])
        except (KeyError, ValueError):
            deadline = time.time() + DEFAULT_TIMEOUT
        budget = deadline - time.time()
        timeout = budget - min(REPLY_MARGIN, budget / 10)
        loop_deadline = asyncio.get_running_loop().time() + budget
        try:
            method, path = hdrs[HttpHeaders.METHOD], hdrs[HttpHeaders.PATH]
            fields = fields_from_json(hdrs.get(HttpHeaders.FIELDS))
            req_trailers = trailers_of(hdrs)
        except (KeyError, ValueError) as exc:
            return await self._reply(msg, 400, *_plain(f"malformed lattice HTTP request: {exc}"))
        control = announced(hdrs)
        if timeout <= 0:
            return await self._failed(msg, component_id,
                                      DeadlineExceeded(component_id, HANDLER, 0))
        proxy = self._proxy(component_id, timeout)
        if proxy is None:
            return await self._reply(
                msg, 503, *_plain(f"{component_id} does not run on this host any more"))
        request_body = Pipe(Exchange(None, None))
        feeder: asyncio.Task[None] | None = None
        try:
            if control is not None:  # the body follows as a stream: ask for it, with credit
                receiver = BodyReceiver(self.host.nc, control, loop_deadline)
                try:
                    await receiver.open()
                except Exception as exc:  # e.g. a control inbox that is no subject
                    await receiver.close()  # (open dropped it already; close is idempotent)
                    return await self._reply(
                        msg, 400, *_plain(f"unreadable request body stream: {exc!r}"))
                feeder = asyncio.create_task(_feed_stream(request_body, receiver))
            else:
                feeder = asyncio.create_task(_feed(request_body, msg.data, req_trailers))
            ex = proxy.start(method, path, fields, request_body,
                             scheme=hdrs.get(HttpHeaders.SCHEME, "http"),
                             authority=hdrs.get(HttpHeaders.AUTHORITY))
            try:
                await self._respond(component_id, msg, ex, loop_deadline)
            finally:
                ex.release()
        finally:
            if feeder is not None:
                if not feeder.done():
                    feeder.cancel()
                with contextlib.suppress(BaseException):
                    await feeder

    async def _respond(self, component_id: str, msg: Msg, ex: HttpExchange,
                       deadline: float) -> None:
        """Wait for the guest's response; send it whole when it is small and done soon
        (within ``HttpExchange.HOLD_TIME`` of being set), else the head now and the body as
        a stream while the guest writes it."""
        call = ex.call
        assert call is not None
        await asyncio.wait((ex.response, call), return_when=asyncio.FIRST_COMPLETED)
        if not ex.response.done() or ex.response.exception() is not None:
            if not ex.response.done():
                ex.response.cancel()
            why = call.exception() if call.done() and not call.cancelled() else None
            if why is None and ex.response.done() and not ex.response.cancelled():
                why = ex.response.exception()
            return await self._failed(msg, component_id, why)
        resp = ex.response.result()
        pipe = resp.body
        inline = min(self.host.nc.max_payload - INLINE_ROOM, pipe.limit - 1)
        hold = asyncio.ensure_future(pipe.wait_async(
            lambda: pipe.eof or pipe.error is not None or pipe.size > inline))
        # Not past the response's hold time: a slow stream's head goes out, and the body
        # follows as the guest writes it.
        await asyncio.wait((hold, call), timeout=max(0.0, resp.hold_until - time.monotonic()),
                           return_when=asyncio.FIRST_COMPLETED)
        hold.cancel()
        if pipe.error is not None and not pipe.size:  # failed before any byte: answer for it
            with contextlib.suppress(BaseException):
                await call
            err = call.exception() if call.done() and not call.cancelled() else None
            return await self._failed(msg, component_id, err or pipe.error)
        first = pipe.take(pipe.size) if pipe.eof else b""
        if pipe.eof and fits(self.host.nc, first, {"": fields_to_json(resp.headers)}):
            await self._reply(msg, resp.status, list(resp.headers), first, pipe.trailers)
        else:
            await self._stream(component_id, msg, resp.status, list(resp.headers), first, pipe,
                               deadline)
        try:
            await call
        except Exception as exc:  # the response went out (or failed): log the guest's failure
            self._log_failure(component_id, exc)

    async def _stream(self, component_id: str, msg: Msg, status: int,
                      fields: list[tuple[str, bytes]], first: bytes, pipe: Pipe,
                      deadline: float) -> None:
        """Reply with the head and stream the body from the guest's pipe (backpressure: the
        guest's writes wait while the provider has not granted credit)."""
        sender = BodySender(self.host.nc, deadline)
        try:
            await self._reply(msg, status, fields, b"", None, stream=await sender.open())
            await sender.send(first)
            while data := await pipe.read_async(sender.chunk):
                await sender.send(data)
            trailers = pipe.trailers
            await sender.finish({HttpHeaders.TRAILERS: fields_to_json(trailers)}
                                if trailers else None)
        except PipeClosed as exc:  # the guest failed mid-body: the client sees it cut
            await sender.abort(f"the component failed mid-body: {exc}")
            log.error("response body of %s failed after %d bytes: %s", component_id,
                      sender.sent, exc)
        except StreamError as exc:  # the provider cancelled or vanished: stop the guest
            pipe.close_reader()
            log.warning("response body of %s not delivered after %d bytes: %s", component_id,
                        sender.sent, exc)
        finally:
            await sender.close()

    async def _failed(self, msg: Msg, component_id: str, exc: BaseException | None) -> None:
        status, text = failure(exc)
        error_id = self._log_failure(component_id, exc if exc is not None else
                                     RuntimeError("the component set no response"))
        await self._reply(msg, status, *_plain(f"{text} (error id {error_id})"), error_id)

    def _log_failure(self, component_id: str, exc: BaseException) -> str:
        error_id = uuid.uuid4().hex[:12]
        self.stats["errors"] += 1
        log.error("HTTP request for %s failed [error id %s]: %s: %s", component_id, error_id,
                  type(exc).__name__, exc)
        return error_id


def _plain(text: str) -> tuple[list[tuple[str, bytes]], bytes, None]:
    return [("content-type", b"text/plain")], (text + "\n").encode(), None


async def _feed(pipe: Pipe, data: bytes, trailers: Any) -> None:
    """Hand a body that came whole to the guest in pipe-sized pieces (backpressure)."""
    try:
        view = memoryview(data)
        for i in range(0, len(view), 65536):
            await pipe.write_async(bytes(view[i:i + 65536]))
        pipe.finish(trailers)
    except PipeClosed:  # the guest stopped reading: fine
        pass


async def _feed_stream(pipe: Pipe, receiver: BodyReceiver) -> None:
    """Hand a streamed body to the guest as it arrives: credit goes back to the provider only
    as the guest reads, so at most the window plus the pipe is ever buffered here."""
    try:
        while data := await receiver.read():
            await pipe.write_async(data)
        pipe.finish(trailers_of(receiver.end_headers))
    except PipeClosed:  # the guest stopped reading: the provider stops sending
        await receiver.cancel("the component stopped reading the request body")
    except StreamError as exc:  # the client went away, or the provider did: the guest sees it
        pipe.fail(PipeClosed(f"request body: {exc}"))
    finally:
        await receiver.cancel("the request is over")
        await receiver.close()
