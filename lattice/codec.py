"""Component values ⇄ bytes for cross-host calls: the WIT-typed binary value encoding.

Both ends of a call know the function's WIT types, so the wire carries no type tags, names or
framing beyond lengths and discriminants, in the spirit of the Component Model's canonical ABI.
The byte-level spec (for providers written in other languages) is ``docs/value-encoding.md``;
in short: scalars are fixed-width little-endian, lengths, counts and case indices are ULEB128,
aggregates are their parts in order. ``bench/codec.py`` holds the measurements behind the
choices (fixed-width integers over LEB128, this format over JSON).

Every type is compiled once (and cached) into (de)coders specialised for it, so encoding and
decoding do no type dispatch per value: closures for most types, straight-line generated code
for records and tuples (runs of adjacent numeric fields packed by one ``struct`` call), and one
``array`` call for a whole list of numbers or bools.

Decoding treats its input as hostile (it comes off the network): every length and count is
checked against the bytes left before anything is allocated, every discriminant, bool, char,
flag bit and UTF-8 sequence is validated, and every failure is a ``WitValueError`` naming the
type and the byte offset. The encoding is canonical: a value has exactly one encoding (NaN bit
patterns aside) and the decoder rejects every other byte string.

The format carries no version byte: the message around it (the invocation's headers) names it,
as ``ENCODING``. Resource handles never cross hosts; a type that contains one is refused.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from trellis.lattice.errors import WitValueError
from trellis.lattice.wit.types import (
    INT_RANGES,
    BorrowType,
    EnumType,
    FlagsType,
    ListType,
    OptionType,
    OwnType,
    Primitive,
    RecordType,
    ResultType,
    TupleType,
    VariantType,
    WitType,
    type_label,
    u8_list,
)
from trellis.lattice.wit.values import Case, Err, Ok, Some

__all__ = [
    "ENCODING",
    "ArgsCodec",
    "Codec",
    "args_codec",
    "codec",
    "decode",
    "decode_args",
    "decode_result",
    "encode",
    "encode_args",
    "encode_result",
]

ENCODING = "trellis-wit/1"
"""The name and version of this format, for the invocation header that announces a payload."""

MAX_LENGTH = 2**32 - 1
"""Largest length or count (as in the canonical ABI); a ULEB128 is thus at most 5 bytes."""

Buffer = bytes | bytearray | memoryview
_Put = Callable[[bytes], None]  # appends one piece of output
_Enc = Callable[[_Put, Any], None]
_Dec = Callable[[Any, int], tuple[Any, int]]  # (data, offset) -> (value, offset after it)

_B1 = tuple(bytes((i,)) for i in range(256))
_NONE, _SOME = b"\x00", b"\x01"
_BIG_ENDIAN = sys.byteorder == "big"

# Fixed-width scalars: WIT kind -> struct code (little-endian). Also the ``array`` typecodes.
_CODES = {
    "s8": "b", "u8": "B", "s16": "h", "u16": "H", "s32": "i", "u32": "I",
    "s64": "q", "u64": "Q", "f32": "f", "f64": "d",
}
_NUMERIC_TYPES = {k: (float, int) if k in ("f32", "f64") else (int,) for k in _CODES}
_U32 = struct.Struct("<I")
_FLOATS = (Primitive("f32"), Primitive("f64"))
if any(array(c).itemsize != struct.calcsize("<" + c) for c in _CODES.values()):
    raise ImportError("array typecodes do not match the WIT integer widths on this platform")


# ---------------------------------------------------------------------------------- messages


def _got(v: Any, number: bool = False) -> str:
    """``v`` for a message; bare when a number was expected and ``v`` is one."""
    if number and isinstance(v, (int, float)) and not isinstance(v, bool):
        return repr(v)
    r = repr(v)
    return f"{type(v).__name__} {r if len(r) <= 60 else r[:57] + '...'}"


def _label(ty: WitType) -> str:
    """The type's WIT spelling, shortened: anonymous records can be long."""
    s: str = type_label(ty)
    return s if len(s) <= 80 else s[:77] + "..."


def _title(ty: RecordType | VariantType | EnumType | FlagsType, kind: str) -> str:
    return f"{kind} {ty.name}" if ty.name else kind


def _bad(what: str, pos: int, why: str) -> WitValueError:
    return WitValueError(f"{what} at offset {pos}: {why}")


def _short(what: str, pos: int, need: int, data: Any) -> WitValueError:
    left = max(0, len(data) - pos)
    return _bad(what, pos, f"truncated: needs {need} byte(s), {left} left")


# ------------------------------------------------------------------------------------ ULEB128


def _uleb(n: int) -> bytes:
    """The ULEB128 of a length, count or case index."""
    if n < 0x80:
        return _B1[n]
    if n > MAX_LENGTH:
        raise WitValueError(f"length {n} exceeds the limit of {MAX_LENGTH}")
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_uleb(data: Any, pos: int, what: str) -> tuple[int, int]:
    """A ULEB128 at ``pos``; the callers inline the one-byte case and come here for the rest.
    Overlong encodings and values past ``MAX_LENGTH`` are refused, so the encoding stays
    canonical and a forged length cannot reach the allocator."""
    start, n, shift = pos, 0, 0
    while True:
        try:
            b = data[pos]
        except IndexError:
            raise _short(what, start, pos - start + 1, data) from None
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 28:
            raise _bad(what, start, "ULEB128 longer than 5 bytes")
    if b == 0 and pos - start > 1:
        raise _bad(what, start, "overlong ULEB128 (ends in a zero byte)")
    if n > MAX_LENGTH:
        raise _bad(what, start, f"ULEB128 value {n} exceeds {MAX_LENGTH}")
    return n, pos


# ------------------------------------------------------------------------- type requirements


def _check_portable(ty: WitType, top: WitType) -> None:
    """Refuse what cannot be encoded, once, at compile time: resource handles (meaningless on
    another host) and the empty aggregates WIT itself forbids (they would encode as nothing,
    so a forged count of them could not be bounded by the message size)."""
    if isinstance(ty, (OwnType, BorrowType)):
        handle = f"own<{ty.resource}>" if isinstance(ty, OwnType) else f"borrow<{ty.resource}>"
        where = "" if ty is top else f" (inside {_label(top)})"
        raise WitValueError(
            f"resources cannot cross hosts: {handle}{where} is a handle valid only in the "
            "instance that made it; keep such calls on one host or pass the data instead"
        )
    if (
        (isinstance(ty, RecordType) and not ty.fields)
        or (isinstance(ty, TupleType) and not ty.elements)
        or (isinstance(ty, (VariantType, EnumType)) and not ty.cases)
        or (isinstance(ty, FlagsType) and not ty.names)
    ):
        raise WitValueError(f"cannot encode {_label(ty)}: WIT does not allow it to be empty")
    for child in _children(ty):
        _check_portable(child, top)


def _children(ty: WitType) -> tuple[WitType, ...]:
    if isinstance(ty, ListType):
        return (ty.element,)
    if isinstance(ty, OptionType):
        return (ty.inner,)
    if isinstance(ty, RecordType):
        return tuple(t for _, t in ty.fields)
    if isinstance(ty, TupleType):
        return tuple(ty.elements)
    if isinstance(ty, VariantType):
        return tuple(t for _, t in ty.cases if t is not None)
    if isinstance(ty, ResultType):
        return tuple(t for t in (ty.ok, ty.err) if t is not None)
    return ()


def _min_size(ty: WitType) -> int:
    """The fewest bytes a value of ``ty`` encodes to (at least 1 for every allowed type); a list
    count is checked against the bytes left divided by this before anything is allocated."""
    if isinstance(ty, Primitive):
        return 1 if ty.kind in ("bool", "string") else (4 if ty.kind == "char" else _width(ty))
    if isinstance(ty, RecordType):
        return sum(_min_size(t) for _, t in ty.fields)
    if isinstance(ty, TupleType):
        return sum(_min_size(t) for t in ty.elements)
    if isinstance(ty, VariantType):
        return 1 + min(0 if t is None else _min_size(t) for _, t in ty.cases)
    if isinstance(ty, FlagsType):
        return (len(ty.names) + 7) // 8
    return 1  # list (count), enum (index), option and result (discriminant)


def _width(ty: WitType) -> int:
    """Bytes of a fixed-width numeric type (0 for anything else)."""
    if isinstance(ty, Primitive) and ty.kind in _CODES:
        return struct.calcsize("<" + _CODES[ty.kind])
    return 0


# ---------------------------------------------------------------------------------- scalars


def _int_enc(kind: str) -> _Enc:
    pack = struct.Struct("<" + _CODES[kind]).pack
    lo, hi = INT_RANGES[kind]
    msg = f"expected {kind} ({lo}..{hi}), got "

    def enc(put: _Put, v: Any) -> None:
        if type(v) is not int:
            if not isinstance(v, int) or isinstance(v, bool):
                raise WitValueError(msg + _got(v, True))
            v = int(v)
        try:
            put(pack(v))
        except struct.error:
            raise WitValueError(msg + _got(v, True)) from None

    return enc


def _float_enc(kind: str) -> _Enc:
    pack = struct.Struct("<" + _CODES[kind]).pack
    msg = f"expected {kind} (a float), got "

    def enc(put: _Put, v: Any) -> None:
        if type(v) is not float:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise WitValueError(msg + _got(v, True))
            try:
                v = float(v)
            except OverflowError:
                raise WitValueError(msg + "an int too large for a float") from None
        try:
            put(pack(v))
        except OverflowError:  # f32 only: past the f32 range rounds to infinity, as IEEE does
            put(pack(math.copysign(math.inf, v)))

    return enc


def _enc_bool(put: _Put, v: Any) -> None:
    if v is True:
        put(b"\x01")
    elif v is False:
        put(b"\x00")
    else:
        raise WitValueError("expected bool, got " + _got(v))


def _enc_char(put: _Put, v: Any) -> None:
    if not isinstance(v, str) or len(v) != 1:
        raise WitValueError("expected char (a str of one Unicode scalar value), got " + _got(v))
    o = ord(v)
    if 0xD800 <= o <= 0xDFFF:
        raise WitValueError(f"expected char, got the lone surrogate U+{o:04X}")
    put(_U32.pack(o))


def _enc_string(put: _Put, v: Any) -> None:
    if type(v) is not str and not isinstance(v, str):
        raise WitValueError("expected string, got " + _got(v))
    try:
        b = v.encode()
    except UnicodeEncodeError as e:
        raise WitValueError(f"string has a lone surrogate at index {e.start}") from None
    n = len(b)
    put(_B1[n] if n < 0x80 else _uleb(n))
    put(b)


def _enc_bytes(put: _Put, v: Any) -> None:
    if type(v) is not bytes:
        if isinstance(v, memoryview):
            if v.format != "B" or v.ndim != 1 or not v.c_contiguous:
                v = v.tobytes()
        elif not isinstance(v, (bytes, bytearray)):
            raise WitValueError("expected bytes for list<u8>, got " + _got(v))
    n = len(v)
    put(_B1[n] if n < 0x80 else _uleb(n))
    put(v)


def _fixed_dec(kind: str) -> _Dec:
    st = struct.Struct("<" + _CODES[kind])
    unpack, size = st.unpack_from, st.size

    def dec(data: Any, pos: int) -> tuple[Any, int]:
        try:
            return unpack(data, pos)[0], pos + size
        except struct.error:
            raise _short(kind, pos, size, data) from None

    return dec


def _dec_bool(data: Any, pos: int) -> tuple[bool, int]:
    try:
        b = data[pos]
    except IndexError:
        raise _short("bool", pos, 1, data) from None
    if b > 1:
        raise _bad("bool", pos, f"byte {b:#04x} is neither 0 nor 1")
    return b == 1, pos + 1


def _dec_char(data: Any, pos: int) -> tuple[str, int]:
    try:
        o = _U32.unpack_from(data, pos)[0]
    except struct.error:
        raise _short("char", pos, 4, data) from None
    if o > 0x10FFFF or 0xD800 <= o <= 0xDFFF:
        raise _bad("char", pos, f"{o:#x} is not a Unicode scalar value")
    return chr(o), pos + 4


def _span(data: Any, pos: int, what: str, unit: int = 0) -> tuple[int, int, int]:
    """Read a byte length (``unit`` 0) or an element count (elements of at least ``unit``
    bytes) at ``pos``; returns it with where its payload starts and where it ends at the
    least, having checked that those bytes are really there."""
    try:
        n = data[pos]
    except IndexError:
        raise _short(what, pos, 1, data) from None
    start = pos + 1
    if n >= 0x80:
        n, start = _read_uleb(data, pos, what)
    end = start + n * (unit or 1)
    if end > len(data):
        left = len(data) - start
        if unit:
            why = f"count {n} needs at least {n * unit} byte(s), only {left} left"
        else:
            why = f"length {n} exceeds the {left} byte(s) left"
        raise _bad(what, pos, why)
    return n, start, end


def _string_dec(view: bool) -> _Dec:
    """Strict UTF-8 (no surrogates, no overlong forms). ``view`` decoders read a memoryview.
    The one-byte length is read inline: strings are the commonest field."""

    def dec(data: Any, pos: int) -> tuple[str, int]:
        try:
            n = data[pos]
        except IndexError:
            raise _short("string", pos, 1, data) from None
        if n < 0x80:
            start, end = pos + 1, pos + 1 + n
            if end > len(data):
                left = len(data) - start
                raise _bad("string", pos, f"length {n} exceeds the {left} byte(s) left")
        else:
            _, start, end = _span(data, pos, "string")
        try:
            return (str(data[start:end], "utf-8") if view else data[start:end].decode()), end
        except UnicodeDecodeError as e:
            raise _bad("string", pos, f"invalid UTF-8 at byte {start + e.start}") from None

    return dec


def _bytes_dec(view: bool) -> _Dec:
    """``bytes``, or with ``view`` a read-only slice of the input: no copy at all."""

    def dec(data: Any, pos: int) -> tuple[Any, int]:
        _, start, end = _span(data, pos, "list<u8>")
        return (data[start:end] if view else bytes(data[start:end])), end

    return dec


# ------------------------------------------------------------------------------------ lists


def _list_enc(ty: ListType) -> _Enc:
    elem = _encoder(ty.element)
    label = _label(ty)

    def enc(put: _Put, v: Any) -> None:
        if type(v) is not list and not isinstance(v, (list, tuple)):
            raise WitValueError(f"expected a list for {label}, got " + _got(v))
        n = len(v)
        put(_B1[n] if n < 0x80 else _uleb(n))
        i = 0
        try:
            for i, x in enumerate(v):  # noqa: B007 - i names the element that fails
                elem(put, x)
        except WitValueError as e:
            raise WitValueError(f"list element {i}: {e}") from None

    return enc


def _bulk_enc(ty: ListType, kind: str) -> _Enc:
    """Lists of numbers or bools in one C call; anything ``array`` refuses (a bool for an int,
    a value out of range) goes through the element-wise encoder for the precise error."""
    generic = _list_enc(ty)
    accepted = frozenset((bool,) if kind == "bool" else _NUMERIC_TYPES[kind])
    code = _CODES.get(kind, "")

    def enc(put: _Put, v: Any) -> None:
        if (type(v) is list or isinstance(v, (list, tuple))) and accepted.issuperset(map(type, v)):
            n = len(v)
            if kind == "bool":
                put(_B1[n] if n < 0x80 else _uleb(n))
                put(bytes(v))
                return
            try:
                packed = array(code, v)
            except OverflowError:
                pass
            else:
                if _BIG_ENDIAN:
                    packed.byteswap()
                put(_B1[n] if n < 0x80 else _uleb(n))
                put(packed)  # type: ignore[arg-type]  # join takes any buffer: no copy here
                return
        generic(put, v)

    return enc


def _list_dec(ty: ListType, view: bool) -> _Dec:
    elem = _decoder(ty.element, view)
    label, unit = _label(ty), _min_size(ty.element)

    def dec(data: Any, pos: int) -> tuple[list[Any], int]:
        try:
            n = data[pos]
        except IndexError:
            raise _short(label, pos, 1, data) from None
        p = pos + 1
        if n >= 0x80 or p + n * unit > len(data):  # the common case is checked inline
            n, p, _ = _span(data, pos, label, unit)
        out: list[Any] = []
        append = out.append
        try:
            for _ in range(n):
                x, p = elem(data, p)
                append(x)
        except WitValueError as e:
            raise WitValueError(f"list element {len(out)}: {e}") from None
        return out, p

    return dec


def _bulk_dec(ty: ListType, kind: str) -> _Dec:
    label = _label(ty)
    code = _CODES.get(kind, "B")
    unit = array(code).itemsize

    def dec(data: Any, pos: int) -> tuple[list[Any], int]:
        _, start, end = _span(data, pos, label, unit)
        raw = bytes(data[start:end])
        if kind == "bool":
            if raw.translate(None, b"\x00\x01"):
                bad = next(i for i, b in enumerate(raw) if b > 1)
                raise _bad("bool", start + bad, f"byte {raw[bad]:#04x} is neither 0 nor 1")
            return list(map(bool, raw)), end
        values = array(code, raw)
        if _BIG_ENDIAN:
            values.byteswap()
        return values.tolist(), end

    return dec


def _bulk_kind(ty: ListType) -> str | None:
    el = ty.element
    if isinstance(el, Primitive) and (el.kind in _CODES or el.kind == "bool"):
        kind: str = el.kind
        return kind
    return None


# --------------------------------------------------------------------- records and tuples
# Records and tuples are the glue of every payload, so their hot paths are generated as Python
# source once per type (as ``dataclasses`` does): straight-line code without loops or per-field
# dispatch, records built as dict displays, and runs of adjacent numeric fields (un)packed by
# one ``struct`` call. Only the glue is generated: each field's own (de)coder is a compiled
# closure bound by a generated identifier, and field names appear only as ``repr`` literals.
# The one bookkeeping kept for messages is ``at``, the field being worked on.
#
# Packing a run needs the exact Python types (struct would take a bool for an int and refuse an
# int for a float); other types, or struct's range error, go through the fields' own encoders,
# which accept what the value model allows and word the error.


def _groups(types: Sequence[WitType]) -> list[tuple[int, int]]:
    """``[start, stop)`` index ranges: runs of numeric types, and single other types."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(types):
        j = i + 1
        if _width(types[i]):
            while j < len(types) and _width(types[j]):
                j += 1
        out.append((i, j))
        i = j
    return out


def _run_struct(types: Sequence[WitType]) -> struct.Struct:
    return struct.Struct("<" + "".join(_CODES[t.kind] for t in types if isinstance(t, Primitive)))


def _generate(lines: list[str], env: dict[str, Any]) -> Any:
    """Compile the generated function ``fn`` in ``env`` (which holds everything it calls)."""
    env.update(WitValueError=WitValueError, StructError=struct.error, int=int, float=float)
    exec("\n".join(lines), env)
    return env["fn"]


def _enc_body(
    types: Sequence[WitType], encs: Sequence[_Enc], item: Callable[[int], str], env: dict[str, Any]
) -> list[str]:
    """Statements writing every element of ``v`` with ``encs``; ``item(i)`` is the source that
    reads element i."""
    lines: list[str] = []
    env.update((f"e{k}", enc) for k, enc in enumerate(encs))
    for i, j in _groups(types):
        lines.append(f"        at = {i}")
        if j - i == 1:
            lines.append(f"        e{i}(put, {item(i)})")
            continue
        xs = [f"x{k}" for k in range(i, j)]
        env[f"p{i}"] = _run_struct(types[i:j]).pack
        exact = " and ".join(
            f"type(x{k}) is {'float' if types[k] in _FLOATS else 'int'}" for k in range(i, j)
        )
        slow = "; ".join(f"at = {k}; e{k}(put, x{k})" for k in range(i, j))
        lines += [
            f"        {', '.join(xs)} = {', '.join(item(k) for k in range(i, j))}",
            f"        if {exact}:",
            "            try:",
            f"                put(p{i}({', '.join(xs)}))",
            "            except (StructError, OverflowError):",
            f"                {slow}",
            "        else:",
            f"            {slow}",
        ]
    return lines


def _dec_body(types: Sequence[WitType], decs: Sequence[_Dec], env: dict[str, Any]) -> list[str]:
    """Statements reading every element into ``f0`` … ``fn`` and advancing ``pos``."""
    lines: list[str] = []
    for i, j in _groups(types):
        lines.append(f"        at = {i}")
        if _width(types[i]):
            run = _run_struct(types[i:j])
            env[f"u{i}"] = run.unpack_from
            targets = "".join(f"f{k}, " for k in range(i, j))
            lines += [f"        {targets}= u{i}(data, pos)", f"        pos += {run.size}"]
        else:
            env[f"d{i}"] = decs[i]
            lines.append(f"        f{i}, pos = d{i}(data, pos)")
    return lines


def _cut(
    types: Sequence[WitType], where: Sequence[str]
) -> Callable[[Any, int, int], WitValueError]:
    """``cut(data, pos, at)``: the error for a numeric run, starting at element ``at`` and
    offset ``pos``, that the data ends inside of, naming the element it ends in."""

    def cut(data: Any, pos: int, at: int) -> WitValueError:
        start = pos
        for k in range(at, len(types)):
            ty = types[k]
            size = _width(ty)
            if pos + size > len(data) and isinstance(ty, Primitive):
                return WitValueError(f"{where[k]}: {_short(ty.kind, pos, size, data)}")
            pos += size
        return _bad(where[at], start, "truncated")  # not reached: the run did not fit

    return cut


def _record_enc(ty: RecordType) -> _Enc:
    names = tuple(n for n, _ in ty.fields)
    types = [t for _, t in ty.fields]
    name_set = frozenset(names)
    title = _title(ty, "record")

    def shape(v: Any) -> WitValueError:
        if type(v) is not dict and not isinstance(v, Mapping):
            return WitValueError(f"expected a dict for {title}, got " + _got(v))
        if missing := [k for k in names if k not in v]:
            return WitValueError(f"{title}: missing field {missing[0]}")
        extra = sorted(k if isinstance(k, str) else repr(k) for k in v if k not in name_set)
        return WitValueError(f"{title}: unexpected field {extra[0]}")

    def wrap(at: int, e: WitValueError) -> WitValueError:
        return WitValueError(f"{title}, field {names[at]}: {e}")

    env: dict[str, Any] = {"Mapping": Mapping, "shape": shape, "wrap": wrap}
    return _generate(  # type: ignore[no-any-return]
        [
            "def fn(put, v):",
            "    if (type(v) is not dict and not isinstance(v, Mapping))"
            f" or len(v) != {len(names)}:",
            "        raise shape(v)",
            "    try:",
            *_enc_body(types, [_encoder(t) for t in types], lambda i: f"v[{names[i]!r}]", env),
            "    except WitValueError as e:",
            "        raise wrap(at, e) from None",
            "    except KeyError:",
            "        raise shape(v) from None",
        ],
        env,
    )


def _record_dec(ty: RecordType, view: bool) -> _Dec:
    names = tuple(n for n, _ in ty.fields)
    types = [t for _, t in ty.fields]

    def wrap(at: int, e: WitValueError) -> WitValueError:
        return WitValueError(f"field {names[at]}: {e}")

    env: dict[str, Any] = {"wrap": wrap, "cut": _cut(types, [f"field {n}" for n in names])}
    display = ", ".join(f"{n!r}: f{i}" for i, n in enumerate(names))
    return _generate(  # type: ignore[no-any-return]
        [
            "def fn(data, pos):",
            "    try:",
            *_dec_body(types, [_decoder(t, view) for t in types], env),
            "    except WitValueError as e:",
            "        raise wrap(at, e) from None",
            "    except StructError:",
            "        raise cut(data, pos, at) from None",
            f"    return {{{display}}}, pos",
        ],
        env,
    )


def _tuple_enc(ty: TupleType) -> _Enc:
    n = len(ty.elements)
    label = _label(ty)

    def shape(v: Any) -> WitValueError:
        return WitValueError(f"expected a tuple of {n} for {label}, got " + _got(v))

    def wrap(at: int, e: WitValueError) -> WitValueError:
        return WitValueError(f"tuple element {at}: {e}")

    env: dict[str, Any] = {"shape": shape, "wrap": wrap}
    encs = [_encoder(t) for t in ty.elements]
    return _generate(  # type: ignore[no-any-return]
        [
            "def fn(put, v):",
            f"    if (type(v) is not tuple and not isinstance(v, (tuple, list))) or len(v) != {n}:",
            "        raise shape(v)",
            "    try:",
            *_enc_body(ty.elements, encs, lambda i: f"v[{i}]", env),
            "    except WitValueError as e:",
            "        raise wrap(at, e) from None",
        ],
        env,
    )


def _tuple_dec(ty: TupleType, view: bool) -> _Dec:
    n = len(ty.elements)

    def wrap(at: int, e: WitValueError) -> WitValueError:
        return WitValueError(f"tuple element {at}: {e}")

    cut = _cut(ty.elements, [f"tuple element {i}" for i in range(n)])
    env: dict[str, Any] = {"wrap": wrap, "cut": cut}
    decs = [_decoder(t, view) for t in ty.elements]
    return _generate(  # type: ignore[no-any-return]
        [
            "def fn(data, pos):",
            "    try:",
            *_dec_body(ty.elements, decs, env),
            "    except WitValueError as e:",
            "        raise wrap(at, e) from None",
            "    except StructError:",
            "        raise cut(data, pos, at) from None",
            f"    return ({''.join(f'f{i}, ' for i in range(n))}), pos",
        ],
        env,
    )


# --------------------------------------------------------- variants, enums, options, results


def _read_index(data: Any, pos: int, what: str, count: int) -> tuple[int, int]:
    try:
        i = data[pos]
    except IndexError:
        raise _short(what, pos, 1, data) from None
    end = pos + 1
    if i >= 0x80:
        i, end = _read_uleb(data, pos, what)
    if i >= count:
        raise _bad(what, pos, f"case index {i} out of range (it has {count} cases)")
    return i, end


def _variant_enc(ty: VariantType) -> _Enc:
    title = _title(ty, "variant")
    cases = {
        name: (_uleb(i), None if p is None else _encoder(p)) for i, (name, p) in enumerate(ty.cases)
    }
    expected = ", ".join(cases)

    def enc(put: _Put, v: Any) -> None:
        if type(v) is not Case and not isinstance(v, Case):
            raise WitValueError(f"expected Case(name, value) for {title}, got " + _got(v))
        entry = cases.get(v.name) if isinstance(v.name, str) else None
        if entry is None:
            raise WitValueError(f"unknown variant case {v.name!r}; expected one of {expected}")
        put(entry[0])
        payload = entry[1]
        if payload is None:
            if v.value is not None:
                raise WitValueError(f"variant case {v.name} has no payload, got " + _got(v.value))
            return
        try:
            payload(put, v.value)
        except WitValueError as e:
            raise WitValueError(f"variant case {v.name}: {e}") from None

    return enc


def _variant_dec(ty: VariantType, view: bool) -> _Dec:
    what = _label(ty)
    table = tuple(
        (name, Case(name) if p is None else None, None if p is None else _decoder(p, view))
        for name, p in ty.cases
    )
    count = len(table)

    def dec(data: Any, pos: int) -> tuple[Case, int]:
        i, pos = _read_index(data, pos, what, count)
        name, bare, payload = table[i]
        if payload is None:
            return bare, pos
        try:
            value, pos = payload(data, pos)
        except WitValueError as e:
            raise WitValueError(f"case {name}: {e}") from None
        return Case(name, value), pos

    return dec


def _enum_enc(ty: EnumType) -> _Enc:
    codes = {name: _uleb(i) for i, name in enumerate(ty.cases)}
    what, expected = _title(ty, "enum"), ", ".join(ty.cases)

    def enc(put: _Put, v: Any) -> None:
        code = codes.get(v) if isinstance(v, str) else None
        if code is None:
            if not isinstance(v, str):
                raise WitValueError(f"expected a case name (str) for {what}, got " + _got(v))
            raise WitValueError(f"unknown enum case {v!r}; expected one of {expected}")
        put(code)

    return enc


def _enum_dec(ty: EnumType) -> _Dec:
    names, what = tuple(ty.cases), _label(ty)
    count = len(names)
    one_byte = names[:0x80]  # indices past 127 take two bytes

    def dec(data: Any, pos: int) -> tuple[str, int]:
        try:
            return one_byte[data[pos]], pos + 1
        except IndexError:  # truncated, a multi-byte index, or one past the cases
            i, end = _read_index(data, pos, what, count)
            return names[i], end

    return dec


def _option_enc(ty: OptionType) -> _Enc:
    inner = _encoder(ty.inner)
    nested = isinstance(ty.inner, OptionType)
    label = _label(ty)

    def enc(put: _Put, v: Any) -> None:
        if v is None:
            put(_NONE)
            return
        if type(v) is Some or isinstance(v, Some):
            v = v.value
        elif nested:  # some(none) and none must stay apart
            raise WitValueError(f"expected None or Some(value) for {label}, got " + _got(v))
        put(_SOME)
        try:
            inner(put, v)
        except WitValueError as e:
            raise WitValueError(f"option some: {e}") from None

    return enc


def _option_dec(ty: OptionType, view: bool) -> _Dec:
    inner = _decoder(ty.inner, view)
    nested = isinstance(ty.inner, OptionType)
    what = _label(ty)

    def dec(data: Any, pos: int) -> tuple[Any, int]:
        try:
            b = data[pos]
        except IndexError:
            raise _short(what, pos, 1, data) from None
        if b == 0:
            return None, pos + 1
        if b != 1:
            raise _bad(what, pos, f"discriminant {b:#04x} is neither 0 (none) nor 1 (some)")
        try:
            v, end = inner(data, pos + 1)
        except WitValueError as e:
            raise WitValueError(f"option some: {e}") from None
        return (Some(v) if nested else v), end

    return dec


def _result_enc(ty: ResultType) -> _Enc:
    ok = None if ty.ok is None else _encoder(ty.ok)
    err = None if ty.err is None else _encoder(ty.err)
    label = _label(ty)

    def enc(put: _Put, v: Any) -> None:
        if isinstance(v, Ok):
            put(b"\x00")
            side, payload = "ok", ok
        elif isinstance(v, Err):
            put(b"\x01")
            side, payload = "err", err
        else:
            raise WitValueError(f"expected Ok(value) or Err(value) for {label}, got " + _got(v))
        if payload is None:
            if v.value is not None:
                raise WitValueError(f"result {side} has no payload, got " + _got(v.value))
            return
        try:
            payload(put, v.value)
        except WitValueError as e:
            raise WitValueError(f"result {side}: {e}") from None

    return enc


def _result_dec(ty: ResultType, view: bool) -> _Dec:
    sides = (
        ("ok", Ok, None if ty.ok is None else _decoder(ty.ok, view), Ok()),
        ("err", Err, None if ty.err is None else _decoder(ty.err, view), Err()),
    )
    what = _label(ty)

    def dec(data: Any, pos: int) -> tuple[Ok | Err, int]:
        try:
            b = data[pos]
        except IndexError:
            raise _short(what, pos, 1, data) from None
        if b > 1:
            raise _bad(what, pos, f"discriminant {b:#04x} is neither 0 (ok) nor 1 (err)")
        side, make, payload, bare = sides[b]
        if payload is None:
            return bare, pos + 1
        try:
            v, end = payload(data, pos + 1)
        except WitValueError as e:
            raise WitValueError(f"result {side}: {e}") from None
        return make(v), end

    return dec


def _flags_enc(ty: FlagsType) -> _Enc:
    bit = {name: 1 << i for i, name in enumerate(ty.names)}
    size = (len(ty.names) + 7) // 8
    title, expected = _title(ty, "flags"), ", ".join(ty.names)

    def enc(put: _Put, v: Any) -> None:
        if not isinstance(v, AbstractSet):
            raise WitValueError(f"expected a set of flag names for {title}, got " + _got(v))
        bits = 0
        try:
            for name in v:
                bits |= bit[name]
        except (KeyError, TypeError):
            bad = next(x for x in v if not isinstance(x, str) or x not in bit)
            raise WitValueError(f"unknown flag {bad!r}; expected some of {expected}") from None
        put(bits.to_bytes(size, "little"))

    return enc


def _flags_dec(ty: FlagsType) -> _Dec:
    names, what = ty.names, _label(ty)
    count, size = len(names), (len(ty.names) + 7) // 8
    # Up to 8 flags: every possible set made once, looked up by the byte.
    table = [
        frozenset(n for i, n in enumerate(names) if b >> i & 1) for b in range(1 << count)
    ] if count <= 8 else []

    def dec(data: Any, pos: int) -> tuple[frozenset[str], int]:
        end = pos + size
        if end > len(data):
            raise _short(what, pos, size, data)
        bits = int.from_bytes(data[pos:end], "little")
        if bits >> count:
            raise _bad(what, pos, f"bits set beyond its {count} flags")
        if table:
            return table[bits], end
        return frozenset(n for i, n in enumerate(names) if bits >> i & 1), end

    return dec


# ------------------------------------------------------------------------------ compilation


def _encoder(ty: WitType) -> _Enc:
    if isinstance(ty, Primitive):
        k = ty.kind
        if k in INT_RANGES:
            return _int_enc(k)
        if k in ("f32", "f64"):
            return _float_enc(k)
        return {"bool": _enc_bool, "char": _enc_char, "string": _enc_string}[k]
    if isinstance(ty, ListType):
        if u8_list(ty):
            return _enc_bytes
        bulk = _bulk_kind(ty)
        return _list_enc(ty) if bulk is None else _bulk_enc(ty, bulk)
    if isinstance(ty, RecordType):
        return _record_enc(ty)
    if isinstance(ty, TupleType):
        return _tuple_enc(ty)
    if isinstance(ty, VariantType):
        return _variant_enc(ty)
    if isinstance(ty, EnumType):
        return _enum_enc(ty)
    if isinstance(ty, OptionType):
        return _option_enc(ty)
    if isinstance(ty, ResultType):
        return _result_enc(ty)
    if isinstance(ty, FlagsType):
        return _flags_enc(ty)
    raise TypeError(f"not an encodable WIT type: {ty!r}")  # resources: _check_portable


def _decoder(ty: WitType, view: bool) -> _Dec:
    if isinstance(ty, Primitive):
        k = ty.kind
        if k in _CODES:
            return _fixed_dec(k)
        if k == "string":
            return _string_dec(view)
        return _dec_bool if k == "bool" else _dec_char
    if isinstance(ty, ListType):
        if u8_list(ty):
            return _bytes_dec(view)
        bulk = _bulk_kind(ty)
        return _list_dec(ty, view) if bulk is None else _bulk_dec(ty, bulk)
    if isinstance(ty, RecordType):
        return _record_dec(ty, view)
    if isinstance(ty, TupleType):
        return _tuple_dec(ty, view)
    if isinstance(ty, VariantType):
        return _variant_dec(ty, view)
    if isinstance(ty, EnumType):
        return _enum_dec(ty)
    if isinstance(ty, OptionType):
        return _option_dec(ty, view)
    if isinstance(ty, ResultType):
        return _result_dec(ty, view)
    if isinstance(ty, FlagsType):
        return _flags_dec(ty)
    raise TypeError(f"not a decodable WIT type: {ty!r}")


# Python's own parsing errors, should a decoder ever let one through: still a WitValueError.
_LEAKS = (IndexError, struct.error, UnicodeDecodeError, ValueError, OverflowError, TypeError)


def _input(data: Any, view: bool) -> Any:
    """What the decoders read: ``bytes``, or a flat read-only byte view for zero-copy."""
    if view:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise WitValueError(f"expected bytes to decode, got {type(data).__name__}")
        mv = memoryview(data)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B") if mv.c_contiguous else memoryview(mv.tobytes())
        return mv.toreadonly()
    if type(data) is bytes:
        return data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WitValueError(f"expected bytes to decode, got {type(data).__name__}")
    return bytes(data)


def _run_decoder(dec: _Dec, data: Any, what: str) -> Any:
    try:
        value, end = dec(data, 0)
    except WitValueError as e:
        raise WitValueError(f"cannot decode {what}: {e}") from None
    except _LEAKS as e:  # every decoder checks its input: this is a last line of defence
        raise WitValueError(f"cannot decode {what}: malformed data ({e})") from None
    if end != len(data):
        raise _trailing(what, data, end)
    return value


def _trailing(what: str, data: Any, end: int) -> WitValueError:
    extra = len(data) - end
    return WitValueError(f"cannot decode {what}: {extra} trailing byte(s) at offset {end}")


class Codec:
    """Encoder and decoder compiled for one WIT type. Get one from ``codec(ty)`` and keep it on
    hot paths: that skips the cache lookup (an identity check, or a ``repr`` of the whole type
    for a type object not seen before)."""

    __slots__ = ("type", "label", "_enc", "_dec", "_view_dec")

    def __init__(self, ty: WitType) -> None:
        _check_portable(ty, ty)
        self.type, self.label = ty, _label(ty)
        self._enc = _encoder(ty)
        self._dec = _decoder(ty, False)
        self._view_dec: _Dec | None = None

    def encode(self, value: Any) -> bytes:
        parts: list[bytes] = []
        self._enc(parts.append, value)
        return b"".join(parts)

    def decode(self, data: Buffer, zero_copy: bool = False) -> Any:
        """The value in ``data``, which must hold exactly one. With ``zero_copy``, ``list<u8>``
        values are read-only ``memoryview`` slices of ``data`` instead of ``bytes`` copies."""
        if type(data) is bytes and not zero_copy:  # the hot path, inlined
            try:
                value, end = self._dec(data, 0)
            except WitValueError as e:
                raise WitValueError(f"cannot decode {self.label}: {e}") from None
            except _LEAKS as e:  # every decoder checks its input: a last line of defence
                raise WitValueError(f"cannot decode {self.label}: malformed data ({e})") from None
            if end != len(data):
                raise _trailing(self.label, data, end)
            return value
        if not zero_copy:
            return _run_decoder(self._dec, _input(data, False), self.label)
        if self._view_dec is None:
            self._view_dec = _decoder(self.type, True)
        return _run_decoder(self._view_dec, _input(data, True), self.label)


class ArgsCodec:
    """A function's parameter list: the parameters' encodings back to back, exactly as the
    tuple of their types would be (no count: the arity is part of the function type)."""

    __slots__ = ("params", "label", "_names", "_encs", "_dec", "_view_dec")

    def __init__(self, params: Sequence[tuple[str, WitType]]) -> None:
        self.params = tuple(params)
        for name, ty in self.params:
            try:
                _check_portable(ty, ty)
            except WitValueError as e:
                raise WitValueError(f"parameter `{name}`: {e}") from None
        self._names = tuple(n for n, _ in self.params)
        self._encs = tuple(_encoder(t) for _, t in self.params)
        self._dec = self._decoder(False)
        self._view_dec: _Dec | None = None
        self.label = "arguments (" + ", ".join(f"{n}: {_label(t)}" for n, t in self.params) + ")"

    def _decoder(self, view: bool) -> _Dec:
        decs = tuple(_decoder(t, view) for _, t in self.params)
        names = self._names

        def dec(data: Any, pos: int) -> tuple[list[Any], int]:
            out: list[Any] = []
            try:
                for d in decs:
                    x, pos = d(data, pos)
                    out.append(x)
            except WitValueError as e:
                raise WitValueError(f"argument `{names[len(out)]}`: {e}") from None
            return out, pos

        return dec

    def encode(self, args: Sequence[Any]) -> bytes:
        encs = self._encs
        if len(args) != len(encs):
            names = ", ".join(self._names) or "none"
            raise WitValueError(f"expected {len(encs)} argument(s) ({names}), got {len(args)}")
        parts: list[bytes] = []
        put = parts.append
        i = 0
        try:
            for i in range(len(encs)):
                encs[i](put, args[i])
        except WitValueError as e:
            raise WitValueError(f"argument `{self._names[i]}`: {e}") from None
        return b"".join(parts)

    def decode(self, data: Buffer, *, zero_copy: bool = False) -> list[Any]:
        """The arguments in ``data``, as a list in parameter order (see ``Codec.decode``)."""
        if not zero_copy:
            values: list[Any] = _run_decoder(self._dec, _input(data, False), self.label)
            return values
        if self._view_dec is None:
            self._view_dec = self._decoder(True)
        values = _run_decoder(self._view_dec, _input(data, True), self.label)
        return values


# Compiled codecs are cached by type. Types compare structurally, ignoring names, but error
# messages name types, so the key is the full ``repr`` (names included). Building that key walks
# the whole type, so the usual case, the very same type object again, is answered by identity
# first; an entry holds its type object, so that id cannot be reused while it is cached.
_by_id: dict[int, tuple[object, Any]] = {}
_by_repr: dict[str, Any] = {}
_CACHE_SIZE = 2048


def _cached(key: Any, make: Callable[[Any], Any]) -> Any:
    hit = _by_id.get(id(key))
    if hit is not None and hit[0] is key:
        return hit[1]
    text = f"{make.__name__}:{key!r}"
    compiled = _by_repr.get(text)
    if compiled is None:
        compiled = make(key)
        if len(_by_repr) >= _CACHE_SIZE:
            _by_repr.clear()
        _by_repr[text] = compiled
    if len(_by_id) >= _CACHE_SIZE:
        _by_id.clear()
    _by_id[id(key)] = (key, compiled)
    return compiled


def codec(ty: WitType) -> Codec:
    """The compiled codec for ``ty`` (cached). Raises ``WitValueError`` for types that cannot
    cross hosts (resources)."""
    result: Codec = _cached(ty, Codec)
    return result


def args_codec(params: Sequence[tuple[str, WitType]]) -> ArgsCodec:
    """The compiled codec for a parameter list such as ``FuncType.params`` (cached)."""
    key = params if isinstance(params, tuple) else tuple(params)
    result: ArgsCodec = _cached(key, ArgsCodec)
    return result


def encode(value: Any, ty: WitType) -> bytes:
    """``value`` (Trellis's value model) as bytes; ``WitValueError`` if it does not fit ``ty``."""
    return codec(ty).encode(value)


def decode(data: Buffer, ty: WitType, *, zero_copy: bool = False) -> Any:
    """The value of type ``ty`` that ``data`` holds, all of it; ``WitValueError`` (naming the
    type and the byte offset) for truncated, trailing or invalid bytes."""
    return codec(ty).decode(data, zero_copy=zero_copy)


def encode_args(args: Sequence[Any], params: Sequence[tuple[str, WitType]]) -> bytes:
    """A call's arguments, one per parameter, in order."""
    return args_codec(params).encode(args)


def decode_args(
    data: Buffer, params: Sequence[tuple[str, WitType]], *, zero_copy: bool = False
) -> list[Any]:
    return args_codec(params).decode(data, zero_copy=zero_copy)


def encode_result(value: Any, ty: WitType | None) -> bytes:
    """A call's return value; a function without a result returns the empty payload."""
    if ty is None:
        if value is not None:
            raise WitValueError("the function has no result, got " + _got(value))
        return b""
    return codec(ty).encode(value)


def decode_result(data: Buffer, ty: WitType | None, *, zero_copy: bool = False) -> Any:
    if ty is None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise WitValueError(f"expected bytes to decode, got {type(data).__name__}")
        if len(data):
            raise WitValueError("cannot decode no result: "
                                f"{len(data)} trailing byte(s) at offset 0")
        return None
    return codec(ty).decode(data, zero_copy=zero_copy)
