"""Resources that Python host imports define (a key-value ``bucket``, a blob ``container``…).

A provider returns a plain Python object where WIT says ``own<bucket>``; the guest gets a
handle, and when it passes ``borrow<bucket>`` back the provider sees the same object again.
Handles are numbered per Store: the table lives as long as the Store (``forget`` runs when
the Store is freed), and a guest dropping a handle calls the object's ``close()`` if it has
one. Conversion is driven by the WIT types, once per signature; types without resources are
passed through untouched.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import threading
from collections.abc import Callable, Mapping
from typing import Any

from wasmtime import WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import ResourceAny, ResourceHost

from ...lattice.wit import types as t
from ...lattice.wit.values import Case, Err, Ok, Resource, Some

Mapper = Callable[[int, Any], Any]


def resource_id(iface: str, name: str) -> int:
    """The host resource type id of ``name`` defined by ``iface`` (stable across linkers)."""
    return int.from_bytes(hashlib.sha256(f"{iface}/{name}".encode()).digest()[:6], "little")


class StoreShim:
    """Enough of a Storelike for wasmtime-py's resource calls inside a host callback, which
    only has the raw context pointer."""

    __slots__ = ("ptr",)

    def __init__(self, ptr: Any) -> None:
        self.ptr = ctypes.cast(ptr, ctypes.POINTER(ffi.wasmtime_context_t))

    def _context(self) -> Any:
        return self.ptr


class ResourceTable:
    """Python objects behind host resource handles, per Store (keyed by context address)."""

    def __init__(self) -> None:
        self._stores: dict[int, dict[int, Any]] = {}
        self._reps = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, ctx: int, obj: Any) -> int:
        rep = next(self._reps) & 0xFFFFFFFF or next(self._reps)
        with self._lock:
            self._stores.setdefault(ctx, {})[rep] = obj
        return rep

    def get(self, ctx: int, rep: int) -> Any:
        try:
            return self._stores[ctx][rep]
        except KeyError:
            raise WasmtimeError(f"unknown host resource handle {rep}") from None

    def drop(self, ctx: int, rep: int) -> None:
        with self._lock:
            obj = self._stores.get(ctx, {}).pop(rep, None)
        close = getattr(obj, "close", None)
        if callable(close):
            close()

    def forget(self, ctx: int) -> None:
        """The Store is gone: its objects go too (their ``close`` is not awaited here)."""
        with self._lock:
            objs = self._stores.pop(ctx, {})
        for obj in objs.values():
            close = getattr(obj, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # a provider's cleanup must not break Store teardown
                    pass

    def live(self, ctx: int) -> int:
        return len(self._stores.get(ctx, {}))


TABLE = ResourceTable()


def context_address(context: Any) -> int:
    return ctypes.cast(context, ctypes.c_void_p).value or 0


def has_resources(ty: t.WitType | None) -> bool:
    if ty is None:
        return False
    if isinstance(ty, (t.OwnType, t.BorrowType)):
        return True
    if isinstance(ty, t.ListType):
        return has_resources(ty.element)
    if isinstance(ty, t.OptionType):
        return has_resources(ty.inner)
    if isinstance(ty, t.ResultType):
        return has_resources(ty.ok) or has_resources(ty.err)
    if isinstance(ty, t.TupleType):
        return any(has_resources(e) for e in ty.elements)
    if isinstance(ty, t.RecordType):
        return any(has_resources(f) for _, f in ty.fields)
    if isinstance(ty, t.VariantType):
        return any(has_resources(c) for _, c in ty.cases)
    return False


def _walk(ty: t.WitType | None, leaf: Callable[[t.OwnType | t.BorrowType], Mapper]) -> Mapper:
    """A function rewriting the resource leaves of a value of type ``ty`` (identity elsewhere)."""
    if ty is None or not has_resources(ty):
        return lambda _ctx, v: v
    if isinstance(ty, (t.OwnType, t.BorrowType)):
        return leaf(ty)
    if isinstance(ty, t.ListType):
        el = _walk(ty.element, leaf)
        return lambda ctx, v: [el(ctx, x) for x in v]
    if isinstance(ty, t.OptionType):
        inner = _walk(ty.inner, leaf)
        nested = isinstance(ty.inner, t.OptionType)

        def option(ctx: int, v: Any) -> Any:
            if v is None:
                return None
            if nested and isinstance(v, Some):
                return Some(inner(ctx, v.value))
            return inner(ctx, v)
        return option
    if isinstance(ty, t.ResultType):
        ok, err = _walk(ty.ok, leaf), _walk(ty.err, leaf)

        def result(ctx: int, v: Any) -> Any:
            if isinstance(v, Err):
                return Err(err(ctx, v.value))
            if isinstance(v, Ok):
                return Ok(ok(ctx, v.value))
            return Ok(ok(ctx, v))  # a provider may return the ok value bare
        return result
    if isinstance(ty, t.TupleType):
        els = [_walk(e, leaf) for e in ty.elements]
        return lambda ctx, v: tuple(f(ctx, x) for f, x in zip(els, v, strict=True))
    if isinstance(ty, t.RecordType):
        fields = [(n, _walk(f, leaf)) for n, f in ty.fields]
        return lambda ctx, v: {n: f(ctx, v[n]) for n, f in fields}
    if isinstance(ty, t.VariantType):
        cases = {n: _walk(c, leaf) for n, c in ty.cases}
        return lambda ctx, v: Case(v.name, cases[v.name](ctx, v.value))
    raise TypeError(f"unexpected WIT type {ty!r}")


def lifting(ty: t.WitType, table: ResourceTable = TABLE) -> Mapper | None:
    """Guest → provider: handles become the provider's objects. ``None`` if nothing to do."""
    if not has_resources(ty):
        return None

    def leaf(_rt: t.OwnType | t.BorrowType) -> Mapper:
        def to_object(ctx: int, v: Any) -> Any:
            handle = v.handle if isinstance(v, Resource) else v
            if not isinstance(handle, ResourceAny):
                raise WasmtimeError(f"expected a resource handle, got {type(v).__name__}")
            return table.get(ctx, handle.to_host(StoreShim(ctx)).rep)  # type: ignore[arg-type]
        return to_object
    return _walk(ty, leaf)


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
            return Resource(rt.resource, ResourceHost.own(table.add(ctx, obj), type_id), None)
        return to_handle
    return _walk(ty, leaf)
