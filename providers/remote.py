"""Providers over NATS: how a component on one host reaches a provider running elsewhere.

Every provider serves ``trellis.prov.{lattice}.{id}.call`` (queue group per id, so replicas of a
standalone provider share the load) — whether it runs as its own process (``trellis provider
run``) or inside a host, so components on *other* hosts can use a provider started in-process.

One request per WIT call. Headers name the call; the body is the arguments in the lattice value
encoding (``docs/value-encoding.md``), driven by the function's type, which the caller sends as
JSON (providers do not know the component's WIT version in advance)::

    Trellis-Source      the calling component id (selects the provider's link)
    Trellis-Link        the link name
    Trellis-Function    ns:pkg/iface@ver#func
    Trellis-Type        the function type (lattice/wit/typejson.py)
    Trellis-Deadline    unix seconds; the provider gives up after it

The reply's ``Trellis-Status`` is ``ok`` (body = result) or an error kind (body = message):
``no_link`` (the provider has no link from that component), ``bad_request``, ``failed``.
Resource handles travel as ``u32`` numbers the serving side keeps per calling component;
the caller holds ``RemoteHandle`` proxies and a dropped handle sends ``[drop]`` so the serving
side can close the object.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from ..lattice import subjects
from ..lattice.codec import decode_args, decode_result, encode_args, encode_result
from ..lattice.connection import flush
from ..lattice.errors import LinkTargetUnavailable, NoLink, TrellisError
from ..lattice.wit import types as t
from ..lattice.wit.resources import map_resources, without_resources
from ..lattice.wit.typejson import func_from_json, func_to_json
from .sdk import Link, Provider, resolve_call

_LOG = logging.getLogger(__name__)

H_SOURCE, H_LINK, H_FUNCTION = "Trellis-Source", "Trellis-Link", "Trellis-Function"
H_TYPE, H_DEADLINE, H_STATUS = "Trellis-Type", "Trellis-Deadline", "Trellis-Status"
DROP = "[drop]"
DEFAULT_TIMEOUT = 30.0


class ProviderCallFailed(TrellisError):
    """The provider answered a call with an error (it raised, or refused the request)."""

    def __init__(self, provider: str, function: str, kind: str, message: str) -> None:
        self.provider, self.function, self.kind = provider, function, kind
        super().__init__(f"provider {provider} {function}: {message} [{kind}]")


def _wire(ft: t.FuncType) -> t.FuncType:
    return t.FuncType(ft.name, tuple((n, without_resources(p)) for n, p in ft.params),
                      without_resources(ft.result))


class RemoteHandle:
    """A resource the remote provider holds, as the caller's host sees it."""

    __slots__ = ("client", "resource", "handle", "__weakref__")

    def __init__(self, client: RemoteProvider, resource: str, handle: int) -> None:
        self.client, self.resource, self.handle = client, resource, handle

    def close(self) -> None:
        self.client.drop(self)


class RemoteProvider:
    """The caller side: ``call`` is a ``host.links.RemoteCall`` for links to ``provider_id``."""

    def __init__(self, nc: Client, lattice: str, provider_id: str, source: str,
                 link_name: str = "default", *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.nc, self.provider_id = nc, provider_id
        self.source, self.link_name, self.timeout = source, link_name, timeout
        self.subject = subjects.provider_call(lattice, provider_id)
        self.loop = asyncio.get_running_loop()  # handles are dropped from any thread
        self._types: dict[tuple[str, str], tuple[t.FuncType, str, Any, Any]] = {}

    def _plan(self, iface: t.InterfaceType, function: str) -> tuple[t.FuncType, str, Any, Any]:
        key = (iface.name, function)
        plan = self._types.get(key)
        if plan is None:
            ft = iface.functions[function]
            to_wire = [map_resources(p, lambda _r: lambda _c, h: h.handle) for _, p in ft.params]
            from_wire = map_resources(
                ft.result, lambda r: lambda _c, n: RemoteHandle(self, r.resource, n))
            plan = self._types[key] = (ft, json.dumps(func_to_json(ft)), to_wire, from_wire)
        return plan

    async def call(self, iface: t.InterfaceType, function: str, args: tuple[Any, ...]) -> Any:
        ft, type_json, to_wire, from_wire = self._plan(iface, function)
        wire = _wire(ft)
        body = encode_args([f(None, a) for f, a in zip(to_wire, args, strict=True)], wire.params)
        name = f"{iface.name}#{function}"
        reply = await self._request(name, body, type_json)
        return from_wire(None, decode_result(reply.data, wire.result))

    async def _request(self, name: str, body: bytes, type_json: str) -> Msg:
        headers = {H_SOURCE: self.source, H_LINK: self.link_name, H_FUNCTION: name,
                   H_TYPE: type_json, H_DEADLINE: f"{time.time() + self.timeout:.3f}"}
        try:
            msg = await self.nc.request(self.subject, body, timeout=self.timeout,
                                        headers=headers)
        except NoRespondersError:
            raise LinkTargetUnavailable(self.source, name, self.provider_id,
                                        "no provider with this id is running") from None
        except (TimeoutError, NatsTimeout):
            raise LinkTargetUnavailable(self.source, name, self.provider_id,
                                        f"no answer within {self.timeout:g} s") from None
        status = (msg.headers or {}).get(H_STATUS, "")
        if status != "ok":
            text = bytes(msg.data).decode("utf-8", "replace")
            if status == "no_link":  # the provider has not heard of this link (yet)
                raise NoLink(self.source, name, self.link_name)
            raise ProviderCallFailed(self.provider_id, name, status or "failed", text)
        return msg

    def drop(self, handle: RemoteHandle) -> None:
        """Tell the provider to close a handle the guest dropped (fire and forget)."""
        headers = {H_SOURCE: self.source, H_LINK: self.link_name, H_FUNCTION: DROP}
        data = str(handle.handle).encode()
        try:
            asyncio.run_coroutine_threadsafe(self.nc.publish(self.subject, data, headers=headers),
                                             self.loop)
        except Exception:  # the connection is gone: the provider forgets with its process
            pass


class ProviderServer:
    """The serving side: answers calls for one provider's links over NATS."""

    def __init__(self, nc: Client, lattice: str, provider_id: str, provider: Provider) -> None:
        self.nc, self.lattice, self.provider_id, self.provider = nc, lattice, provider_id, provider
        self._sub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handles: dict[str, dict[int, Any]] = {}  # per calling component
        self._ids = itertools.count(1)
        self._types: dict[str, tuple[t.FuncType, t.FuncType, list[Any], Any]] = {}
        self._impls: dict[tuple[Any, str], tuple[Link, Any]] = {}

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(
            subjects.provider_call(self.lattice, self.provider_id),
            queue=subjects.provider_queue(self.lattice, self.provider_id), cb=self._on_msg)
        await flush(self.nc)  # callable for real once start returns

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection is closing anyway
                pass
            self._sub = None
        for task in list(self._tasks):
            task.cancel()
        for table in self._handles.values():
            for obj in table.values():
                _close(obj)
        self._handles.clear()

    async def _on_msg(self, msg: Msg) -> None:
        task = asyncio.ensure_future(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _link(self, source: str, name: str, function: str) -> Link | None:
        package = function.split("/", 1)[0]
        for link in self.provider.links.values():
            if link.source == source and link.name == name and \
                    f"{link.namespace}:{link.package}" == package:
                return link
        return None

    async def _handle(self, msg: Msg) -> None:
        h = msg.headers or {}
        source, name = h.get(H_SOURCE, ""), h.get(H_LINK, "default")
        function = h.get(H_FUNCTION, "")
        if function == DROP:
            try:
                _close(self._handles.get(source, {}).pop(int(msg.data), None))
            except ValueError:
                pass
            return
        try:
            out = await self._call(source, name, function, h.get(H_TYPE, ""), msg.data,
                                   h.get(H_DEADLINE))
            if msg.reply:
                await self.nc.publish(msg.reply, out, headers={H_STATUS: "ok"})
        except _Refused as exc:
            await self._answer(msg, exc.kind, str(exc))
        except Exception as exc:  # the provider raised: the caller gets it, we keep serving
            _LOG.debug("provider %s %s failed", self.provider_id, function, exc_info=True)
            await self._answer(msg, "failed", f"{type(exc).__name__}: {exc}")

    async def _answer(self, msg: Msg, kind: str, text: str) -> None:
        if msg.reply:
            try:
                await self.nc.publish(msg.reply, text[:4000].encode(), headers={H_STATUS: kind})
            except Exception:
                pass

    async def _call(self, source: str, name: str, function: str, type_json: str,
                    data: bytes, deadline: str | None) -> bytes:
        link = self._link(source, name, function)
        if link is None:
            raise _Refused("no_link", f"provider {self.provider_id} has no link {name!r} from "
                                      f"component {source!r} for {function.split('#')[0]}")
        iface, _, fname = function.partition("#")
        try:
            ft, wire, to_obj, to_handle = self._plan(type_json, source)
            args = decode_args(data, wire.params)
        except Exception as exc:
            raise _Refused("bad_request", f"cannot decode the call: {exc}") from exc
        args = [f(None, a) for f, a in zip(to_obj, args, strict=True)]
        impl = self._impl(link, iface)
        fn, call_args = resolve_call(impl, fname, tuple(args))
        out = fn(*call_args)
        if inspect.isawaitable(out):
            left = None if not deadline else max(0.01, float(deadline) - time.time())
            out = await asyncio.wait_for(out, left)
        return encode_result(to_handle(None, out), wire.result)

    def _impl(self, link: Link, iface: str) -> Any:
        """The implementation for this link (made again when the link was replaced)."""
        key = (link.key, iface)
        cached = self._impls.get(key)
        if cached is None or cached[0] is not link:
            cached = self._impls[key] = (
                link, self.provider.implementation(iface.split("/", 1)[1], link))
        return cached[1]

    def _plan(self, type_json: str, source: str) -> tuple[t.FuncType, t.FuncType, list[Any], Any]:
        key = f"{source}\0{type_json}"
        plan = self._types.get(key)
        if plan is None:
            ft = func_from_json(json.loads(type_json))
            table = self._handles.setdefault(source, {})

            def to_obj(r: Any) -> Callable[[Any, int], Any]:
                owned = isinstance(r, t.OwnType)  # an own handle moves back: forget it here

                def get(_c: Any, n: int) -> Any:
                    if n not in table:
                        raise _Refused("bad_request", f"unknown resource handle {n}")
                    return table.pop(n) if owned else table[n]
                return get

            def to_handle(_r: Any) -> Callable[[Any, Any], int]:
                def put(_c: Any, obj: Any) -> int:
                    n = next(self._ids) & 0xFFFFFFFF
                    table[n] = obj
                    return n
                return put

            plan = self._types[key] = (ft, _wire(ft),
                                       [map_resources(p, to_obj) for _, p in ft.params],
                                       map_resources(ft.result, to_handle))
        return plan


class _Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


def _close(obj: Any) -> None:
    close = getattr(obj, "close", None)
    if callable(close):
        try:
            out = close()
            if inspect.isawaitable(out):
                asyncio.ensure_future(out)
        except Exception:
            pass
