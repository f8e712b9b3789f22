"""Resources that Python host imports define (a key-value ``bucket``, a blob ``container``…).

A provider returns a plain Python object where WIT says ``own<bucket>``; the guest gets a
handle, and when it passes ``borrow<bucket>`` back the provider sees the same object again.
Handles are numbered per Store: the table lives as long as the Store (``forget`` runs when
the Store is freed), and a guest dropping a handle calls the object's ``close()`` if it has
one. Conversion is driven by the WIT types, once per signature; types without resources are
passed through untouched.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import inspect
import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from wasmtime import WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import ResourceAny

from ...lattice.wit import types as t
from ...lattice.wit.resources import Mapper, has_resources, map_resources
from ...lattice.wit.values import Resource


def resource_id(iface: str, name: str) -> int:
    """The host resource type id of ``name`` defined by ``iface`` (stable across linkers)."""
    return int.from_bytes(hashlib.sha256(f"{iface}/{name}".encode()).digest()[:6], "little")


class StoreShim:
    """Enough of a Storelike for wasmtime-py's resource calls inside a host callback, which
    only has the raw context pointer."""

    __slots__ = ("ptr", "addr")

    def __init__(self, ptr: Any, addr: int = 0) -> None:
        self.ptr = ctypes.cast(ptr, ctypes.POINTER(ffi.wasmtime_context_t))
        self.addr = addr
        """The context's address, when the caller knew it (``HostHandle.to_any``)."""

    def _context(self) -> Any:
        return self.ptr


class ResourceTable:
    """Python objects behind host resource handles, per Store (keyed by context address)."""

    def __init__(self) -> None:
        self._stores: dict[int, dict[int, Any]] = {}
        self._owners: dict[int, int] = {}
        """Store address → the token of the Store living there (``claim``)."""
        self._reps = itertools.count(1)
        self._lock = threading.Lock()
        self.on_forget: list[Callable[[int], None]] = []
        """Called with a Store's context address when it is freed."""
        self.on_idle: list[Callable[[int], None]] = []
        """Called with a pooled Store's context address when its invocation is over, so
        per-invocation state (a chosen link name) does not leak into the next one."""

    def add(self, ctx: int, obj: Any) -> int:
        rep = next(self._reps) & 0xFFFFFFFF or next(self._reps)
        with self._lock:
            self._stores.setdefault(ctx, {})[rep] = obj
        return rep

    def add_detached(self, obj: Any) -> int:
        """A handle for an object the host passes *into* a call before its Store exists (the
        request of ``wasi:http/incoming-handler.handle``): found from any Store. The caller
        removes it with ``take(DETACHED, rep)`` when the call is over."""
        return self.add(DETACHED, obj)

    def get(self, ctx: int, rep: int) -> Any:
        try:
            return self._stores[ctx][rep]
        except KeyError:
            try:
                return self._stores[DETACHED][rep]
            except KeyError:
                raise WasmtimeError(f"unknown host resource handle {rep}") from None

    def take(self, ctx: int, rep: int) -> Any:
        """Remove and return the object (the guest moved its ``own`` handle to the host)."""
        with self._lock:
            obj = self._stores.get(ctx, {}).pop(rep, None)
            if obj is None:
                obj = self._stores.get(DETACHED, {}).pop(rep, None)
        if obj is None:
            raise WasmtimeError(f"unknown host resource handle {rep}")
        return obj

    def drop(self, ctx: int, rep: int) -> None:
        with self._lock:
            obj = self._stores.get(ctx, {}).pop(rep, None)
            if obj is None:
                obj = self._stores.get(DETACHED, {}).pop(rep, None)
        _close(obj)

    def claim(self, ctx: int) -> int:
        """A new Store lives at ``ctx``: a token for its ``forget``. A freed Store's address
        can be reused by a Store made on another thread *before* the freed one's ``forget``
        runs (the native free releases the GIL first); that late ``forget`` must not wipe
        the new Store's objects, so it only acts while its token is the current one."""
        token = next(self._reps)
        with self._lock:
            stale = ctx in self._owners  # a freed Store's, whose forget has not run yet
            self._owners[ctx] = token
            objs = self._stores.pop(ctx, {}) if stale else {}
        if stale:
            self._forgotten(ctx, objs)
        return token

    def forget_claimed(self, ctx: int, token: int) -> None:
        """``forget``, unless another Store claimed ``ctx`` since ``token`` was handed out."""
        with self._lock:
            if self._owners.get(ctx) != token:
                return
            del self._owners[ctx]
            objs = self._stores.pop(ctx, {})
        self._forgotten(ctx, objs)

    def forget(self, ctx: int) -> None:
        """The Store is gone: its objects go too (their ``close`` is not awaited here), and
        so does per-Store state others keep (``on_forget``)."""
        with self._lock:
            objs = self._stores.pop(ctx, {})
        self._forgotten(ctx, objs)

    def _forgotten(self, ctx: int, objs: dict[int, Any]) -> None:
        for hook in self.on_forget:
            hook(ctx)
        for obj in objs.values():
            _close(obj)

    def live(self, ctx: int) -> int:
        return len(self._stores.get(ctx, {}))


_LOG = logging.getLogger(__name__)


def _close(obj: Any) -> None:
    """Run ``obj.close()`` if it has one; an ``async def close`` is scheduled on the running
    loop (else the runtime's default provider loop). Errors are logged: cleanup must never
    break wasmtime's destructor callback or a Store's teardown."""
    close = getattr(obj, "close", None)
    if not callable(close):
        return
    try:
        out = close()
        if inspect.isawaitable(out):
            try:
                asyncio.get_running_loop().create_task(out)  # type: ignore[arg-type]
            except RuntimeError:  # a worker thread: the loop that runs provider coroutines
                from .imports import _DEFAULT_LOOP

                asyncio.run_coroutine_threadsafe(out, _DEFAULT_LOOP.get())  # type: ignore[arg-type]
    except Exception:
        _LOG.warning("closing %s failed", type(obj).__name__, exc_info=True)


DETACHED = 0
"""The table key of objects handed to a call before its Store existed (``add_detached``)."""
TABLE = ResourceTable()


def context_address(context: Any) -> int:
    return ctypes.cast(context, ctypes.c_void_p).value or 0


# -- raw host-resource calls ---------------------------------------------------------------------
# Host imports convert resource handles on every call; wasmtime-py's ResourceAny/ResourceHost
# wrappers cost several ffi round trips each (~10-25 µs a handle), and every ffi call releases
# the GIL: a hand-off to another thread whenever one waits for it (the event loop, other
# guests' host calls). These short calls never run wasm or Python, so they keep the GIL.


def _keep_gil(name: str, restype: Any, *argtypes: Any) -> Any:
    return ctypes.PYFUNCTYPE(restype, *argtypes)((name, ffi.dll))


_c = ctypes.c_void_p
_any_to_host = _keep_gil("wasmtime_component_resource_any_to_host", _c, _c, _c, _c)
_host_rep = _keep_gil("wasmtime_component_resource_host_rep", ctypes.c_uint32, _c)
_host_delete = _keep_gil("wasmtime_component_resource_host_delete", None, _c)
_host_new = _keep_gil("wasmtime_component_resource_host_new", _c, ctypes.c_bool, ctypes.c_uint32,
                      ctypes.c_uint32)
_host_to_any = _keep_gil("wasmtime_component_resource_host_to_any", _c, _c, _c, _c)
_error_delete = _keep_gil("wasmtime_error_delete", None, _c)
val_delete = _keep_gil("wasmtime_component_val_delete", None, _c)
"""``wasmtime_component_val_delete`` keeping the GIL."""


def host_rep(ctx: int, resource_any: int) -> int | None:
    """The rep of a host resource handle (a ``wasmtime_component_resource_any_t *``); ``None``
    if it is not a host resource (the caller then takes the general path)."""
    out = _c()
    err = _any_to_host(ctx, resource_any, ctypes.addressof(out))
    if err:
        _error_delete(err)
        return None
    try:
        return int(_host_rep(out.value))
    finally:
        _host_delete(out.value)


class HostHandle:
    """A new owned host handle to lower into a guest value (``lowering``): made straight
    into the Store's table by ``to_any``, without wasmtime-py's wrapper objects."""

    __slots__ = ("rep", "type_id")

    def __init__(self, rep: int, type_id: int) -> None:
        self.rep = rep
        self.type_id = type_id

    def to_any(self, ctx: int) -> int:
        """A ``wasmtime_component_resource_any_t *`` the caller owns."""
        host = _host_new(True, self.rep, self.type_id)
        out = _c()
        try:
            err = _host_to_any(ctx, host, ctypes.addressof(out))
        finally:
            _host_delete(host)
        if err:
            raise WasmtimeError._from_ptr(ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t)))
        return int(out.value or 0)


def lifting(ty: t.WitType, table: ResourceTable = TABLE) -> Mapper | None:
    """Guest → provider: handles become the provider's objects. ``None`` if nothing to do."""
    if not has_resources(ty):
        return None

    def leaf(rt: t.OwnType | t.BorrowType) -> Mapper:
        # An own handle moves to the host: its entry leaves the table (wasmtime never runs the
        # destructor for it), so a long-lived Store does not accumulate moved objects.
        find = table.take if isinstance(rt, t.OwnType) else table.get

        def to_object(ctx: int, v: Any) -> Any:
            handle = v.handle if isinstance(v, Resource) else v
            if not isinstance(handle, ResourceAny):
                raise WasmtimeError(f"expected a resource handle, got {type(v).__name__}")
            rep = host_rep(ctx, ctypes.addressof(handle.ptr().contents))
            if rep is None:  # not a host resource: let wasmtime-py say why
                rep = handle.to_host(StoreShim(ctx)).rep  # type: ignore[arg-type]
            return find(ctx, rep)
        return to_object
    return map_resources(ty, leaf)


def lowering(ty: t.WitType, ids: Mapping[str, int], table: ResourceTable = TABLE) -> Mapper | None:
    """Provider → guest: objects returned for ``own<R>`` get a new handle in the Store's table.

    ``ids`` maps the resource names the function sees to their host type ids."""
    if not has_resources(ty):
        return None

    def leaf(rt: t.OwnType | t.BorrowType) -> Mapper:
        type_id = ids.get(rt.resource)
        if type_id is None or isinstance(rt, t.BorrowType):
            raise TypeError(f"a host import cannot return {type(rt).__name__} {rt.resource}")

        def to_handle(ctx: int, obj: Any) -> Any:
            if isinstance(obj, Resource):
                return obj
            return Resource(rt.resource, HostHandle(table.add(ctx, obj), type_id), None)
        return to_handle
    return map_resources(ty, leaf)
