"""Fast conversion between Trellis values and wasmtime's C component values, and fast calls.

Why this exists: wasmtime-py's ``Func.__call__`` rebuilds the function type over ctypes on every
call (about 17 µs of ``params``/``result`` property reads before any work) and converts
``list<u8>`` with one ``U8.convert_to_c`` call per byte. Here every WIT type is compiled once
into closures that write and read ``wasmtime_component_val_t`` directly, in Trellis's own value
model (``trellis.lattice.wit.values``), and ``FastFunc`` calls ``wasmtime_component_func_call``
with them.

Ownership, following ``wasmtime/component/val.h`` (the C API of the pinned wasmtime 50):

* A **lowered** value owns its heap parts: strings, names, vectors, variant/option/result
  payload boxes and resource handles. ``wasmtime_component_func_call`` only *reads* its
  arguments (it converts them into Rust ``Val`` clones), so the caller deletes them afterwards,
  as ``FastFunc.call`` does. ``own<R>`` moves the ``ResourceAny`` pointer into the value (the
  Python ``ResourceAny`` is consumed, like wasmtime-py's ``_consume``; the box dies with the
  argument); ``borrow<R>`` lowers a clone, so the caller keeps its handle. As with wasmtime-py,
  an ``own`` handle already moved into an argument is lost if a later argument fails to lower.
* A **lowerer** either succeeds, leaving the target owning the value, or raises leaving the
  target's ``kind`` untouched and nothing allocated. Compound values are allocated by wasmtime
  (``*_new_uninit`` / ``valrecord_copy``) and filled in place; on failure the slots not yet
  written are reset to ``bool`` and the vector is deleted.
* **Lifting consumes** the value like wasmtime-py's ``convert_from_c``: everything is copied
  into Python, resource handles are moved into new ``ResourceAny`` objects (their slot reset to
  ``bool``), then the whole tree is freed with one ``wasmtime_component_val_delete`` and the
  value is left as ``bool``. That also suits host callbacks, whose arguments wasmtime drops
  afterwards (a ``bool`` drops to nothing). Unlike wasmtime-py this frees the heap boxes of
  variant/option/result payloads: wasmtime-py runs ``val_delete`` on a box where ``val_free``
  is needed, which leaks the box.

Bulk paths: ``list<u8>`` and lists of numbers or bools are written and read at the element
stride through a ``memoryview`` over wasmtime's element array (``PyMemoryView_FromMemory``),
one slice assignment for the kinds and one for the payloads, so no Python code runs per element.
Array types are only ever made for fixed sizes (``ctypes`` caches every ``T * n`` forever).
"""

from __future__ import annotations

import ctypes
import struct
from array import array
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from ctypes import (
    POINTER,
    addressof,
    c_bool,
    c_double,
    c_float,
    c_int8,
    c_int16,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
    string_at,
)
from typing import Any

from wasmtime import WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime._store import Storelike
from wasmtime.component import Func, ResourceAny, ResourceHost, _enter

from ...lattice.errors import WitValueError
from ...lattice.wit import types as t
from ...lattice.wit.values import Case, Err, Ok, Resource, Some
from .hostresources import HostHandle, context_address, val_delete

__all__ = [
    "AsyncCall", "FastFunc", "Lifter", "Lowerer", "make_lifter", "make_lowerer", "owns_memory",
]

#: ``lower(store, value, out)``: write ``value`` into ``out``, a ``wasmtime_component_val_t``
#: (or a pointer to one) that owns nothing. Raises ``WitValueError`` for a value of a wrong type.
Lowerer = Callable[[Storelike, Any, Any], None]
#: ``lift(val)``: the Trellis value held by ``val`` (a ``wasmtime_component_val_t``), consuming it.
Lifter = Callable[[Any], Any]


# --- C layout ----------------------------------------------------------------------------------


class _Vec(ctypes.Structure):
    _fields_ = [("size", c_size_t), ("data", c_void_p)]


class _Variant(ctypes.Structure):
    _fields_ = [("size", c_size_t), ("name", c_void_p), ("box", c_void_p)]


class _Result(ctypes.Structure):
    _fields_ = [("is_ok", c_bool), ("box", c_void_p)]


class _Of(ctypes.Union):
    _fields_ = [
        ("boolean", c_bool), ("s8", c_int8), ("u8", c_uint8), ("s16", c_int16),
        ("u16", c_uint16), ("s32", c_int32), ("u32", c_uint32), ("s64", c_int64),
        ("u64", c_uint64), ("f32", c_float), ("f64", c_double), ("character", c_uint32),
        ("vec", _Vec), ("variant", _Variant), ("result", _Result), ("ptr", c_void_p),
    ]


class _V(ctypes.Structure):
    """``wasmtime_component_val_t`` with every pointer typed ``c_void_p``: reading one yields a
    plain int, where wasmtime-py's ``POINTER`` fields need a slow ``ctypes.cast`` per read."""

    _fields_ = [("kind", c_uint8), ("of", _Of)]


def _offset(struct_type: Any, field: str) -> int:
    return int(getattr(struct_type, field).offset)


_VAL = ctypes.sizeof(_V)
_OF = _offset(_V, "of")
_ENTRY = ctypes.sizeof(ffi.wasmtime_component_valrecord_entry_t)
_ENTRY_VAL = _offset(ffi.wasmtime_component_valrecord_entry_t, "val")
_NAME = ctypes.sizeof(ffi.wasm_byte_vec_t)
_NAME_STRUCT = struct.Struct("NP")  # wasm_name_t: {size_t size; char *data}
if (
    (_VAL, _OF) != (ctypes.sizeof(ffi.wasmtime_component_val_t),
                    _offset(ffi.wasmtime_component_val_t, "of"))
    or _offset(_Variant, "box") != _offset(ffi.wasmtime_component_valvariant_t, "val")
    or _offset(_Result, "box") != _offset(ffi.wasmtime_component_valresult_t, "val")
    or ctypes.sizeof(_Vec) != ctypes.sizeof(ffi.wasmtime_component_vallist_t)
    or _NAME != _NAME_STRUCT.size
):
    raise ImportError("wasmtime-py's component value layout is not the one this module mirrors")

_BOOL, _S8, _U8, _S16, _U16, _S32, _U32, _S64, _U64, _F32, _F64, _CHAR = (
    ffi.WASMTIME_COMPONENT_BOOL.value, ffi.WASMTIME_COMPONENT_S8.value,
    ffi.WASMTIME_COMPONENT_U8.value, ffi.WASMTIME_COMPONENT_S16.value,
    ffi.WASMTIME_COMPONENT_U16.value, ffi.WASMTIME_COMPONENT_S32.value,
    ffi.WASMTIME_COMPONENT_U32.value, ffi.WASMTIME_COMPONENT_S64.value,
    ffi.WASMTIME_COMPONENT_U64.value, ffi.WASMTIME_COMPONENT_F32.value,
    ffi.WASMTIME_COMPONENT_F64.value, ffi.WASMTIME_COMPONENT_CHAR.value,
)
_STRING, _LIST, _RECORD, _TUPLE, _VARIANT, _ENUM, _OPTION, _RESULT, _FLAGS, _RESOURCE = (
    ffi.WASMTIME_COMPONENT_STRING.value, ffi.WASMTIME_COMPONENT_LIST.value,
    ffi.WASMTIME_COMPONENT_RECORD.value, ffi.WASMTIME_COMPONENT_TUPLE.value,
    ffi.WASMTIME_COMPONENT_VARIANT.value, ffi.WASMTIME_COMPONENT_ENUM.value,
    ffi.WASMTIME_COMPONENT_OPTION.value, ffi.WASMTIME_COMPONENT_RESULT.value,
    ffi.WASMTIME_COMPONENT_FLAGS.value, ffi.WASMTIME_COMPONENT_RESOURCE.value,
)


# --- raw entry points --------------------------------------------------------------------------


def _proto(name: str, restype: Any, *argtypes: Any) -> Any:
    """A private prototype taking plain addresses (``dll[name]`` is a new object each time, so
    wasmtime-py's own prototypes keep their argtypes)."""
    fn = ffi.dll[name]
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


_val_delete = _proto("wasmtime_component_val_delete", None, c_void_p)
_val_new = _proto("wasmtime_component_val_new", c_void_p, c_void_p)
_name_new = _proto("wasm_byte_vec_new", None, c_void_p, c_size_t, ctypes.c_char_p)
_list_uninit = _proto("wasmtime_component_vallist_new_uninit", None, c_void_p, c_size_t)
_list_delete = _proto("wasmtime_component_vallist_delete", None, c_void_p)
_tuple_uninit = _proto("wasmtime_component_valtuple_new_uninit", None, c_void_p, c_size_t)
_tuple_delete = _proto("wasmtime_component_valtuple_delete", None, c_void_p)
_record_copy = _proto("wasmtime_component_valrecord_copy", None, c_void_p, c_void_p)
_record_delete = _proto("wasmtime_component_valrecord_delete", None, c_void_p)
_flags_copy = _proto("wasmtime_component_valflags_copy", None, c_void_p, c_void_p)
_resource_clone = _proto("wasmtime_component_resource_any_clone", c_void_p, c_void_p)
_func_call = _proto(
    "wasmtime_component_func_call", c_void_p,
    c_void_p, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t,
)
_post_return = _proto("wasmtime_component_func_post_return", c_void_p, c_void_p, c_void_p)
# func, context, args, nargs, results, nresults, error_ret -> wasmtime_call_future_t *
_call_async = _proto(
    "wasmtime_component_func_call_async", c_void_p,
    c_void_p, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t, c_void_p,
)
_future_poll = _proto("wasmtime_call_future_poll", c_bool, c_void_p)
_future_delete = _proto("wasmtime_call_future_delete", None, c_void_p)

_memory = ctypes.pythonapi.PyMemoryView_FromMemory  # a buffer over memory we do not own
_memory.restype = ctypes.py_object
_memory.argtypes = (c_void_p, ctypes.c_ssize_t, ctypes.c_int)
_READ, _WRITE = 0x100, 0x200  # PyBUF_READ, PyBUF_WRITE

_ResourcePtr = POINTER(ffi.wasmtime_component_resource_any_t)
_ErrorPtr = POINTER(ffi.wasmtime_error_t)
_Low = Callable[[Storelike, Any, _V], None]
_Lift = Callable[[_V], Any]


def _at(addr: int) -> _V:
    return _V.from_address(addr)


def _kind_error(c: _V, ty: t.WitType) -> TypeError:
    return TypeError(f"wasmtime returned a value of kind {c.kind} for {t.type_label(ty)}")


def _abandon(c: _V, done: int, delete: Any) -> None:
    """Free a half-filled list/tuple whose first ``done`` slots were written: the rest are reset
    to ``bool`` first, so the delete never depends on what ``new_uninit`` left in them."""
    vec = c.of.vec
    if done < vec.size:
        _memory(vec.data, vec.size * _VAL, _WRITE)[done * _VAL :: _VAL] = bytes(vec.size - done)
    delete(addressof(c) + _OF)


def owns_memory(ty: t.WitType) -> bool:
    """Whether a lowered value of ``ty`` may own heap memory and so must be deleted."""
    return not isinstance(ty, t.Primitive) or ty.kind == "string"


# --- messages ----------------------------------------------------------------------------------


def _got(v: Any, number: bool = False) -> str:
    """``v`` for a message; bare when a number was expected and ``v`` is one."""
    if number and isinstance(v, (int, float)) and not isinstance(v, bool):
        return repr(v)
    r = repr(v)
    if len(r) > 60:
        r = r[:57] + "..."
    return f"{type(v).__name__} {r}"


def _title(ty: t.RecordType | t.VariantType | t.EnumType | t.FlagsType, kind: str) -> str:
    return f"{kind} {ty.name}" if ty.name else kind


# --- scalars -----------------------------------------------------------------------------------

#: WIT primitive -> (val kind, union field, ``array`` typecode for bulk lists)
_SCALARS: dict[str, tuple[int, str, str | None]] = {
    "bool": (_BOOL, "boolean", None), "s8": (_S8, "s8", "b"), "u8": (_U8, "u8", "B"),
    "s16": (_S16, "s16", "h"), "u16": (_U16, "u16", "H"), "s32": (_S32, "s32", "i"),
    "u32": (_U32, "u32", "I"), "s64": (_S64, "s64", "q"), "u64": (_U64, "u64", "Q"),
    "f32": (_F32, "f32", "f"), "f64": (_F64, "f64", "d"), "char": (_CHAR, "character", None),
}
if any(c and array(c).itemsize != getattr(_Of, f).size for _, f, c in _SCALARS.values()):
    raise ImportError("array typecodes do not match the C integer widths")


def _int_lowerer(kind: str) -> _Low:
    code, field, _ = _SCALARS[kind]
    lo, hi = t.INT_RANGES[kind]
    msg = f"expected {kind} ({lo}..{hi}), got "

    def lower(store: Storelike, v: Any, c: _V) -> None:
        if type(v) is not int:
            if not isinstance(v, int) or isinstance(v, bool):
                raise WitValueError(msg + _got(v, True))
            v = int(v)
        if v < lo or v > hi:
            raise WitValueError(msg + _got(v, True))
        setattr(c.of, field, v)
        c.kind = code

    return lower


def _float_lowerer(kind: str) -> _Low:
    code, field, _ = _SCALARS[kind]
    msg = f"expected {kind} (a float), got "

    def lower(store: Storelike, v: Any, c: _V) -> None:
        if type(v) is not float:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise WitValueError(msg + _got(v, True))
            try:
                v = float(v)
            except OverflowError:
                raise WitValueError(msg + "an int too large for a float") from None
        setattr(c.of, field, v)
        c.kind = code

    return lower


def _lower_bool(store: Storelike, v: Any, c: _V) -> None:
    if type(v) is not bool:
        raise WitValueError("expected bool, got " + _got(v))
    c.of.boolean = v
    c.kind = _BOOL


def _lower_char(store: Storelike, v: Any, c: _V) -> None:
    if not isinstance(v, str) or len(v) != 1:
        raise WitValueError("expected char (a str of one Unicode scalar value), got " + _got(v))
    o = ord(v)
    if 0xD800 <= o <= 0xDFFF:
        raise WitValueError(f"expected char, got the lone surrogate U+{o:04X}")
    c.of.character = o
    c.kind = _CHAR


def _lower_string(store: Storelike, v: Any, c: _V) -> None:
    if type(v) is not str and not isinstance(v, str):
        raise WitValueError("expected string, got " + _got(v))
    try:
        b = v.encode()
    except UnicodeEncodeError as e:
        raise WitValueError(f"string has a lone surrogate at index {e.start}") from None
    _name_new(addressof(c) + _OF, len(b), b)
    c.kind = _STRING


def _scalar_lifter(kind: str) -> _Lift:
    code, field, _ = _SCALARS[kind]
    ty = t.Primitive(kind)

    def lift(c: _V) -> Any:
        if c.kind != code:
            raise _kind_error(c, ty)
        return getattr(c.of, field)

    return lift


def _lift_char(c: _V) -> str:
    if c.kind != _CHAR:
        raise _kind_error(c, t.Primitive("char"))
    return chr(c.of.character)


def _lift_string(c: _V) -> str:
    if c.kind != _STRING:
        raise _kind_error(c, t.Primitive("string"))
    s = c.of.vec
    n = s.size
    return string_at(s.data, n).decode() if n else ""


# --- lists -------------------------------------------------------------------------------------


def _new_list(c: _V, n: int) -> int:
    """Give ``c.of`` a wasmtime-owned list of ``n`` slots; returns the address of slot 0."""
    _list_uninit(addressof(c) + _OF, n)
    data: int = c.of.vec.data
    return data


_U8_KIND = bytes((_U8,))


def _lower_bytes(store: Storelike, v: Any, c: _V) -> None:
    """``list<u8>`` in bulk: the kinds and then the bytes go in with one strided slice
    assignment each, instead of a type check and two ctypes stores per byte."""
    if type(v) is not bytes:
        if isinstance(v, memoryview):
            if v.format != "B" or v.ndim != 1:
                v = v.tobytes()
        elif not isinstance(v, (bytes, bytearray)):
            raise WitValueError("expected bytes for list<u8>, got " + _got(v))
    n = len(v)
    data = _new_list(c, n)
    if n:
        mem = _memory(data, n * _VAL, _WRITE)
        mem[::_VAL] = _U8_KIND * n
        mem[_OF::_VAL] = v
    c.kind = _LIST


def _lift_bytes(c: _V) -> bytes:
    if c.kind != _LIST:
        raise _kind_error(c, t.ListType(t.Primitive("u8")))
    vec = c.of.vec
    n = vec.size
    if not n:
        return b""
    mem = _memory(vec.data, n * _VAL, _READ)
    if mem[::_VAL].tobytes().count(_U8) != n:
        raise _kind_error(c, t.ListType(t.Primitive("u8")))
    data: bytes = mem[_OF::_VAL].tobytes()
    return data


_BULK = frozenset(("bool", "s8", "s16", "u16", "s32", "u32", "s64", "u64", "f32", "f64"))


def _bulk(ty: t.ListType) -> str | None:
    """The element kind if ``ty`` lists numbers or bools (``list<u8>`` has its own path)."""
    el = ty.element
    return el.kind if isinstance(el, t.Primitive) and el.kind in _BULK else None


def _bulk_lowerer(kind: str, generic: _Low) -> _Low:
    """``list<number>``/``list<bool>`` packed by ``array`` and written at the element stride.
    Elements of another type, or out of range, go to ``generic`` (one element at a time), which
    raises the precise error or converts what ``array`` refuses."""
    code, _, typecode = _SCALARS[kind]
    tc: Any = typecode
    kinds = bytes((code,))
    size = 1 if tc is None else array(tc).itemsize
    start, step = _OF // size, _VAL // size
    accepted = frozenset(
        {bool} if kind == "bool" else {int, float} if kind in ("f32", "f64") else {int}
    )

    def lower(store: Storelike, v: Any, c: _V) -> None:
        if not isinstance(v, (list, tuple)) or not accepted.issuperset(map(type, v)):
            return generic(store, v, c)
        payload: Any
        if tc is None:
            payload = bytes(v)
        else:
            try:
                payload = array(tc, v)
            except OverflowError:
                return generic(store, v, c)
        n = len(payload)
        data = _new_list(c, n)
        if n:
            mem = _memory(data, n * _VAL, _WRITE)
            mem[::_VAL] = kinds * n
            if tc is None:
                mem[_OF::_VAL] = payload
            else:
                mem.cast(tc)[start::step] = payload
        c.kind = _LIST

    return lower


def _bulk_lifter(kind: str) -> _Lift:
    code, _, typecode = _SCALARS[kind]
    tc: Any = typecode
    size = 1 if tc is None else array(tc).itemsize
    start, step = _OF // size, _VAL // size
    ty = t.ListType(t.Primitive(kind))

    def lift(c: _V) -> list[Any]:
        if c.kind != _LIST:
            raise _kind_error(c, ty)
        vec = c.of.vec
        n = vec.size
        if not n:
            return []
        mem = _memory(vec.data, n * _VAL, _READ)
        if mem[::_VAL].tobytes().count(code) != n:
            raise _kind_error(c, ty)
        if tc is None:
            return [b != 0 for b in mem[_OF::_VAL].tobytes()]
        values: list[Any] = mem.cast(tc)[start::step].tolist()
        return values

    return lift


def _list_lowerer(ty: t.ListType) -> _Low:
    elem = _lowerer(ty.element)
    label = t.type_label(ty)

    def lower(store: Storelike, v: Any, c: _V) -> None:
        if type(v) is not list and not isinstance(v, (list, tuple)):
            raise WitValueError(f"expected a list for {label}, got " + _got(v))
        n = len(v)
        data = _new_list(c, n)
        i = 0
        try:
            for i in range(n):
                elem(store, v[i], _at(data + i * _VAL))
        except BaseException as e:
            _abandon(c, i, _list_delete)
            if isinstance(e, WitValueError):
                raise WitValueError(f"list element {i}: {e}") from None
            raise
        c.kind = _LIST

    return lower


def _list_lifter(ty: t.ListType, owner: object) -> _Lift:
    elem = _lifter(ty.element, owner)

    def lift(c: _V) -> list[Any]:
        if c.kind != _LIST:
            raise _kind_error(c, ty)
        vec = c.of.vec
        data = vec.data
        return [elem(_at(data + i * _VAL)) for i in range(vec.size)]

    return lift


# --- records and tuples ------------------------------------------------------------------------


def _record_lowerer(ty: t.RecordType) -> _Low:
    title = _title(ty, "record")
    names = tuple(n for n, _ in ty.fields)
    lowers = tuple(_lowerer(f) for _, f in ty.fields)
    n = len(names)
    name_set = frozenset(names)
    # The field names live in Python memory; valrecord_copy clones them (with bool values) into
    # a fresh wasmtime record per call: one C call instead of one per name.
    bufs = [ctypes.create_string_buffer(k.encode(), len(k.encode())) for k in names]
    entries = (ffi.wasmtime_component_valrecord_entry_t * n)()
    for entry, buf in zip(entries, bufs, strict=True):
        entry.name.size = len(buf)
        entry.name.data = ctypes.cast(buf, POINTER(ffi.wasm_byte_t))
    template = _Vec(n, addressof(entries))
    template_addr = addressof(template)
    keep_alive = (bufs, entries, template)

    def shape_error(v: Mapping[Any, Any]) -> WitValueError:
        missing = [k for k in names if k not in v]
        if missing:
            return WitValueError(f"{title}: missing field {missing[0]}")
        extra = sorted(k if isinstance(k, str) else repr(k) for k in v if k not in name_set)
        return WitValueError(f"{title}: unexpected field {extra[0]}")

    def lower(store: Storelike, v: Any, c: _V) -> None:
        if type(v) is not dict and not isinstance(v, Mapping):
            raise WitValueError(f"expected a dict for {title}, got " + _got(v))
        if len(v) != n or not v.keys() >= name_set:
            raise shape_error(v)
        dst = addressof(c) + _OF
        _record_copy(dst, template_addr)
        data = c.of.vec.data + _ENTRY_VAL
        i = 0
        try:
            for i in range(n):
                lowers[i](store, v[names[i]], _at(data + i * _ENTRY))
        except BaseException as e:
            _record_delete(dst)  # every value slot is a bool or written: the copy made bools
            if isinstance(e, WitValueError):
                raise WitValueError(f"{title}, field {names[i]}: {e}") from None
            raise
        c.kind = _RECORD

    lower.keep_alive = keep_alive  # type: ignore[attr-defined]
    return lower


def _record_lifter(ty: t.RecordType, owner: object) -> _Lift:
    fields = tuple(
        (name, _lifter(f, owner), i * _ENTRY + _ENTRY_VAL) for i, (name, f) in enumerate(ty.fields)
    )
    count = len(fields)

    def lift(c: _V) -> dict[str, Any]:
        if c.kind != _RECORD:
            raise _kind_error(c, ty)
        vec = c.of.vec
        if vec.size != count:
            raise _kind_error(c, ty)
        data = vec.data
        return {name: f(_at(data + off)) for name, f, off in fields}

    return lift


def _tuple_lowerer(ty: t.TupleType) -> _Low:
    lowers = tuple(_lowerer(e) for e in ty.elements)
    n = len(lowers)
    label = t.type_label(ty)

    def lower(store: Storelike, v: Any, c: _V) -> None:
        if (type(v) is not tuple and not isinstance(v, (tuple, list))) or len(v) != n:
            raise WitValueError(f"expected a tuple of {n} for {label}, got " + _got(v))
        _tuple_uninit(addressof(c) + _OF, n)
        data = c.of.vec.data
        i = 0
        try:
            for i in range(n):
                lowers[i](store, v[i], _at(data + i * _VAL))
        except BaseException as e:
            _abandon(c, i, _tuple_delete)
            if isinstance(e, WitValueError):
                raise WitValueError(f"tuple element {i}: {e}") from None
            raise
        c.kind = _TUPLE

    return lower


def _tuple_lifter(ty: t.TupleType, owner: object) -> _Lift:
    elements = tuple((_lifter(e, owner), i * _VAL) for i, e in enumerate(ty.elements))
    count = len(elements)

    def lift(c: _V) -> tuple[Any, ...]:
        if c.kind != _TUPLE:
            raise _kind_error(c, ty)
        vec = c.of.vec
        if vec.size != count:
            raise _kind_error(c, ty)
        data = vec.data
        return tuple([f(_at(data + off)) for f, off in elements])

    return lift


# --- variants, enums, options, results, flags --------------------------------------------------


def _boxed(store: Storelike, low: _Low, v: Any) -> int:
    """Lower ``v`` into a new heap box (``val_new`` moves it out of the temporary)."""
    tmp = _V()
    low(store, v, tmp)
    box: int = _val_new(addressof(tmp))
    return box


def _payload(c: _V, box: int | None, ty: t.WitType) -> _V:
    if not box:
        raise _kind_error(c, ty)
    return _at(box)


def _variant_lowerer(ty: t.VariantType) -> _Low:
    title = _title(ty, "variant")
    cases = {n: (n.encode(), None if p is None else _lowerer(p)) for n, p in ty.cases}
    expected = ", ".join(cases)

    def lower(store: Storelike, v: Any, c: _V) -> None:
        if type(v) is not Case and not isinstance(v, Case):
            raise WitValueError(f"expected Case(name, value) for {title}, got " + _got(v))
        entry = cases.get(v.name) if isinstance(v.name, str) else None
        if entry is None:
            raise WitValueError(f"unknown variant case {v.name!r}; expected one of {expected}")
        name, low = entry
        if low is None:
            if v.value is not None:
                raise WitValueError(f"variant case {v.name} has no payload, got " + _got(v.value))
            box = None
        else:
            try:
                box = _boxed(store, low, v.value)
            except WitValueError as e:
                raise WitValueError(f"variant case {v.name}: {e}") from None
        _name_new(addressof(c) + _OF, len(name), name)
        c.of.variant.box = box
        c.kind = _VARIANT

    return lower


def _variant_lifter(ty: t.VariantType, owner: object) -> _Lift:
    cases = {n.encode(): (n, None if p is None else _lifter(p, owner)) for n, p in ty.cases}

    def lift(c: _V) -> Case:
        if c.kind != _VARIANT:
            raise _kind_error(c, ty)
        var = c.of.variant
        entry = cases.get(string_at(var.name, var.size))
        if entry is None:
            raise _kind_error(c, ty)
        name, f = entry
        if f is None:
            return Case(name)
        return Case(name, f(_payload(c, var.box, ty)))

    return lift


def _enum_lowerer(ty: t.EnumType) -> _Low:
    names = {n: n.encode() for n in ty.cases}
    expected = ", ".join(ty.cases)

    def lower(store: Storelike, v: Any, c: _V) -> None:
        name = names.get(v) if isinstance(v, str) else None
        if name is None:
            if not isinstance(v, str):
                what = _title(ty, "enum")
                raise WitValueError(f"expected a case name (str) for {what}, got " + _got(v))
            raise WitValueError(f"unknown enum case {v!r}; expected one of {expected}")
        _name_new(addressof(c) + _OF, len(name), name)
        c.kind = _ENUM

    return lower


def _enum_lifter(ty: t.EnumType) -> _Lift:
    names = {n.encode(): n for n in ty.cases}

    def lift(c: _V) -> str:
        if c.kind != _ENUM:
            raise _kind_error(c, ty)
        s = c.of.vec
        name: str | None = names.get(string_at(s.data, s.size))
        if name is None:
            raise _kind_error(c, ty)
        return name

    return lift


def _option_lowerer(ty: t.OptionType) -> _Low:
    low = _lowerer(ty.inner)
    nested = isinstance(ty.inner, t.OptionType)
    label = t.type_label(ty)

    def lower(store: Storelike, v: Any, c: _V) -> None:
        if v is None:
            box = None
        else:
            if type(v) is Some or isinstance(v, Some):
                v = v.value
            elif nested:  # some(none) and none must stay apart
                raise WitValueError(f"expected None or Some(value) for {label}, got " + _got(v))
            try:
                box = _boxed(store, low, v)
            except WitValueError as e:
                raise WitValueError(f"option some: {e}") from None
        c.of.ptr = box
        c.kind = _OPTION

    return lower


def _option_lifter(ty: t.OptionType, owner: object) -> _Lift:
    f = _lifter(ty.inner, owner)
    nested = isinstance(ty.inner, t.OptionType)

    def lift(c: _V) -> Any:
        if c.kind != _OPTION:
            raise _kind_error(c, ty)
        box = c.of.ptr
        if box is None:
            return None
        v = f(_at(box))
        return Some(v) if nested else v

    return lift


def _result_lowerer(ty: t.ResultType) -> _Low:
    ok = None if ty.ok is None else _lowerer(ty.ok)
    err = None if ty.err is None else _lowerer(ty.err)
    label = t.type_label(ty)

    def lower(store: Storelike, v: Any, c: _V) -> None:
        if isinstance(v, Ok):
            is_ok, low, side = True, ok, "ok"
        elif isinstance(v, Err):
            is_ok, low, side = False, err, "err"
        else:
            raise WitValueError(f"expected Ok(value) or Err(value) for {label}, got " + _got(v))
        if low is None:
            if v.value is not None:
                raise WitValueError(f"result {side} has no payload, got " + _got(v.value))
            box = None
        else:
            try:
                box = _boxed(store, low, v.value)
            except WitValueError as e:
                raise WitValueError(f"result {side}: {e}") from None
        r = c.of.result
        r.is_ok = is_ok
        r.box = box
        c.kind = _RESULT

    return lower


def _result_lifter(ty: t.ResultType, owner: object) -> _Lift:
    ok = None if ty.ok is None else _lifter(ty.ok, owner)
    err = None if ty.err is None else _lifter(ty.err, owner)

    def lift(c: _V) -> Ok | Err:
        if c.kind != _RESULT:
            raise _kind_error(c, ty)
        r = c.of.result
        if r.is_ok:
            return Ok(None if ok is None else ok(_payload(c, r.box, ty)))
        return Err(None if err is None else err(_payload(c, r.box, ty)))

    return lift


def _flags_lowerer(ty: t.FlagsType) -> _Low:
    title = _title(ty, "flags")
    index = {n: i for i, n in enumerate(ty.names)}
    expected = ", ".join(ty.names)
    # Names live in Python memory; valflags_copy clones the chosen ones into wasmtime's heap.
    bufs = [ctypes.create_string_buffer(n.encode(), len(n.encode())) for n in ty.names]
    template = (_Vec * len(bufs))(*(_Vec(len(b), addressof(b)) for b in bufs))
    Names = _Vec * len(bufs)  # one fixed array type per flags type

    def lower(store: Storelike, v: Any, c: _V) -> None:
        if not isinstance(v, (frozenset, set, AbstractSet)):
            raise WitValueError(f"expected a set of flag names for {title}, got " + _got(v))
        try:
            chosen = sorted(index[x] for x in v)
        except (KeyError, TypeError):
            bad = next(x for x in v if not isinstance(x, str) or x not in index)
            raise WitValueError(f"unknown flag {bad!r}; expected some of {expected}") from None
        sel = Names(*(template[i] for i in chosen))
        src = _Vec(len(chosen), addressof(sel))
        _flags_copy(addressof(c) + _OF, addressof(src))
        c.kind = _FLAGS

    lower.keep_alive = bufs  # type: ignore[attr-defined]
    return lower


def _flags_lifter(ty: t.FlagsType) -> _Lift:
    names = {n.encode(): n for n in ty.names}

    def lift(c: _V) -> frozenset[str]:
        if c.kind != _FLAGS:
            raise _kind_error(c, ty)
        vec = c.of.vec
        if not vec.size:
            return frozenset()
        raw = string_at(vec.data, vec.size * _NAME)
        try:
            return frozenset([names[string_at(p, n)] for n, p in _NAME_STRUCT.iter_unpack(raw)])
        except KeyError:
            raise _kind_error(c, ty) from None

    return lift


# --- resources ---------------------------------------------------------------------------------


def _resource_lowerer(ty: t.OwnType | t.BorrowType) -> _Low:
    label = t.type_label(ty)
    own = isinstance(ty, t.OwnType)

    def lower(store: Storelike, v: Any, c: _V) -> None:
        if not isinstance(v, Resource):
            raise WitValueError(f"expected a Resource handle for {label}, got " + _got(v))
        h = v.handle
        if isinstance(h, ResourceAny):
            try:
                if own:  # the handle moves into the argument, which the caller then deletes
                    c.of.ptr = addressof(h._consume().contents)
                else:  # a borrow lends a copy of the handle; the caller keeps its own
                    c.of.ptr = _resource_clone(h.ptr())
            except ValueError:
                raise WitValueError(f"the {label} handle was already moved or closed") from None
        elif type(h) is HostHandle:
            addr = getattr(store, "addr", 0) or context_address(store._context())
            c.of.ptr = h.to_any(addr)
        elif isinstance(h, ResourceHost):
            c.of.ptr = addressof(h.to_any(store)._consume().contents)
        else:
            raise WitValueError(f"{label}: Resource.handle is not a wasmtime resource: {h!r}")
        c.kind = _RESOURCE

    return lower


def _resource_lifter(ty: t.OwnType | t.BorrowType, owner: object) -> _Lift:
    name = ty.resource

    def lift(c: _V) -> Resource:
        if c.kind != _RESOURCE or not c.of.ptr:
            raise _kind_error(c, ty)
        handle = ResourceAny._from_ptr(ctypes.cast(c.of.ptr, _ResourcePtr))
        c.kind = _BOOL  # the ResourceAny owns the box now; the tree delete must skip it
        return Resource(name, handle, owner)

    return lift


def resource_arg(c: Any) -> int:
    """The ``wasmtime_component_resource_any_t *`` a resource value holds (0 if it holds none),
    for a caller that consumes it at once (``imports._Callback``: then ``release_arg``)."""
    v = _as_val(c)
    return int(v.of.ptr or 0) if v.kind == _RESOURCE else 0


def release_arg(c: Any) -> None:
    """Free a value read with ``resource_arg`` (the GIL stays held: a short C call)."""
    v = _as_val(c)
    val_delete(addressof(v))
    v.kind = _BOOL


# --- compilation -------------------------------------------------------------------------------


def _lowerer(ty: t.WitType) -> _Low:
    if isinstance(ty, t.Primitive):
        k = ty.kind
        if k == "string":
            return _lower_string
        if k == "bool":
            return _lower_bool
        if k == "char":
            return _lower_char
        return _float_lowerer(k) if k in ("f32", "f64") else _int_lowerer(k)
    if isinstance(ty, t.ListType):
        if t.u8_list(ty):
            return _lower_bytes
        bulk = _bulk(ty)
        return _list_lowerer(ty) if bulk is None else _bulk_lowerer(bulk, _list_lowerer(ty))
    if isinstance(ty, t.RecordType):
        return _record_lowerer(ty)
    if isinstance(ty, t.TupleType):
        return _tuple_lowerer(ty)
    if isinstance(ty, t.VariantType):
        return _variant_lowerer(ty)
    if isinstance(ty, t.EnumType):
        return _enum_lowerer(ty)
    if isinstance(ty, t.OptionType):
        return _option_lowerer(ty)
    if isinstance(ty, t.ResultType):
        return _result_lowerer(ty)
    if isinstance(ty, t.FlagsType):
        return _flags_lowerer(ty)
    if isinstance(ty, (t.OwnType, t.BorrowType)):
        return _resource_lowerer(ty)
    raise TypeError(f"not a WIT type: {ty!r}")


def _lifter(ty: t.WitType, owner: object) -> _Lift:
    """Reads a value in place; takes only the resource handles (see ``make_lifter``)."""
    if isinstance(ty, t.Primitive):
        k = ty.kind
        if k == "string":
            return _lift_string
        return _lift_char if k == "char" else _scalar_lifter(k)
    if isinstance(ty, t.ListType):
        if t.u8_list(ty):
            return _lift_bytes
        bulk = _bulk(ty)
        return _list_lifter(ty, owner) if bulk is None else _bulk_lifter(bulk)
    if isinstance(ty, t.RecordType):
        return _record_lifter(ty, owner)
    if isinstance(ty, t.TupleType):
        return _tuple_lifter(ty, owner)
    if isinstance(ty, t.VariantType):
        return _variant_lifter(ty, owner)
    if isinstance(ty, t.EnumType):
        return _enum_lifter(ty)
    if isinstance(ty, t.OptionType):
        return _option_lifter(ty, owner)
    if isinstance(ty, t.ResultType):
        return _result_lifter(ty, owner)
    if isinstance(ty, t.FlagsType):
        return _flags_lifter(ty)
    if isinstance(ty, (t.OwnType, t.BorrowType)):
        return _resource_lifter(ty, owner)
    raise TypeError(f"not a WIT type: {ty!r}")


def _as_val(c: Any) -> _V:
    if type(c) is _V:
        return c
    if isinstance(c, ctypes._Pointer):  # no public name for the pointer base class
        return _at(addressof(c.contents))
    return _at(addressof(c))


def make_lowerer(ty: t.WitType) -> Lowerer:
    """Compile ``ty`` into ``lower(store, value, out)``, the fast ``ValType.convert_to_c``.

    ``out`` (a ``wasmtime_component_val_t`` or a pointer to one) must own nothing; afterwards it
    owns the value, to be deleted with ``wasmtime_component_val_delete`` unless something takes
    it over. Errors are ``WitValueError``s like ``expected u8 (0..255), got 300``; the caller
    prefixes the parameter name."""
    low = _lowerer(ty)

    def lower(store: Storelike, value: Any, out: Any) -> None:
        low(store, value, _as_val(out))

    return lower


def make_lifter(ty: t.WitType, owner: object = None) -> Lifter:
    """Compile ``ty`` into ``lift(val)``, the fast ``ValType.convert_from_c``; ``val`` is consumed
    (left a ``bool``). Resource handles come back as ``Resource(name, ResourceAny, owner)``."""
    read = _lifter(ty, owner)
    if not owns_memory(ty):
        return lambda c: read(_as_val(c))

    def lift(c: Any) -> Any:
        v = _as_val(c)
        try:
            return read(v)
        finally:
            _val_delete(addressof(v))
            v.kind = _BOOL

    return lift


# --- calls -------------------------------------------------------------------------------------


def _call_error(ptr: int) -> BaseException:
    """The exception for an error returned by a call, exactly as ``Func.__call__`` raises it: a
    Python exception raised by a host import wins over the ``WasmtimeError`` that carried it."""
    error = WasmtimeError._from_ptr(ctypes.cast(ptr, _ErrorPtr))
    try:
        _enter.maybe_raise_last_exn()
    except BaseException as host_exc:
        return host_exc
    return error


class FastFunc:
    """A component function with its conversions compiled once.

    ``call`` lowers the arguments straight into a ``wasmtime_component_val_t`` array and calls
    ``wasmtime_component_func_call``: no per-call type introspection, no wasmtime-py value
    classes. ``owner`` is put in every ``Resource`` the function returns."""

    __slots__ = (
        "func", "type", "_arity", "_names", "_lowers", "_owning", "_lift", "_slots", "_aslots",
        "_addr",
    )

    def __init__(self, func: Func, ty: t.FuncType, owner: object = None) -> None:
        self.func = func
        self.type = ty
        self._arity = len(ty.params)
        self._names = tuple(n for n, _ in ty.params)
        self._lowers = tuple(_lowerer(p) for _, p in ty.params)
        self._owning = tuple(i for i, (_, p) in enumerate(ty.params) if owns_memory(p))
        self._lift = None if ty.result is None else make_lifter(ty.result, owner)
        # params, then the result slot. A fresh zeroed (all bool) array per call keeps
        # re-entrant calls (through host imports) and calls from several threads apart.
        self._slots = _V * (self._arity + (ty.result is not None))
        self._aslots = _V * (self._arity + (ty.result is not None) + 1)  # + the error out-slot
        self._addr = addressof(func._func)  # stable: self.func keeps the struct alive

    @classmethod
    def of(cls, store: Storelike, func: Func, name: str = "", owner: object = None) -> FastFunc:
        """Wrap ``func`` with the type wasmtime reports (resources are then named ``resource``)."""
        from .introspect import func_type

        return cls(func, func_type(name, func.type(store)), owner)

    def call(self, store: Storelike, args: Sequence[Any]) -> Any:
        """Call with ``args`` as Trellis values; returns the result (``None`` if there is none).

        A bad argument raises ``WitValueError`` (prefixed ``parameter <name>: ``), a wrong
        number of them too; a failed call raises its ``WasmtimeError`` (or the exception a host
        import raised) unchanged."""
        n = self._arity
        if len(args) != n:
            name = self.type.name or "function"
            raise WitValueError(
                f"{name} takes {n} argument{'' if n == 1 else 's'}, got {len(args)}"
            )
        lowers = self._lowers
        slots = self._slots()
        base = addressof(slots)
        lift = self._lift
        i = 0
        try:
            for i in range(n):
                lowers[i](store, args[i], slots[i])
            i = n
            err = _func_call(
                self._addr, store._context(), base, n,
                None if lift is None else base + n * _VAL, 0 if lift is None else 1,
            )
        except WitValueError as e:
            raise WitValueError(f"parameter {self._names[i]}: {e}") from None
        finally:
            for j in self._owning:  # the call only read the arguments; they are still ours
                if j < i:
                    _val_delete(base + j * _VAL)
        if err:
            raise _call_error(err)
        return None if lift is None else lift(slots[n])

    def call_async(self, store: Storelike, args: Sequence[Any]) -> AsyncCall:
        """Start the call with ``wasmtime_component_func_call_async``; nothing runs until the
        returned ``AsyncCall`` is polled. Argument errors are raised as by ``call``."""
        return AsyncCall(self, store, args)

    def post_return(self, store: Storelike) -> None:
        """API parity only: since wasmtime 43 ``func_call`` runs the guest's post-return itself
        and ``wasmtime_component_func_post_return`` is a deprecated no-op."""
        err = _post_return(self._addr, store._context())
        if err:
            raise _call_error(err)


class AsyncCall:
    """One call in flight through ``wasmtime_component_func_call_async``.

    Each ``poll`` runs the guest until it finishes or the store's epoch-deadline callback asks
    it to yield; it may be polled from any thread, one at a time. The future borrows the
    function, the store and the argument/result/error array, so this object keeps all three
    alive, and ``close`` must run (deleting the future) before the store may be dropped: a store
    freed under a suspended future, or a ``Func`` freed under a live one, crashes the process.

    Layout of the one array: arguments ``[0, n)``, the result (if any), then one spare value
    whose first 8 bytes are the ``wasmtime_error_t *`` out-slot."""

    __slots__ = ("ff", "store", "slots", "future", "_base", "_result")

    def __init__(self, ff: FastFunc, store: Storelike, args: Sequence[Any]) -> None:
        n = ff._arity
        if len(args) != n:
            name = ff.type.name or "function"
            raise WitValueError(
                f"{name} takes {n} argument{'' if n == 1 else 's'}, got {len(args)}"
            )
        self.ff = ff
        self.store = store
        self.future = 0
        slots = self.slots = ff._aslots()
        base = self._base = addressof(slots)
        lowers = ff._lowers
        has_result = ff._lift is not None
        self._result = base + n * _VAL if has_result else 0
        i = 0
        try:
            for i in range(n):
                lowers[i](store, args[i], slots[i])
            i = n
            future = _call_async(
                ff._addr, store._context(), base, n,
                self._result or None, 1 if has_result else 0,
                base + (n + has_result) * _VAL,
            )
        except WitValueError as e:
            raise WitValueError(f"parameter {ff._names[i]}: {e}") from None
        finally:
            if i < n:  # a lowering failed: free what was lowered, nothing was started
                for j in ff._owning:
                    if j < i:
                        _val_delete(base + j * _VAL)
        if not future:
            self._free_args()
            raise WasmtimeError("wasmtime_component_func_call_async returned no future")
        self.future = future

    def poll(self) -> bool:
        """Run the guest until it yields (``False``) or the call is over (``True``)."""
        done: bool = _future_poll(self.future)
        return done

    def close(self) -> None:
        """Delete the future (finished or abandoned), then free the lowered arguments and a
        result nobody lifted (a lifted one is already a ``bool`` or a plain number)."""
        future = self.future
        if future:
            self.future = 0
            _future_delete(future)
            self._free_args()
            if self._result:
                _val_delete(self._result)

    def _free_args(self) -> None:
        base = self._base
        for j in self.ff._owning:
            _val_delete(base + j * _VAL)

    def result(self) -> Any:
        """The finished call's result, raising its error as ``FastFunc.call`` does. Call it on
        the thread that ran the last poll: host-import exceptions are kept per thread."""
        ff = self.ff
        err = c_void_p.from_address(self._base + (ff._arity + (ff._lift is not None)) * _VAL)
        ptr = err.value
        if ptr:
            err.value = None
            raise _call_error(ptr)
        lift = ff._lift
        return None if lift is None else lift(self.slots[ff._arity])
