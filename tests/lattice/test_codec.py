"""The cross-host value encoding: round trips, hostile input, wrong values, pinned bytes.

The golden vectors pin the format documented in ``docs/value-encoding.md``: a change that breaks
one breaks every provider written against that document.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _wit_strategies import typed_values, wit_types
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from trellis.lattice.codec import (
    ENCODING,
    ArgsCodec,
    args_codec,
    codec,
    decode,
    decode_args,
    decode_result,
    encode,
    encode_args,
    encode_result,
)
from trellis.lattice.errors import WitValueError
from trellis.lattice.wit.types import (
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
)
from trellis.lattice.wit.values import Case, Err, Ok, Resource, Some

BOOL, U8, S8, U16, S16, U32, S32, U64, S64 = (
    Primitive(k) for k in ("bool", "u8", "s8", "u16", "s16", "u32", "s32", "u64", "s64")
)
F32, F64, CHAR, STRING = (Primitive(k) for k in ("f32", "f64", "char", "string"))
BYTES = ListType(U8)

# ------------------------------------------------------------------------ type and value model

FLAG_NAMES = st.integers(1, 20).map(lambda n: tuple(f"f{i}" for i in range(n)))
WIT_TYPES = wit_types(
    max_leaves=10, record_names=st.just("rec"), flag_names=FLAG_NAMES, bytes_leaf=True
)
TYPED_VALUES = typed_values(WIT_TYPES, long_text=(120, 140), long_bytes=(126, 140))


def norm(v: Any, ty: WitType) -> Any:  # noqa: C901 - one branch per WIT type
    """A comparable form: f64 by its bits (NaN payload and the sign of zero count), f32 by its
    bits too except that any NaN equals any NaN (f32 NaNs are quieted by Python's widening)."""
    if isinstance(ty, Primitive):
        if ty.kind == "f64":
            return struct.pack("<d", v)
        if ty.kind == "f32":
            return "nan" if math.isnan(v) else struct.pack("<d", v)
        return (type(v), v)
    if isinstance(ty, ListType):
        if ty.element == U8:
            return (bytes, bytes(v))
        return [norm(x, ty.element) for x in v]
    if isinstance(ty, RecordType):
        assert set(v) == {n for n, _ in ty.fields}
        return {n: norm(v[n], t) for n, t in ty.fields}
    if isinstance(ty, TupleType):
        assert isinstance(v, tuple)
        return tuple(norm(x, t) for x, t in zip(v, ty.elements, strict=True))
    if isinstance(ty, VariantType):
        payload = dict(ty.cases)[v.name]
        return ("case", v.name, None if payload is None else norm(v.value, payload))
    if isinstance(ty, OptionType):
        if v is None:
            return None
        if isinstance(ty.inner, OptionType):
            assert isinstance(v, Some)
            v = v.value
        return ("some", norm(v, ty.inner))
    if isinstance(ty, ResultType):
        side = ty.ok if isinstance(v, Ok) else ty.err
        return (type(v).__name__, None if side is None else norm(v.value, side))
    if isinstance(ty, FlagsType):
        assert isinstance(v, frozenset)
    return v


def has_f32(ty: WitType) -> bool:
    if ty == F32:
        return True
    return any(has_f32(c) for c in _children(ty))


def _children(ty: WitType) -> list[WitType]:
    if isinstance(ty, (ListType,)):
        return [ty.element]
    if isinstance(ty, OptionType):
        return [ty.inner]
    if isinstance(ty, RecordType):
        return [t for _, t in ty.fields]
    if isinstance(ty, TupleType):
        return list(ty.elements)
    if isinstance(ty, VariantType):
        return [t for _, t in ty.cases if t is not None]
    if isinstance(ty, ResultType):
        return [t for t in (ty.ok, ty.err) if t is not None]
    return []


# ---------------------------------------------------------------------------------- round trip


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TYPED_VALUES)
def test_round_trip(typed: tuple[WitType, Any]) -> None:
    ty, value = typed
    data = encode(value, ty)
    assert isinstance(data, bytes)
    back = decode(data, ty)
    assert norm(back, ty) == norm(value, ty)
    assert norm(decode(data, ty, zero_copy=True), ty) == norm(value, ty)
    assert norm(decode(bytearray(data), ty), ty) == norm(value, ty)
    if not has_f32(ty):  # canonical: one value, one encoding (f32 NaNs may come back quiet)
        assert encode(back, ty) == data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TYPED_VALUES)
def test_every_truncation_and_extension_is_refused(typed: tuple[WitType, Any]) -> None:
    ty, value = typed
    data = encode(value, ty)
    c = codec(ty)
    for cut in range(len(data)):
        with pytest.raises(WitValueError, match="cannot decode") as info:
            c.decode(data[:cut])
        assert "malformed data" not in str(info.value)  # a precise error, not the backstop
    with pytest.raises(WitValueError, match=r"1 trailing byte\(s\) at offset"):
        c.decode(data + b"\x00")


def _decode_or_refuse(ty: WitType, data: bytes) -> None:
    """``data`` decodes to a value that encodes back to ``data``, or is refused precisely."""
    try:
        value = decode(data, ty)
    except WitValueError as e:
        assert "malformed data" not in str(e), e
        assert "offset" in str(e), e
        return
    again = encode(value, ty)
    if has_f32(ty):
        assert norm(decode(again, ty), ty) == norm(value, ty)
    else:
        assert again == data


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(WIT_TYPES, st.binary(max_size=64))
def test_garbage_decodes_canonically_or_is_refused(ty: WitType, data: bytes) -> None:
    _decode_or_refuse(ty, data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TYPED_VALUES, st.data())
def test_corrupted_bytes_decode_canonically_or_are_refused(
    typed: tuple[WitType, Any], data: st.DataObject
) -> None:
    ty, value = typed
    raw = bytearray(encode(value, ty))
    assume(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    _decode_or_refuse(ty, bytes(raw))


@settings(max_examples=200, deadline=None)
@given(st.lists(TYPED_VALUES, max_size=4))
def test_args_round_trip(typed: list[tuple[WitType, Any]]) -> None:
    params = tuple((f"p{i}", ty) for i, (ty, _) in enumerate(typed))
    args = [v for _, v in typed]
    data = encode_args(args, params)
    assert data == b"".join(encode(v, ty) for ty, v in typed)  # back to back, no framing
    back = decode_args(data, params)
    assert isinstance(back, list)
    assert [norm(v, t) for v, (_, t) in zip(back, params, strict=True)] == [
        norm(v, t) for v, (_, t) in zip(args, params, strict=True)
    ]
    for cut in range(len(data)):
        with pytest.raises(WitValueError):
            decode_args(data[:cut], params)


# -------------------------------------------------------------------------- wrong-typed values


class Alien:
    """A value of no WIT type at all."""


def poisoned(ty: WitType, value: Any, draw: Callable[[st.SearchStrategy[Any]], Any]) -> Any:
    """``value`` with one part (perhaps the whole) replaced by an ``Alien``."""
    spots: list[Callable[[], Any]] = [lambda: Alien()]
    if isinstance(ty, ListType) and ty.element != U8 and value:
        def in_list() -> Any:
            i = draw(st.integers(0, len(value) - 1))
            return [*value[:i], poisoned(ty.element, value[i], draw), *value[i + 1:]]
        spots.append(in_list)
    if isinstance(ty, RecordType):
        def in_record() -> Any:
            name, t = draw(st.sampled_from(ty.fields))
            return {**value, name: poisoned(t, value[name], draw)}
        spots.append(in_record)
    if isinstance(ty, TupleType):
        def in_tuple() -> Any:
            i = draw(st.integers(0, len(ty.elements) - 1))
            return (*value[:i], poisoned(ty.elements[i], value[i], draw), *value[i + 1:])
        spots.append(in_tuple)
    if isinstance(ty, VariantType) and dict(ty.cases)[value.name] is not None:
        payload = dict(ty.cases)[value.name]
        spots.append(lambda: Case(value.name, poisoned(payload, value.value, draw)))
    if isinstance(ty, OptionType) and value is not None:
        inner = value.value if isinstance(value, Some) else value
        spots.append(lambda: Some(poisoned(ty.inner, inner, draw)))
    if isinstance(ty, ResultType):
        side = ty.ok if isinstance(value, Ok) else ty.err
        if side is not None:
            spots.append(lambda: type(value)(poisoned(side, value.value, draw)))
    return draw(st.sampled_from(spots))()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TYPED_VALUES, st.data())
def test_encode_refuses_a_wrong_value_anywhere(
    typed: tuple[WitType, Any], data: st.DataObject
) -> None:
    ty, value = typed
    bad = poisoned(ty, value, data.draw)
    with pytest.raises(WitValueError):
        encode(bad, ty)
    params = (("first", U8), ("second", ty))
    with pytest.raises(WitValueError, match="argument `second`"):
        encode_args([1, bad], params)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TYPED_VALUES, WIT_TYPES)
def test_a_value_of_another_type_is_refused_or_fits(
    typed: tuple[WitType, Any], other: WitType
) -> None:
    """Encoding never fails with anything but ``WitValueError``; what it accepts is a value of
    the type (an int where a float is expected, say) and decodes as one."""
    _, value = typed
    try:
        data = encode(value, other)
    except WitValueError:
        return
    assert encode(decode(data, other), other) == data or has_f32(other)


REC = RecordType((("a", U32), ("b", STRING)), name="point")
OO = OptionType(OptionType(U8))


@pytest.mark.parametrize(("value", "ty", "message"), [
    (True, U8, r"expected u8 \(0..255\), got bool True"),
    (256, U8, r"expected u8 \(0..255\), got 256"),
    (-1, U64, "expected u64"),
    (2**63, S64, "expected s64"),
    (1.0, S32, "expected s32"),
    ("1", F64, r"expected f64 \(a float\), got str"),
    (True, F32, "expected f32"),
    (10**400, F64, "an int too large for a float"),
    (1, BOOL, "expected bool, got int 1"),
    ("ab", CHAR, "expected char"),
    ("\ud800", CHAR, "lone surrogate U\\+D800"),
    ("a\udfffb", STRING, "lone surrogate at index 1"),
    (b"x", STRING, "expected string, got bytes"),
    ("abc", BYTES, "expected bytes for list<u8>, got str"),
    ([1, 2], BYTES, "expected bytes for list<u8>, got list"),
    ({1, 2}, ListType(U32), "expected a list for list<u32>"),
    ([1, True], ListType(U32), "list element 1: expected u32"),
    ([1, 2**32], ListType(U32), "list element 1: expected u32"),
    ([1.0, "x"], ListType(F64), "list element 1: expected f64"),
    ([True, 1], ListType(BOOL), "list element 1: expected bool"),
    (["a", 1], ListType(STRING), "list element 1: expected string"),
    ({"a": 1}, REC, "record point: missing field b"),
    ({"a": 1, "b": "x", "c": 2}, REC, "record point: unexpected field c"),
    ({"a": 1, "c": 2}, REC, "record point: missing field b"),
    ({"a": -1, "b": "x"}, REC, "record point, field a: expected u32"),
    ([1, "x"], REC, "expected a dict for record point, got list"),
    ((1,), TupleType((U8, U8)), r"expected a tuple of 2 for tuple<u8, u8>"),
    ((1, 300), TupleType((U8, U8)), "tuple element 1: expected u8"),
    ((1, True), TupleType((U8, U8)), "tuple element 1: expected u8"),
    ("a", VariantType((("a", None),)), r"expected Case\(name, value\)"),
    (Case("z"), VariantType((("a", None),), name="v"), "unknown variant case 'z'"),
    (Case("a", 1), VariantType((("a", None),)), "variant case a has no payload"),
    (Case("a", "x"), VariantType((("a", U8),)), "variant case a: expected u8"),
    (Case(["a"]), VariantType((("a", None),)), "unknown variant case"),
    (1, EnumType(("a",), name="e"), r"expected a case name \(str\) for enum e"),
    ("z", EnumType(("a",)), "unknown enum case 'z'"),
    (5, OO, r"expected None or Some\(value\) for option<option<u8>>"),
    (Some(Some(300)), OO, "option some: option some: expected u8"),
    (5, ResultType(U8, None), r"expected Ok\(value\) or Err\(value\)"),
    (Err(1), ResultType(U8, None), "result err has no payload"),
    (Ok("x"), ResultType(U8, None), "result ok: expected u8"),
    (["a"], FlagsType(("a",)), "expected a set of flag names"),
    ({"a", "q"}, FlagsType(("a", "b")), "unknown flag 'q'; expected some of a, b"),
    (frozenset({1}), FlagsType(("a",)), "unknown flag 1"),
])
def test_encode_wrong_values(value: Any, ty: WitType, message: str) -> None:
    with pytest.raises(WitValueError, match=message):
        encode(value, ty)


def test_encode_accepts_the_value_models_input_forms() -> None:
    """What the value model (and the runtime's lowering) accepts as input, the codec does too."""
    assert encode(bytearray(b"ab"), BYTES) == encode(memoryview(b"ab"), BYTES) == b"\x02ab"
    assert encode(memoryview(array("H", [1])), BYTES) == b"\x02\x01\x00"  # raw bytes of it
    assert encode((1, 2), ListType(U32)) == encode([1, 2], ListType(U32))
    assert encode([1, 2], TupleType((U8, U8))) == b"\x01\x02"
    assert encode({"b"}, FlagsType(("a", "b"))) == b"\x02"
    assert encode(3, F64) == encode(3.0, F64)
    assert encode([3, 4.5], ListType(F32)) == encode([3.0, 4.5], ListType(F32))
    assert encode(Some(5), OptionType(U8)) == encode(5, OptionType(U8)) == b"\x01\x05"

    class Sub(int):
        pass

    assert encode(Sub(7), U32) == encode(7, U32)
    assert encode([Sub(7)], ListType(U32)) == encode([7], ListType(U32))


def test_f32_rounds_to_nearest_and_overflows_to_infinity() -> None:
    assert decode(encode(0.1, F32), F32) == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert decode(encode(1e300, F32), F32) == math.inf
    assert decode(encode(-1e300, F32), F32) == -math.inf
    assert decode(encode([1e300, -1e39], ListType(F32)), ListType(F32)) == [math.inf, -math.inf]
    assert decode(encode((1e300, 2), TupleType((F32, U8))), TupleType((F32, U8))) == (math.inf, 2)
    assert math.copysign(1, decode(encode(-0.0, F32), F32)) == -1


def test_f64_nan_payload_and_sign_survive() -> None:
    weird = struct.unpack("<d", bytes.fromhex("0100000000fcffff"))[0]  # -nan, signalling bits
    for ty in (F64, ListType(F64), TupleType((F64, F64))):
        value = weird if ty == F64 else [weird] if isinstance(ty, ListType) else (weird, weird)
        data = encode(value, ty)
        assert data.endswith(bytes.fromhex("0100000000fcffff"))
        assert encode(decode(data, ty), ty) == data


# ------------------------------------------------------------------------------- golden bytes

ORDER = RecordType(
    (
        ("id", U64),
        ("customer", STRING),
        ("quantity", U32),
        ("unit-price", F64),
        ("status", EnumType(("pending", "paid", "shipped"), name="status")),
        ("tags", ListType(STRING)),
        ("note", OptionType(STRING)),
    ),
    name="order",
)
PLACE_ORDER_PARAMS = (("order", ORDER), ("priority", U8))
PLACE_ORDER_RESULT = ResultType(U64, STRING)

GOLDEN: list[tuple[Any, WitType, str]] = [
    (True, BOOL, "01"),
    (False, BOOL, "00"),
    (200, U8, "c8"),
    (-2, S8, "fe"),
    (0x1234, U16, "3412"),
    (-2, S16, "feff"),
    (1, U32, "01000000"),
    (-1, S32, "ffffffff"),
    (2**64 - 1, U64, "ffffffffffffffff"),
    (-(2**63), S64, "0000000000000080"),
    (1.5, F32, "0000c03f"),
    (-0.0, F64, "0000000000000080"),
    (math.inf, F64, "000000000000f07f"),
    ("A", CHAR, "41000000"),
    ("€", CHAR, "ac200000"),
    ("\U0001f600", CHAR, "00f60100"),
    ("", STRING, "00"),
    ("hé", STRING, "0368c3a9"),
    ("a" * 200, STRING, "c801" + "61" * 200),
    (b"", BYTES, "00"),
    (b"\x00\xff", BYTES, "0200ff"),
    (bytes(300), BYTES, "ac02" + "00" * 300),
    ([1, 2], ListType(U16), "0201000200"),
    ([True, False], ListType(BOOL), "020100"),
    (["a", ""], ListType(STRING), "02016100"),
    ([[1], []], ListType(ListType(S8)), "02010100"),
    ({"a": 1, "b": "x"}, REC, "010000000178"),
    ((1, -1, 2.0), TupleType((U8, S8, F32)), "01ff00000040"),
    (Case("a"), VariantType((("a", None), ("b", U16))), "00"),
    (Case("b", 258), VariantType((("a", None), ("b", U16))), "010201"),
    (Case("c200", None), VariantType(tuple((f"c{i}", None) for i in range(201))), "c801"),
    ("z", EnumType(("x", "y", "z")), "02"),
    ("e127", EnumType(tuple(f"e{i}" for i in range(201))), "7f"),
    ("e128", EnumType(tuple(f"e{i}" for i in range(201))), "8001"),
    ("e200", EnumType(tuple(f"e{i}" for i in range(201))), "c801"),
    (None, OptionType(U8), "00"),
    (5, OptionType(U8), "0105"),
    (None, OO, "00"),
    (Some(None), OO, "0100"),
    (Some(7), OO, "010107"),
    (Ok(1), ResultType(U8, STRING), "0001"),
    (Err("e"), ResultType(U8, STRING), "010165"),
    (Ok(), ResultType(None, None), "00"),
    (Err(), ResultType(U8, None), "01"),
    (frozenset(), FlagsType(("a", "b", "c")), "00"),
    (frozenset({"a", "c"}), FlagsType(("a", "b", "c")), "05"),
    (frozenset({"f0", "f9"}), FlagsType(tuple(f"f{i}" for i in range(10))), "0102"),
    (frozenset({"f31"}), FlagsType(tuple(f"f{i}" for i in range(32))), "00000080"),
]


@pytest.mark.parametrize(("value", "ty", "hex_"), GOLDEN)
def test_golden_vectors(value: Any, ty: WitType, hex_: str) -> None:
    data = bytes.fromhex(hex_)
    assert encode(value, ty).hex() == hex_
    assert norm(decode(data, ty), ty) == norm(value, ty)


def test_golden_worked_example_from_the_docs() -> None:
    """The worked example of docs/value-encoding.md, byte for byte."""
    order = {
        "id": 42, "customer": "Zoë", "quantity": 3, "unit-price": 9.5,
        "status": "paid", "tags": ["gift"], "note": None,
    }
    args = encode_args([order, 7], PLACE_ORDER_PARAMS)
    assert args.hex(" ") == (
        "2a 00 00 00 00 00 00 00"  # id: u64 42
        " 04 5a 6f c3 ab"  # customer: "Zoë", 4 UTF-8 bytes
        " 03 00 00 00"  # quantity: u32 3
        " 00 00 00 00 00 00 23 40"  # unit-price: f64 9.5
        " 01"  # status: case 1, paid
        " 01 04 67 69 66 74"  # tags: 1 string, "gift"
        " 00"  # note: none
        " 07"  # priority: u8 7
    )
    assert decode_args(args, PLACE_ORDER_PARAMS) == [order, 7]
    doc = (Path(__file__).resolve().parents[2] / "docs" / "value-encoding.md").read_text()
    block = doc.split("sends these 34 bytes:\n\n```text\n", 1)[1].split("```", 1)[0]
    assert bytes.fromhex(" ".join(line.split("   ")[0] for line in block.splitlines())) == args
    assert encode_result(Ok(1001), PLACE_ORDER_RESULT).hex(" ") == "00 e9 03 00 00 00 00 00 00"
    assert encode_result(Err("sold out"), PLACE_ORDER_RESULT).hex(" ") == (
        "01 08 73 6f 6c 64 20 6f 75 74"
    )
    assert decode_result(bytes.fromhex("01 08 73 6f 6c 64 20 6f 75 74"), PLACE_ORDER_RESULT) == (
        Err("sold out")
    )


# ----------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(("ty", "hex_", "message"), [
    (BOOL, "02", "bool at offset 0: byte 0x02 is neither 0 nor 1"),
    (ListType(BOOL), "020102", "bool at offset 2: byte 0x02"),
    (TupleType((U8, BOOL)), "0107", "tuple element 1: bool at offset 1"),
    (CHAR, "00d80000", "char at offset 0: 0xd800 is not a Unicode scalar value"),
    (CHAR, "00001100", "0x110000 is not a Unicode scalar value"),
    (STRING, "02c328", "string at offset 0: invalid UTF-8 at byte 1"),
    (STRING, "03eda080", "invalid UTF-8"),  # an encoded surrogate
    (STRING, "02c0af", "invalid UTF-8"),  # an overlong form
    (STRING, "05616263", "string at offset 0: length 5 exceeds the 3 byte"),
    (STRING, "8000", "overlong ULEB128"),
    (STRING, "8100", "overlong ULEB128"),
    (STRING, "ffffffffff01", "ULEB128 longer than 5 bytes"),
    (STRING, "ffffffff1f", "exceeds 4294967295"),
    (STRING, "ffffffff0f", "length 4294967295 exceeds the 0 byte"),
    (STRING, "80", "truncated"),
    (BYTES, "ffffffff0f00", "list<u8> at offset 0: length 4294967295 exceeds the 1 byte"),
    (ListType(U64), "0a0000", "count 10 needs at least 80 byte"),
    (ListType(STRING), "ffffffff0f", "count 4294967295 needs at least 4294967295 byte"),
    (ListType(REC), "ffff03", "count 65535 needs at least 327675 byte"),
    (OptionType(U8), "02", "discriminant 0x02 is neither 0 \\(none\\) nor 1 \\(some\\)"),
    (ResultType(U8, None), "05", "discriminant 0x05 is neither 0 \\(ok\\) nor 1 \\(err\\)"),
    (EnumType(("a", "b"), name="e"), "02", "e at offset 0: case index 2 out of range"),
    (VariantType((("a", None),)), "8001", "case index 128 out of range"),
    (EnumType(tuple(f"e{i}" for i in range(201))), "c901", "case index 201 out of range"),
    (EnumType(tuple(f"e{i}" for i in range(201))), "c9", "truncated"),
    (EnumType(("a",)), "", "truncated: needs 1 byte"),
    (FlagsType(("a", "b", "c"), name="fl"), "08", "fl at offset 0: bits set beyond its 3 flags"),
    (FlagsType(tuple(f"f{i}" for i in range(10))), "0004", "beyond its 10 flags"),
    (FlagsType(tuple(f"f{i}" for i in range(10))), "01", "truncated: needs 2 byte"),
    (U32, "010203", "u32 at offset 0: truncated: needs 4 byte\\(s\\), 3 left"),
    (REC, "01000000", "field b: string at offset 4: truncated"),
    (REC, "0100", "field a: u32 at offset 0: truncated: needs 4 byte\\(s\\), 2 left"),
    (RecordType((("a", U8), ("b", U32), ("c", STRING))), "0100",
     "field b: u32 at offset 1: truncated: needs 4 byte\\(s\\), 1 left"),
    (TupleType((U8, U16)), "01", "tuple element 1: u16 at offset 1: truncated: needs 2"),
    (U8, "", "u8 at offset 0: truncated"),
    (U8, "0101", "1 trailing byte\\(s\\) at offset 1"),
    (OptionType(STRING), "01", "option some: string at offset 1: truncated"),
    (ListType(ListType(U32)), "0201010000000102", "list element 1: list<u32> at offset 6"),
])
def test_decode_refuses_invalid_bytes(ty: WitType, hex_: str, message: str) -> None:
    with pytest.raises(WitValueError, match=message) as info:
        decode(bytes.fromhex(hex_), ty)
    assert str(info.value).startswith("cannot decode ")


def test_decode_errors_name_the_type_and_the_offset() -> None:
    data = encode({"a": 1, "b": "hello"}, REC)
    with pytest.raises(WitValueError) as info:
        decode(data[:-2], REC)
    assert str(info.value) == (
        "cannot decode point: field b: string at offset 4: length 5 exceeds the 3 byte(s) left"
    )


def test_forged_counts_allocate_nothing() -> None:
    """A count the bytes left cannot hold is refused before any list is built."""
    nested = ListType(ListType(ListType(U8)))
    with pytest.raises(WitValueError, match="count 4294967295"):
        decode(b"\xff\xff\xff\xff\x0f" + b"\x00" * 100, nested)
    with pytest.raises(WitValueError, match="count 200 needs at least 200"):
        decode(b"\xc8\x01" + b"\x00" * 100, ListType(TupleType((U8,))))


def test_decode_input_forms_and_zero_copy() -> None:
    ty = TupleType((BYTES, STRING))
    data = encode((b"\x01\x02\x03", "ok"), ty)
    assert decode(memoryview(data), ty) == (b"\x01\x02\x03", "ok")
    assert decode(bytearray(data), ty) == (b"\x01\x02\x03", "ok")
    view, text = decode(data, ty, zero_copy=True)
    assert isinstance(view, memoryview) and view.readonly and view.tobytes() == b"\x01\x02\x03"
    assert view.obj is data  # a slice of the input, not a copy
    assert text == "ok"
    buf = bytearray(data)
    view = decode(buf, ty, zero_copy=True)[0]
    assert view.readonly  # never a writable alias of the caller's buffer
    flat: bytes = bytes(data)
    grid = memoryview(flat).cast("B", [1, len(flat)])  # 2-d: read flat
    assert decode(grid, ty, zero_copy=True)[0] == b"\x01\x02\x03"
    params = (("x", BYTES),)
    assert decode_args(encode_args([b"ab"], params), params, zero_copy=True)[0] == b"ab"
    wrong: Any = "0100"
    with pytest.raises(WitValueError, match="expected bytes to decode, got str"):
        decode(wrong, U8)
    with pytest.raises(WitValueError, match="expected bytes to decode, got list"):
        decode([1] if wrong else b"", U8, zero_copy=True)


# ---------------------------------------------------------------------------- types and API


@pytest.mark.parametrize("ty", [
    OwnType("counter"),
    BorrowType("counter"),
    ListType(OwnType("counter")),
    OptionType(BorrowType("counter")),
    RecordType((("a", U8), ("c", OwnType("counter")))),
    VariantType((("a", None), ("b", OwnType("counter")))),
    ResultType(None, OwnType("counter")),
    TupleType((U8, BorrowType("counter"))),
])
def test_resources_cannot_cross_hosts(ty: WitType) -> None:
    with pytest.raises(WitValueError, match="resources cannot cross hosts: (own|borrow)<counter>"):
        codec(ty)
    with pytest.raises(WitValueError, match="resources cannot cross hosts"):
        encode(Resource("counter", 1, None), ty)
    with pytest.raises(WitValueError, match="resources cannot cross hosts"):
        decode(b"\x00", ty)
    with pytest.raises(WitValueError, match="parameter `c`: resources cannot cross hosts"):
        args_codec((("a", U8), ("c", ty)))


@pytest.mark.parametrize("ty", [
    RecordType(()), TupleType(()), VariantType(()), EnumType(()), FlagsType(()),
    ListType(RecordType(())),
])
def test_empty_aggregates_are_refused_as_wit_does(ty: WitType) -> None:
    with pytest.raises(WitValueError, match="WIT does not allow it to be empty"):
        codec(ty)


def test_args_arity_and_no_params() -> None:
    params = (("a", U8), ("b", STRING))
    with pytest.raises(WitValueError, match=r"expected 2 argument\(s\) \(a, b\), got 1"):
        encode_args([1], params)
    with pytest.raises(WitValueError, match=r"expected 0 argument\(s\) \(none\), got 1"):
        encode_args([1], ())
    assert encode_args([], ()) == b""
    assert decode_args(b"", ()) == []
    with pytest.raises(WitValueError, match="cannot decode arguments \\(\\): 1 trailing"):
        decode_args(b"\x00", ())
    with pytest.raises(WitValueError, match="argument `b`: string at offset 1: truncated"):
        decode_args(b"\x01", params)
    assert decode_args(encode_args([1, "x"], list(params)), list(params)) == [1, "x"]


def test_result_without_type_is_the_empty_payload() -> None:
    assert encode_result(None, None) == b""
    assert decode_result(b"", None) is None
    assert decode_result(memoryview(b""), None) is None
    with pytest.raises(WitValueError, match="has no result"):
        encode_result(1, None)
    with pytest.raises(WitValueError, match="2 trailing byte"):
        decode_result(b"\x00\x00", None)
    assert decode_result(encode_result([1], ListType(U16)), ListType(U16)) == [1]


def test_codecs_are_compiled_once_per_type() -> None:
    assert codec(REC) is codec(REC)
    assert codec(RecordType(REC.fields, name="point")) is codec(REC)  # an equal type
    twin = RecordType(REC.fields, name="twin")  # equal too, but errors must name it right
    assert codec(twin) is not codec(REC)
    with pytest.raises(WitValueError, match="cannot decode twin: "):
        decode(b"", twin)
    assert args_codec(PLACE_ORDER_PARAMS) is args_codec(PLACE_ORDER_PARAMS)
    assert isinstance(args_codec(list(PLACE_ORDER_PARAMS)), ArgsCodec)


def test_long_lists_and_fused_runs() -> None:
    """Multi-byte counts, and records whose numeric runs are packed together (falling back to
    field-by-field when a value is an int for a float or out of range)."""
    rec = RecordType((("a", U8), ("b", S16), ("c", F64), ("d", STRING), ("e", U64), ("f", F32)))
    values = [
        {"a": i % 256, "b": -i, "c": i / 3, "d": str(i), "e": i, "f": 0.5} for i in range(300)
    ]
    data = encode(values, ListType(rec))
    assert data[:2] == b"\xac\x02"
    assert decode(data, ListType(rec)) == values
    mixed = {"a": 1, "b": 2, "c": 3, "d": "", "e": 4, "f": 5}  # ints for the floats
    assert decode(encode(mixed, rec), rec) == {**mixed, "c": 3.0, "f": 5.0}
    with pytest.raises(WitValueError, match="field b: expected s16"):
        encode({**mixed, "b": 40000}, rec)
    with pytest.raises(WitValueError, match="field e: expected u64"):
        encode({**mixed, "e": True}, rec)
    flat = RecordType((("x", F64), ("y", F64)))
    assert decode(encode({"x": 1.0, "y": 2.0}, flat), flat) == {"x": 1.0, "y": 2.0}
    assert decode(encode([1, -2, 3], ListType(S64)), ListType(S64)) == [1, -2, 3]


def test_encoding_name() -> None:
    assert ENCODING == "trellis-wit/1"


def test_deep_types_fail_without_blowup() -> None:
    """Errors deep inside nested types are worded once per level, not re-derived per level
    (which would cost 2^depth): 60 levels of record-in-list fail at once."""
    ty: WitType = U16
    value: Any = 7
    for _ in range(60):
        ty = RecordType((("a", ListType(ty)), ("b", STRING)), name="deep")
        value = {"a": [value], "b": "x"}
    data = encode(value, ty)
    assert decode(data, ty) == value
    bad = {"a": [value["a"][0] | {"b": 1}], "b": "x"}
    with pytest.raises(WitValueError, match="record deep, field a: list element 0: record deep"):
        encode(bad, ty)
    for cut in range(len(data)):
        with pytest.raises(WitValueError, match="cannot decode deep: field [ab]: "):
            decode(data[:cut], ty)
    assert data[:62] == b"\x01" * 60 + b"\x07\x00"  # 60 counts (the last of list<u16>), a u16
    innermost = "(field a: list element 0: ){59}field a: list<u16> at offset 59: count 1"
    with pytest.raises(WitValueError, match=innermost):
        decode(data[:61], ty)
