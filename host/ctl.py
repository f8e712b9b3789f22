"""The host's control interface: one handler per ``trellis.ctl.v1.{lattice}.…`` subject.

Every request gets a ``CtlReply`` (``{"success", "message", "response"}``). Requests are JSON
validated strictly against the wire models (unknown fields, wrong types and garbage bytes are
failed replies that name the problem) and no handler exception ever reaches nats-py, so the
subscriptions survive anything a client sends.

``component.scale`` answers as soon as the request is valid ("accepted") and does the work in
the background — fetching an artifact and compiling a big component take seconds — then
publishes ``component_scaled`` or ``component_scale_failed`` (with ``reason``) carrying the
request's ``request_id``. Scale operations on one component id run one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError

from ..lattice import subjects
from ..lattice.models import (
    CtlReply,
    Empty,
    LabelChange,
    LabelKey,
    ScaleComponent,
    StartProvider,
    StopHost,
    StopProvider,
)
from ..providers.sdk import ProviderError
from .config import RESERVED_LABEL_PREFIX, check_label_key
from .guestlog import GuestOutput
from .http.lattice import adapt_component, with_http_imports
from .links import linked_imports
from .rpc import Served
from .runtime.imports import HostImports
from .runtime.instances import InstancePolicy, Limits, WasiOptions
from .runtime.loader import CompiledComponent
from .runtime.runtime import Component, ComponentConfig

if TYPE_CHECKING:
    from .host import Host

_LOG = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[bytes], Awaitable[CtlReply[Any]]]
MAX_REQUEST = 64 * 1024
"""Control requests are small; anything bigger is refused before parsing."""
SHA_PREFIX = "sha256:"


class CtlError(Exception):
    """A request the host refuses; the message is the failed reply's ``message``."""


def parse(model: type[M], data: bytes, operation: str, *, empty_ok: bool = False) -> M:
    """``data`` as ``model``, strictly; ``CtlError`` naming the problem otherwise."""
    if len(data) > MAX_REQUEST:
        raise CtlError(f"{operation}: request of {len(data)} bytes is over the "
                       f"{MAX_REQUEST}-byte limit")
    if not data.strip():
        if empty_ok:
            return model()
        raise CtlError(f"{operation}: empty request; expected a JSON object")
    try:
        return model.model_validate_json(data, strict=True)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"])
            problems.append(f"{where}: {err['msg']}" if where else err["msg"])
        raise CtlError(f"invalid {operation} request: " + "; ".join(problems)) from None


class CtlServer:
    """Subscribes a host to its control subjects and answers them."""

    def __init__(self, host: Host) -> None:
        self.host = host
        lat, hid = host.lattice, host.host_id
        self.handlers: dict[str, tuple[str, Handler]] = {
            subjects.host_ping(lat): ("host.ping", self.ping),
            subjects.host_get(lat, hid): ("host.get", self.inventory),
            subjects.host_stop(lat, hid): ("host.stop", self.stop),
            subjects.label_put(lat, hid): ("label.put", self.label_put),
            subjects.label_del(lat, hid): ("label.del", self.label_del),
            subjects.component_scale(lat, hid): ("component.scale", self.scale),
            subjects.provider_start(lat, hid): ("provider.start", self.provider_start),
            subjects.provider_stop(lat, hid): ("provider.stop", self.provider_stop),
        }
        self.subs: list[Subscription] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._work: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        nc = self.host.nc
        for subject in subjects.host_ctl_wildcard(self.host.lattice, self.host.host_id):
            self.subs.append(await nc.subscribe(subject, cb=self._on_msg))

    async def close(self) -> None:
        for sub in self.subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # connection already closed: nothing to unsubscribe
                _LOG.debug("unsubscribe %s: %s", sub.subject, exc)
        self.subs.clear()
        for task in list(self._work):
            task.cancel()

    async def _on_msg(self, msg: Msg) -> None:
        operation, handler = self.handlers.get(msg.subject, ("?", None))
        try:
            if handler is None:
                reply = CtlReply.fail(f"unknown control subject {msg.subject}")
            else:
                reply = await handler(msg.data)
        except CtlError as exc:
            reply = CtlReply.fail(str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not end the subscription
            _LOG.exception("control handler %s failed", operation)
            reply = CtlReply.fail(f"{operation} failed on host {self.host.host_id}: "
                                  f"{type(exc).__name__}: {exc}")
        if msg.reply:
            try:
                await self.host.nc.publish(msg.reply, reply.model_dump_json().encode())
            except Exception as exc:
                _LOG.warning("cannot reply to %s: %s", operation, exc)

    # -- handlers --------------------------------------------------------------------------------

    async def ping(self, data: bytes) -> CtlReply[Any]:
        parse(Empty, data, "host.ping", empty_ok=True)
        return CtlReply.ok(self.host.info().model_dump())

    async def inventory(self, data: bytes) -> CtlReply[Any]:
        parse(Empty, data, "host.get", empty_ok=True)
        return CtlReply.ok(self.host.inventory().model_dump())

    async def stop(self, data: bytes) -> CtlReply[Any]:
        req = parse(StopHost, data, "host.stop")
        self.host.stop(timeout=req.timeout)
        return CtlReply.ok(message=f"host {self.host.host_id} stopping "
                           f"(draining for up to {req.timeout:g}s)")

    async def label_put(self, data: bytes) -> CtlReply[Any]:
        req = parse(LabelChange, data, "label.put")
        self._check_label(req.key)
        await self.host.set_label(req.key, req.value)
        return CtlReply.ok()

    async def label_del(self, data: bytes) -> CtlReply[Any]:
        req = parse(LabelKey, data, "label.del")
        self._check_label(req.key)
        if not await self.host.set_label(req.key, None):
            return CtlReply.ok(message=f"label {req.key!r} was not set")
        return CtlReply.ok()

    def _check_label(self, key: str) -> None:
        try:
            check_label_key(key)
        except ValueError as exc:
            raise CtlError(str(exc)) from None
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise CtlError(f"label {key!r} is set by the host itself; "
                           f"keys starting with {RESERVED_LABEL_PREFIX!r} are reserved")

    async def scale(self, data: bytes) -> CtlReply[Any]:
        req = parse(ScaleComponent, data, "component.scale")
        host = self.host
        if host.stopping:
            raise CtlError(f"host {host.host_id} is stopping")
        running = req.component_id in host.rpc.served
        if req.max_instances > 0 and req.image is None and not running:
            raise CtlError(f"{req.component_id} is not running on host {host.host_id}: "
                           "give `image` (sha256:… or a path) to start it")
        if req.image is not None:
            self._check_image(req.image)
        task = asyncio.create_task(self._scale(req))
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        verb = "stop" if req.max_instances == 0 else "scale"
        return CtlReply.ok({"host_id": host.host_id, "request_id": req.request_id},
                           message=f"{verb} of {req.component_id} accepted")

    def _check_image(self, image: str) -> None:
        if image.startswith(SHA_PREFIX):
            from ..lattice.artifacts import parse_ref

            try:
                parse_ref(image)
            except ValueError as exc:
                raise CtlError(str(exc)) from None
            return
        if not self.host.config.allow_file_load:
            raise CtlError(f"host {self.host.host_id} does not load components from files "
                           "(allow_file_load is off); push it and use its sha256: reference")
        if not Path(image).is_file():
            raise CtlError(f"{image} is not a file on host {self.host.host_id}; give a path "
                           "this host can read, or a sha256: artifact reference")

    # -- the scale work (background) ---------------------------------------------------------------

    async def _scale(self, req: ScaleComponent) -> None:
        cid = req.component_id
        lock = self._locks.setdefault(cid, asyncio.Lock())
        started = time.monotonic()
        async with lock:
            served = self.host.rpc.served.get(cid)
            event: dict[str, Any] = {
                "component_id": cid, "host_id": self.host.host_id,
                "image": req.image or (served.image if served else None),
                "max_instances": req.max_instances, "annotations": req.annotations,
                "request_id": req.request_id,
            }
            try:
                if req.max_instances == 0:
                    if served is not None:
                        await self.host.http.unserve(cid)
                        await self.host.rpc.unserve(cid, self.host.config.stop_timeout)
                        served.component.instances.retire()  # its spare and idle instances
                    event["digest"] = served.component.compiled.ref if served else None
                else:
                    comp = await self._component(req, served)
                    event["digest"] = comp.compiled.ref
                    if served is not None:
                        old = served.component
                        served.swap(comp)
                        old.instances.retire()
                        served.image = req.image or served.image
                        served.annotations = req.annotations or served.annotations
                    else:
                        try:
                            await self.host.rpc.serve(Served(cid, comp, req.image or "",
                                                             dict(req.annotations)))
                        except BaseException:
                            comp.instances.retire()  # never served: its spares go back
                            raise
                    await self.host.http.serve(cid)  # if it exports wasi:http: HTTP via NATS
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                event["reason"] = f"{type(exc).__name__}: {exc}"
                await self.host.publish_event("component_scale_failed", event)
                return
            event["seconds"] = round(time.monotonic() - started, 3)
            await self.host.publish_event("component_scaled", event)
            self.host.refresh_record()  # `host list` shows the new component count at once

    async def provider_start(self, data: bytes) -> CtlReply[Any]:
        req = parse(StartProvider, data, "provider.start")
        config: dict[str, str] = {}
        if req.config:
            from ..lattice.links import LinkStore

            found = await LinkStore(self.host.nc, self.host.lattice).get_config(req.config)
            if found is None:
                raise CtlError(f"no config named {req.config!r} (create it: `trellis config "
                               f"put {req.config} key=value …`)")
            config = found
        try:
            hp = await self.host.providers.start(req.provider_id, req.name, config=config,
                                                 config_name=req.config,
                                                 standalone=req.standalone)
        except ProviderError as exc:
            await self.host.publish_event("provider_start_failed", {
                "provider_id": req.provider_id, "name": req.name, "reason": str(exc)})
            raise CtlError(str(exc)) from None
        return CtlReply.ok(hp.describe(), f"provider {req.provider_id} ({req.name}) started "
                                          f"on {self.host.host_id}")

    async def provider_stop(self, data: bytes) -> CtlReply[Any]:
        req = parse(StopProvider, data, "provider.stop")
        if not await self.host.providers.stop(req.provider_id):
            raise CtlError(f"provider {req.provider_id!r} does not run on {self.host.host_id}")
        return CtlReply.ok(None, f"provider {req.provider_id} stopped")

    async def _component(self, req: ScaleComponent, served: Served | None) -> Component:
        runtime = self.host.runtime
        lim = req.limits
        cid, links = req.component_id, self.host.links
        out, err = GuestOutput(cid, "stdout"), GuestOutput(cid, "stderr")  # into the host's log
        config = ComponentConfig(
            policy=InstancePolicy(mode=req.mode, max_instances=req.max_instances),
            limits=Limits(lim.timeout, lim.fuel,
                          None if lim.max_memory_mib is None else lim.max_memory_mib << 20),
            wasi=WasiOptions(stdout=out, stderr=err),
        )

        def imports(compiled: CompiledComponent) -> HostImports:
            # Imports that are not WASI go through the host's links (host/links.py).
            static = with_http_imports(compiled.world, runtime.imports,  # wasi:io/http: ours
                                       component_id=cid, links=links, stdout=out, stderr=err)
            return linked_imports(cid, compiled.world, links, static)

        if req.image is None:  # rescale: same code, new policy and limits
            assert served is not None
            compiled = served.component.compiled
            return adapt_component(await asyncio.to_thread(Component, runtime, compiled,
                                                           config, imports(compiled)))
        source = await self._fetch(req.image)
        comp = adapt_component(await runtime.load_async(source, name=cid, config=config,
                                                        imports=imports))
        if req.image.startswith(SHA_PREFIX) and comp.compiled.ref != req.image:
            comp.instances.retire()
            raise CtlError(f"artifact {req.image} holds {comp.compiled.ref}; refusing it")
        return comp

    async def _fetch(self, image: str) -> Path:
        if not image.startswith(SHA_PREFIX):
            return Path(image)
        from ..lattice.artifacts import ArtifactStore

        store = ArtifactStore(self.host.nc.jetstream(), self.host.lattice)
        cache = self.host.config.resolved_cache_dir()
        return await store.fetch_to_cache(image, cache, timeout=self.host.fetch_timeout)
