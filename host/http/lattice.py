"""HTTP requests from the lattice: a host answers ``trellis.http.{lattice}.{component}`` for each
component it serves that exports ``wasi:http/incoming-handler``.

The ``http-server`` provider (``providers/http_server.py``), on this host or any other, sends
each request it routes to the component's queue group (one replica answers); this module
drives the guest as ``trellis serve`` does (``ProxyComponent``: a fresh or pooled instance per
the component's policy) and replies with status, headers and body. The wire format is
``lattice/http1.py``'s (docs/protocol.md, "HTTP over the lattice"): bodies that do not fit one
NATS message go through the lattice's payload object store, both ways.

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
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ...lattice import subjects
from ...lattice.errors import CapacityTimeout, DeadlineExceeded
from ...lattice.http1 import HttpHeaders, fields_from_json, fields_to_json, trailers_of
from ...lattice.models import Headers
from ...lattice.rpc import PayloadStore, publish, read_body
from ...lattice.wit import types as t
from ..runtime.imports import HostImports
from ..runtime.runtime import Component
from .imports import wasi_http_imports
from .pipe import Exchange, Pipe, PipeClosed, RequestDeadline
from .proxy import HANDLER, ProxyComponent, ResponseError

if TYPE_CHECKING:
    from ..host import Host

log = logging.getLogger("trellis.http")

DEFAULT_TIMEOUT = 30.0
"""Seconds per request when the request carries no deadline."""
REPLY_MARGIN = 0.05
"""Seconds before the caller's deadline at which the guest is stopped, so the 504 reaches the
provider before it gives up (at most 10% of the budget)."""


# -- loading http components on a host --------------------------------------------------------

def is_http(world: t.WorldType) -> bool:
    """Whether a component speaks wasi:http (imports its types or exports the handler)."""
    return any(i.name.startswith("wasi:http/") for i in world.imports) or any(
        i.name.split("@")[0] == HANDLER for i in world.exports)


def with_http_imports(world: t.WorldType, static: HostImports) -> HostImports:
    """``static`` plus the Python wasi:io / wasi:http host side for a wasi:http component
    (else ``static``): links must not claim those interfaces, and wasmtime's native WASI
    cannot hand them our streams."""
    return wasi_http_imports(base=static) if is_http(world) else static


def adapt_component(component: Component) -> Component:
    """A wasi:http component's pooled calls must not start on the loop thread: its sync
    wasi:io imports block until the loop delivers body data (``InstancePolicy.inline``)."""
    mgr = component.instances
    if is_http(component.world) and mgr.policy.inline:
        mgr.policy = replace(mgr.policy, inline=False)
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
        self._payloads: PayloadStore | None = None
        self.stats = {"requests": 0, "errors": 0}

    @property
    def payloads(self) -> PayloadStore:
        if self._payloads is None:
            self._payloads = PayloadStore(self.host.nc, self.host.lattice)
        return self._payloads

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
        await self.host.nc.flush()

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
        hdrs = msg.headers or {}
        req_id = hdrs.get(Headers.INVOCATION_ID) or uuid.uuid4().hex
        self.stats["requests"] += 1
        try:
            status, fields, body, trailers, error_id = await self._serve_one(
                component_id, msg, hdrs)
        except Exception as exc:  # a bug here must not leave the provider waiting
            status, text = 500, "internal server error"
            error_id = self._log_failure(component_id, exc)
            fields, body, trailers = _plain(f"{text} (error id {error_id})")
        if not msg.reply:
            return
        out = {HttpHeaders.STATUS: str(status), HttpHeaders.FIELDS: fields_to_json(fields),
               Headers.HOST: self.host.host_id}
        if trailers:
            out[HttpHeaders.TRAILERS] = fields_to_json(trailers)
        if error_id:
            out[HttpHeaders.ERROR_ID] = error_id
        try:
            await publish(self.host.nc, self.payloads, msg.reply, body, out, f"{req_id}.res")
        except Exception as exc:
            log.error("cannot reply to HTTP request %s for %s: %s", req_id, component_id, exc)

    async def _serve_one(self, component_id: str, msg: Msg, hdrs: dict[str, str]
                         ) -> tuple[int, list[tuple[str, bytes]], bytes,
                                    list[tuple[str, bytes]] | None, str | None]:
        try:
            deadline = float(hdrs[Headers.DEADLINE])
        except (KeyError, ValueError):
            deadline = time.time() + DEFAULT_TIMEOUT
        budget = deadline - time.time()
        timeout = budget - min(REPLY_MARGIN, budget / 10)
        try:
            method, path = hdrs[HttpHeaders.METHOD], hdrs[HttpHeaders.PATH]
            fields = fields_from_json(hdrs.get(HttpHeaders.FIELDS))
            req_trailers = trailers_of(hdrs)
        except (KeyError, ValueError) as exc:
            return (400, *_plain(f"malformed lattice HTTP request: {exc}"), None)
        if timeout <= 0:
            return self._failed(component_id, DeadlineExceeded(component_id, HANDLER, 0))
        proxy = self._proxy(component_id, timeout)
        if proxy is None:
            return (503, *_plain(f"{component_id} does not run on this host any more"), None)
        try:
            data = await asyncio.wait_for(read_body(msg, self.payloads, timeout), timeout)
        except Exception as exc:
            return self._failed(component_id, exc)
        request_body = Pipe(Exchange(None, None))
        ex = proxy.start(method, path, fields, request_body,
                         scheme=hdrs.get(HttpHeaders.SCHEME, "http"),
                         authority=hdrs.get(HttpHeaders.AUTHORITY))
        feeder = asyncio.create_task(_feed(request_body, data, req_trailers))
        call = ex.call
        assert call is not None
        try:
            await asyncio.wait((ex.response, call), return_when=asyncio.FIRST_COMPLETED)
            if not ex.response.done() or ex.response.exception() is not None:
                if not ex.response.done():
                    ex.response.cancel()
                why = call.exception() if call.done() and not call.cancelled() else None
                if why is None and ex.response.done() and not ex.response.cancelled():
                    why = ex.response.exception()
                return self._failed(component_id, why)
            resp = ex.response.result()
            parts: list[bytes] = []
            try:
                while chunk := await resp.body.read_async():
                    parts.append(chunk)
            except PipeClosed as exc:  # failed mid-body: nothing went out yet, answer for it
                with contextlib.suppress(BaseException):
                    await call
                err = call.exception() if call.done() and not call.cancelled() else None
                return self._failed(component_id, err or exc)
            try:
                await call
            except Exception as exc:  # the whole response was made: send it, log the failure
                self._log_failure(component_id, exc)
            return resp.status, list(resp.headers), b"".join(parts), resp.body.trailers, None
        finally:
            ex.release()
            if not feeder.done():
                feeder.cancel()
            with contextlib.suppress(BaseException):
                await feeder

    def _failed(self, component_id: str, exc: BaseException | None
                ) -> tuple[int, list[tuple[str, bytes]], bytes, None, str]:
        status, text = failure(exc)
        error_id = self._log_failure(component_id, exc if exc is not None else
                                     RuntimeError("the component set no response"))
        return (status, *_plain(f"{text} (error id {error_id})"), error_id)

    def _log_failure(self, component_id: str, exc: BaseException) -> str:
        error_id = uuid.uuid4().hex[:12]
        self.stats["errors"] += 1
        log.error("HTTP request for %s failed [error id %s]: %s: %s", component_id, error_id,
                  type(exc).__name__, exc)
        return error_id


def _plain(text: str) -> tuple[list[tuple[str, bytes]], bytes, None]:
    return [("content-type", b"text/plain")], (text + "\n").encode(), None


async def _feed(pipe: Pipe, data: bytes, trailers: Any) -> None:
    """Hand the request body to the guest in pipe-sized pieces (backpressure)."""
    try:
        view = memoryview(data)
        for i in range(0, len(view), 65536):
            await pipe.write_async(bytes(view[i:i + 65536]))
        pipe.finish(trailers)
    except PipeClosed:  # the guest stopped reading: fine
        pass
