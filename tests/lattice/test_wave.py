"""WAVE text: wasm-wave's writer output exactly, its parser's grammar, Trellis's value model."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from _wit_strategies import names, typed_values, wit_types
from hypothesis import given, settings
from hypothesis import strategies as st
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
from trellis.lattice.wit.wave import (
    format_value,
    parse_args,
    parse_call,
    parse_cli_arg,
    parse_value,
)

BOOL, U8, S8, U32, S64, U64 = (Primitive(k) for k in ("bool", "u8", "s8", "u32", "s64", "u64"))
F32, F64, CHAR, STRING = (Primitive(k) for k in ("f32", "f64", "char", "string"))
REC = RecordType((("a", U32), ("b", OptionType(STRING)), ("c", OptionType(U32))), name="rec")
KW_VARIANT = VariantType(
    (("none", None), ("some", U8), ("plain", None), ("inf", F32), ("other", STRING)), name="var"
)
KW_ENUM = EnumType(("ok", "err", "nan", "regular"), name="en")
FLAGS = FlagsType(("true", "b", "c"), name="fl")
OO = OptionType(OptionType(U32))


def f32(x: float) -> float:
    """``x`` rounded to the nearest f32 (inf past the f32 range)."""
    try:
        return float(struct.unpack("<f", struct.pack("<f", x))[0])
    except OverflowError:
        return math.copysign(math.inf, x)


# ------------------------------------------------------------------------------- formatting
# Every expected string below was checked against `wasmtime run --invoke` (wasmtime 49).

FORMAT_CASES: list[tuple[Any, WitType, str]] = [
    (True, BOOL, "true"),
    (False, BOOL, "false"),
    (-128, S8, "-128"),
    (255, U8, "255"),
    (2**64 - 1, U64, "18446744073709551615"),
    (-(2**63), S64, "-9223372036854775808"),
    ("x", CHAR, "'x'"),
    ("'", CHAR, "'\\''"),
    ('"', CHAR, "'\\\"'"),
    ("☃", CHAR, "'☃'"),
    ("\U0001f600", CHAR, "'\U0001f600'"),
    ("\0", CHAR, "'\\u{0}'"),
    ("", STRING, '""'),
    ("hello, world", STRING, '"hello, world"'),
    ([], ListType(STRING), "[]"),
    (["a", "b"], ListType(STRING), '["a", "b"]'),
    (b"\x01\x02\xff", ListType(U8), "[1, 2, 255]"),
    (bytearray(b"\x07"), ListType(U8), "[7]"),
    ([1, 2], ListType(U8), "[1, 2]"),
    ((1, "a"), TupleType((U8, STRING)), '(1, "a")'),
    ({"a": 1, "b": None, "c": None}, REC, "{a: 1}"),
    ({"a": 1, "b": "x", "c": 5}, REC, '{a: 1, b: some("x"), c: some(5)}'),
    ({"true": 3, "none": 4}, RecordType((("true", U8), ("none", OptionType(U8)))),
     "{true: 3, none: some(4)}"),
    ({"x": None}, RecordType((("x", OptionType(U8)),)), "{:}"),
    ({"x": Some(None)}, RecordType((("x", OO),)), "{x: some(none)}"),
    (Case("none"), KW_VARIANT, "%none"),
    (Case("some", 3), KW_VARIANT, "%some(3)"),
    (Case("inf", math.inf), KW_VARIANT, "%inf(inf)"),
    (Case("plain"), KW_VARIANT, "plain"),
    (Case("other", "s"), KW_VARIANT, 'other("s")'),
    ("nan", KW_ENUM, "%nan"),
    ("regular", KW_ENUM, "regular"),
    (frozenset({"c", "true"}), FLAGS, "{true, c}"),
    ({"b"}, FLAGS, "{b}"),
    (frozenset(), FLAGS, "{}"),
    (None, OptionType(U32), "none"),
    (7, OptionType(U32), "some(7)"),
    (None, OO, "none"),
    (Some(None), OO, "some(none)"),
    (Some(3), OO, "some(some(3))"),
    (Ok(5), ResultType(U32, STRING), "ok(5)"),
    (Err("x"), ResultType(U32, STRING), 'err("x")'),
    (Ok(), ResultType(None, None), "ok"),
    (Err(), ResultType(None, None), "err"),
    (Err("e"), ResultType(None, STRING), 'err("e")'),
    (Ok(None), ResultType(OptionType(U8), None), "ok(none)"),
    ([Ok(1), Err(None)], ListType(ResultType(U8, None)), "[ok(1), err]"),
]


@pytest.mark.parametrize(("value", "ty", "text"), FORMAT_CASES)
def test_format(value: Any, ty: WitType, text: str) -> None:
    assert format_value(value, ty) == text


@pytest.mark.parametrize(("text", "expected"), [
    ('a\tb', '"a\\tb"'),
    ("\r\n", '"\\r\\n"'),
    ("\\", '"\\\\"'),
    ("it's \"q\"", '"it\\\'s \\"q\\""'),  # wasm-wave escapes ' inside strings too
    ("\x7f\x1b\x85", '"\\u{7f}\\u{1b}\\u{85}"'),  # controls: \u{…}, lowercase, no padding
    ("e\u0301", '"e\\u{301}"'),  # grapheme extenders are escaped
    ("\u00a0\u00ad\u2028\u200b", '"\\u{a0}\\u{ad}\\u{2028}\\u{200b}"'),  # Zs, Cf, Zl
    ("\ue000\ufffe\u0378", '"\\u{e000}\\u{fffe}\\u{378}"'),  # private use, non-characters
    ("é☃😀 ", '"é☃😀 "'),
])
def test_string_escaping(text: str, expected: str) -> None:
    assert format_value(text, STRING) == expected
    assert parse_value(expected, STRING) == text


@pytest.mark.parametrize(("value", "ty", "text"), [
    (math.nan, F64, "nan"),
    (-math.nan, F32, "nan"),
    (math.inf, F64, "inf"),
    (-math.inf, F32, "-inf"),
    (0.0, F64, "0"),
    (-0.0, F64, "-0"),
    (-0.0, F32, "-0"),
    (3.0, F64, "3"),
    (3, F64, "3"),
    (-2.5, F64, "-2.5"),
    (1e300, F64, "1" + "0" * 300),
    (1.5e-7, F64, "0.00000015"),
    (5e-324, F64, "0." + "0" * 323 + "5"),
    (0.1, F64, "0.1"),
    (f32(0.1), F32, "0.1"),
    (0.1, F32, "0.1"),  # not exactly an f32: rounded to one first, as wasmtime would
    (f32(1 / 3), F32, "0.33333334"),
    (16777217.0, F32, "16777216"),
    (f32(3.4028235e38), F32, "340282350000000000000000000000000000000"),
    (1e39, F32, "inf"),
    (f32(1e-45), F32, "0." + "0" * 44 + "1"),
    (f32(1.17549435e-38), F32, "0.000000000000000000000000000000000000011754944"),
    (2.0**-149 * 3, F32, "0.000000000000000000000000000000000000000000004"),
    # ties between two shortest candidates go up in Rust (Python's repr would pick the even one)
    (1125899906842624.25, F64, "1125899906842624.3"),
    (353106.625, F32, "353106.63"),
    (2008745.25, F32, "2008745.3"),
    (f32(2.0**127), F32, "170141180000000000000000000000000000000"),  # power of two: lopsided
])
def test_format_float(value: float, ty: WitType, text: str) -> None:
    assert format_value(value, ty) == text


@pytest.mark.parametrize(("value", "ty", "message"), [
    (256, U8, "expected u8, got 256: out of range 0..=255"),
    (-1, U32, "out of range"),
    (True, U8, "expected u8, got True"),
    (1.0, U8, "expected u8, got 1.0"),
    (1, BOOL, "expected bool"),
    ("ab", CHAR, "expected char, got 'ab'"),
    ("\ud800", STRING, "surrogate"),
    ("1", F64, "expected f64"),
    ({"a": 1}, RecordType((("a", U8), ("b", U8))), "missing field `b`"),
    ({"a": 1, "z": 2}, RecordType((("a", U8),)), "unknown field `z`"),
    (Case("nope"), KW_VARIANT, "expected var"),
    (Case("plain", 1), KW_VARIANT, "case `plain` has no payload"),
    ("x", KW_ENUM, "expected en"),
    ({"zz"}, FLAGS, "expected fl"),
    (3, OO, "Some"),
    (Ok(1), ResultType(None, None), "`ok` has no payload"),
    ((1,), TupleType((U8, U8)), "expected tuple<u8, u8>"),
    (Resource("counter", 1, None), OwnType("counter"), "resource"),
])
def test_format_rejects(value: Any, ty: WitType, message: str) -> None:
    with pytest.raises(WitValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        format_value(value, ty)


# ---------------------------------------------------------------------------------- parsing

@pytest.mark.parametrize(("text", "ty", "value"), [
    ("true", BOOL, True),
    (" // comment\n false // another", BOOL, False),
    ("-0", S8, 0),
    ("18446744073709551615", U64, 2**64 - 1),
    ("1.5", F64, 1.5),
    ("-1e3", F64, -1000.0),
    ("1E-2", F64, 0.01),
    ("1e400", F64, math.inf),
    ("-inf", F64, -math.inf),
    ("inf", F32, math.inf),
    ("1e50", F32, math.inf),
    ("-0", F32, -0.0),
    ("0.1", F32, f32(0.1)),
    ("16777217", F32, 16777216.0),
    ("'a'", CHAR, "a"),
    ("'\"'", CHAR, '"'),
    ("'\\''", CHAR, "'"),
    ("'\\u{1F44B}'", CHAR, "\U0001f44b"),
    ("'\t'", CHAR, "\t"),
    ('"a\\u{0}\\n"', STRING, "a\0\n"),
    ('"raw \' quote"', STRING, "raw ' quote"),
    ('"""\n  line one\n    "two"\n  """', STRING, 'line one\n  "two"'),
    ('"""\r\n  a\r\n  b\\tc\r\n  """', STRING, "a\nb\tc"),
    ('"""\n"""', STRING, ""),
    ("[1, 2, 3,]", ListType(U8), b"\x01\x02\x03"),
    ("[]", ListType(U8), b""),
    ("[[1], []]", ListType(ListType(U32)), [[1], []]),
    ("(1,)", TupleType((U8,)), (1,)),
    ("(1, \"x\",)", TupleType((U8, STRING)), (1, "x")),
    ("{a: 1}", REC, {"a": 1, "b": None, "c": None}),
    ("{c: 5, a: 1, b: \"x\"}", REC, {"a": 1, "b": "x", "c": 5}),
    ("{a: 1, b: none, c: some(2),}", REC, {"a": 1, "b": None, "c": 2}),
    ("{a: 1 c: 2}", REC, {"a": 1, "b": None, "c": 2}),  # wasm-wave lets commas be omitted
    ("{%a: 1, %c: 3}", REC, {"a": 1, "b": None, "c": 3}),
    ("{true: 3}", RecordType((("true", U8),)), {"true": 3}),
    ("{:}", RecordType((("x", OptionType(U8)),)), {"x": None}),
    ("%none", KW_VARIANT, Case("none")),
    ("%some(3)", KW_VARIANT, Case("some", 3)),
    ("%inf(nan)", KW_VARIANT, Case("inf", math.nan)),
    ("other ( \"s\" )", KW_VARIANT, Case("other", "s")),
    ("%nan", KW_ENUM, "nan"),
    ("%regular", KW_ENUM, "regular"),
    ("{c, true}", FLAGS, frozenset({"true", "c"})),
    ("{b c,}", FLAGS, frozenset({"b", "c"})),
    ("{}", FLAGS, frozenset()),
    ("{%true}", FLAGS, frozenset({"true"})),
    ("none", OptionType(U32), None),
    ("some(7)", OptionType(U32), 7),
    ("7", OptionType(U32), 7),  # a plain payload may drop its some(…)
    ("none", OO, None),
    ("some(none)", OO, Some(None)),
    ("some(some(3))", OO, Some(3)),
    ("some(3)", OO, Some(3)),
    ("ok(5)", ResultType(U32, STRING), Ok(5)),
    ("5", ResultType(U32, STRING), Ok(5)),
    ("err(\"x\")", ResultType(U32, STRING), Err("x")),
    ("ok", ResultType(None, None), Ok(None)),
    ("ok", ResultType(None, STRING), Ok(None)),
    ("err", ResultType(U8, None), Err(None)),
    ("ok(none)", ResultType(OptionType(U8), None), Ok(None)),
    ("[color-42-2A-5d, a-1b]", ListType(EnumType(("color-42-2A-5d", "a-1b"))),
     ["color-42-2A-5d", "a-1b"]),
])
def test_parse(text: str, ty: WitType, value: Any) -> None:
    assert canon(parse_value(text, ty)) == canon(value)


@pytest.mark.parametrize(("text", "ty", "message"), [
    ("256", U8, "expected u8, got 256: out of range 0..=255"),
    ("-129", S8, "out of range -128..=127"),
    ("-0", U8, "expected u8, got -0"),
    ("1.0", U32, "expected u32, got 1.0"),
    ("1e3", U32, "expected u32"),
    ("nan", S64, "expected s64"),
    ("\"1\"", U8, "expected u8"),
    ("-nan", F64, "invalid token"),
    ("%nan", F64, "expected f64"),
    ("'ab'", CHAR, "more than one character"),
    ("''", CHAR, "invalid token"),
    ("\"a", STRING, "invalid token"),
    ("\"a\nb\"", STRING, "invalid token"),
    ("\"\\u{d800}\"", STRING, "invalid character escape"),
    ("\"\\u{110000}\"", STRING, "invalid character escape"),
    ("\"\\x\"", STRING, "invalid token"),
    ('"""abc\n"""', STRING, "followed immediately by newline"),
    ('"""abc"""', STRING, "preceded only by spaces"),
    ('"""\n  a\n  x"""', STRING, "preceded only by spaces"),
    ('"""\n a\n  """', STRING, "indented at least"),
    ('"""\n  \\q\n  """', STRING, "invalid character escape"),
    ('"""\n', STRING, "invalid token"),
    ("[1, 2", ListType(U8), "unexpected end"),
    ("[1 2]", ListType(U8), "unexpected '2'"),
    ("[,]", ListType(U8), "unexpected ','"),
    ("()", TupleType((U8,)), "empty tuple"),
    ("(1, 2)", TupleType((U8,)), "2 elements, expected 1"),
    ("1 2", U8, "trailing characters"),
    ("{b: \"x\"}", REC, "missing field `a`"),
    ("{a: 1, zz: 2}", REC, "unknown field `zz`"),
    ("{a: 1, a: 2}", REC, "duplicate field 'a'"),
    ("{a: 1, %a: 2}", REC, "duplicate field 'a'"),
    ("{b, b}", FLAGS, "duplicate flag 'b'"),
    ("{b, zz}", FLAGS, "unknown flag `zz`"),
    ("{a: 1}", FLAGS, "expected fl"),
    ("none", KW_VARIANT, "expected var, got none"),  # keyword cases need their %
    ("some(1)", KW_VARIANT, "expected var"),
    ("nan", KW_ENUM, "expected en"),
    ("ok", KW_ENUM, "expected en"),
    ("missing", KW_VARIANT, "unknown case `missing`"),
    ("plain(1)", KW_VARIANT, "`plain` takes no payload"),
    ("other", KW_VARIANT, "`other` needs a payload"),
    ("regular(1)", KW_ENUM, "expected en"),
    ("3", OO, "expected option<option<u32>>"),  # only plain payloads flatten
    ("none", ResultType(OptionType(U8), None), "expected result<option<u8>>"),
    ("1", ResultType(None, U8), "expected result<_, u8>"),
    ("ok(1)", ResultType(None, U8), "`ok` takes no payload"),
    ("err", ResultType(None, U8), "`err` needs a payload"),
    ("some", OptionType(U8), "unexpected end"),
    ("none(1)", OptionType(U8), "trailing characters"),
    ("[" * 101 + "]" * 101, ListType(U8), "nesting deeper than 100"),
    ("fooBar", EnumType(("foobar",)), "trailing characters"),
    ("0", OwnType("counter"), "resource handles"),
    ("0", BorrowType("counter"), "resource handles"),
    ("@", U8, "invalid WAVE for u8: invalid token at offset 0"),
    ('"a\ud800"', STRING, "surrogate"),
    ("'\udc80'", CHAR, "surrogate"),
])
def test_parse_rejects(text: str, ty: WitType, message: str) -> None:
    with pytest.raises(WitValueError) as info:
        parse_value(text, ty)
    assert message in str(info.value)


def test_parse_value_requires_text() -> None:
    with pytest.raises(WitValueError, match="must be a str"):
        not_text: Any = 42
        parse_value(not_text, U8)


def test_nested_options_in_lists_and_records() -> None:
    ty = ListType(RecordType((("x", OO),)))
    value = [{"x": None}, {"x": Some(None)}, {"x": Some(1)}]
    text = format_value(value, ty)
    assert text == "[{:}, {x: some(none)}, {x: some(some(1))}]"
    assert parse_value(text, ty) == value


# ----------------------------------------------------------------------------- calls & args

@pytest.mark.parametrize(("text", "name", "args"), [
    ('greet("Developer")', "greet", ['"Developer"']),
    ("run()", "run", []),
    ("  run ( )  ", "run", []),
    ('pkg:ns/iface#func(1, [2, 3], {a: "x,y"})', "pkg:ns/iface#func",
     ["1", "[2, 3]", '{a: "x,y"}']),
    ("wasi:cli/run@0.2.0#run()", "wasi:cli/run@0.2.0#run", []),
    ("[method]counter.inc(5)", "[method]counter.inc", ["5"]),
    ("[constructor]counter()", "[constructor]counter", []),
    ("f(',', \"(\\\"\", ')')", "f", ["','", '"(\\""', "')'"]),
    ("f(1,)", "f", ["1"]),
    ("f(some((1, [2])), ok)", "f", ["some((1, [2]))", "ok"]),
    ("f(1 // one, two\n, 2)", "f", ["1", "2"]),
    ('f("""\n  a, b\n  """)', "f", ['"""\n  a, b\n  """']),
    ("f({a: 1, b: [x(1), y]})", "f", ["{a: 1, b: [x(1), y]}"]),
])
def test_parse_call(text: str, name: str, args: list[str]) -> None:
    assert parse_call(text) == (name, args)


@pytest.mark.parametrize(("text", "message"), [
    ("greet", "expected `name(arg, …)`"),
    ("(1)", "expected `name(arg, …)`"),
    ("gr eet(1)", "expected `name(arg, …)`"),
    ("f(1", "unexpected end of input"),
    ("f([1)", "unexpected ')' at offset 4"),
    ("f([1)]", "unexpected ')'"),
    ("f(1))", "trailing characters"),
    ("f(1) x", "trailing characters"),
    ("f(1,,2)", "unexpected ','"),
    ("f(,)", "unexpected ','"),
    ("f(\"abc)", "invalid token"),
    ("f(1 2)", "unexpected '2'"),
    ("f(@)", "invalid token at offset 2"),
    ("f(" + "[" * 101 + "]" * 101 + ")", "nesting deeper than 100"),
])
def test_parse_call_rejects(text: str, message: str) -> None:
    with pytest.raises(WitValueError) as info:
        parse_call(text)
    assert message in str(info.value)


PARAMS = (("name", STRING), ("count", U32), ("tag", OptionType(STRING)))


def test_parse_args() -> None:
    assert parse_args(['"x"', "3", '"t"'], PARAMS) == ["x", 3, "t"]
    assert parse_args(['"x"', "3"], PARAMS) == ["x", 3, None]  # trailing options may be omitted
    assert parse_args([], ()) == []


@pytest.mark.parametrize(("texts", "params", "message"), [
    (['"x"'], PARAMS, "expected 2 to 3 argument(s) (name, count, tag), got 1"),
    (['"x"', "1", "none", "2"], PARAMS, "expected 2 to 3 argument(s)"),
    (["1"], (), "expected 0 argument(s) (none), got 1"),
    ([], (("a", U8),), "expected 1 argument(s) (a), got 0"),
    (["42", "1"], PARAMS, "argument `name`: expected string, got 42"),
    (['"x"', "-1"], PARAMS, "argument `count`: expected u32, got -1"),
    (['"x"', "[1"], PARAMS, "argument `count`: invalid WAVE for u32: unexpected end"),
])
def test_parse_args_rejects(texts: list[str], params: Any, message: str) -> None:
    with pytest.raises(WitValueError) as info:
        parse_args(texts, params)
    assert message in str(info.value)


@pytest.mark.parametrize(("word", "ty", "value"), [
    ("Developer", STRING, "Developer"),
    ("hello world, [x]", STRING, "hello world, [x]"),
    ('"quoted"', STRING, '"quoted"'),  # a string word is always taken literally
    ("", STRING, ""),
    ("x", CHAR, "x"),
    ("'", CHAR, "'"),
    ("'\\n'", CHAR, "\n"),
    ("42", U32, 42),
    ("true", BOOL, True),
    ("[1,2]", ListType(U32), [1, 2]),
    ("{a: 1}", REC, {"a": 1, "b": None, "c": None}),
    ('"x"', OptionType(STRING), "x"),
    ("none", OptionType(STRING), None),
])
def test_parse_cli_arg(word: str, ty: WitType, value: Any) -> None:
    assert parse_cli_arg(word, ty) == value


@pytest.mark.parametrize(("word", "ty"), [
    ("ab", CHAR), ("", CHAR), ("x", U32), ("1.5", U8), ("caf\udce9", STRING), ("\udce9", CHAR),
])
def test_parse_cli_arg_rejects(word: str, ty: WitType) -> None:
    with pytest.raises(WitValueError):
        parse_cli_arg(word, ty)


# ---------------------------------------------------------------------------- property tests

LABELS = st.sampled_from([
    "a", "b", "x-y", "name", "v2", "HTTP", "a-1b", "color-42-2A-5d",
    "ok", "err", "some", "none", "true", "false", "inf", "nan",
])
WIT_TYPES = wit_types(
    labels=LABELS, max_leaves=8, max_tuple=3, min_record_fields=0,
    flag_names=names(LABELS, min_size=0),
)


def canon(value: Any) -> Any:
    """A form where floats compare by their text (so NaN equals NaN and -0.0 differs from 0.0)."""
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [canon(v) for v in value])
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    if isinstance(value, (Case, Ok, Err, Some)):
        return (type(value).__name__, getattr(value, "name", None), canon(value.value))
    return value


TYPED_VALUES = typed_values(WIT_TYPES, max_list=3, max_text=8, max_bytes=6)


@settings(max_examples=400, deadline=None)
@given(TYPED_VALUES)
def test_round_trip(typed: tuple[WitType, Any]) -> None:
    ty, value = typed
    text = format_value(value, ty)
    parsed = parse_value(text, ty)
    assert canon(parsed) == canon(value)
    assert format_value(parsed, ty) == text


@settings(max_examples=100, deadline=None)
@given(st.lists(TYPED_VALUES, max_size=4), st.sampled_from(["f", "pkg:ns/i@1.0.0#f"]))
def test_call_round_trip(typed: list[tuple[WitType, Any]], name: str) -> None:
    texts = [format_value(v, ty) for ty, v in typed]
    assert parse_call(f"{name}({', '.join(texts)})") == (name, texts)
    params = tuple((f"p{i}", ty) for i, (ty, _) in enumerate(typed))
    parsed = parse_args(texts, params)
    assert canon(parsed) == canon([v for _, v in typed])


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_f32_text_is_shortest_round_trip(x: float) -> None:
    text = format_value(x, F32)
    assert parse_value(text, F32) == x
    digits = text.lstrip("-").replace(".", "").strip("0") or "0"
    assert len(digits) <= 9
    assert all(f32(float(f"{x:.{p}g}")) != x for p in range(1, len(digits)))
