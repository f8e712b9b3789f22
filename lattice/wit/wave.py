"""WAVE, the WebAssembly Value Encoding: the value syntax of ``wasmtime run --invoke``.

``format_value`` reproduces wasm-wave's writer character for character, so Trellis prints results
exactly as wasmtime does. ``parse_value`` accepts what wasm-wave's parser accepts (``//`` comments,
trailing commas, ``\"\"\"`` multiline strings, ``%``-escaped labels, flattened ``some``/``ok``,
omitted ``option`` record fields) and checks the result against the WIT type model.

Deviations from wasmtime 49: unknown record fields are rejected (wasm-wave drops them) and
``%``-prefixed flag names are accepted (as wasm-wave's current source does, unlike wasmtime 49).
Which characters strings escape is pinned to wasmtime 49's Unicode 17 data; see ``_ESCAPED_TEXT``.
"""

from __future__ import annotations

import math
import re
import struct
import unicodedata
from bisect import bisect_right
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Any, NamedTuple, NoReturn

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

__all__ = ["format_value", "parse_value", "parse_call", "parse_args", "parse_cli_arg"]

KEYWORDS = frozenset({"true", "false", "some", "none", "ok", "err", "inf", "nan"})
MAX_DEPTH = 100  # wasm-wave's nesting limit: deeper input is rejected, not recursed into

# ---------------------------------------------------------------------------------- formatting

# Which characters Rust's `escape_debug` escapes: grapheme extenders (Mn, Me and the
# Other_Grapheme_Extend list, which Python does not expose) and non-printables (the categories
# below, space excepted). Python 3.11 ships Unicode 14 data; wasmtime 49's Rust uses Unicode 17,
# so the differences found by comparing every code point with `wasmtime run --invoke` are listed:
# `_ESCAPED` (extenders and Hangul fillers escaped despite their category) and `_PRINTED`
# (mostly characters assigned after Unicode 14, printed as is).
_ESCAPED_TEXT = """
    9BE 9D7 B3E B57 BBE BD7 CC0 CC2 CC7-CC8 CCA-CCB CD5-CD6 D3E D57 DCF DDF 115F-1160 1715 1734
    1B35 1B3B 1B3D 1B43-1B44 1BAA 1BF2-1BF3 200C 302E-302F 3164 A953 A9C0 FF9E-FFA0 111C0 11235
    1133E 1134D 11357 114B0 114BD 115AF 116B6 11930 1193D 16FF0-16FF1 1D165-1D166 1D16D-1D172
    E0020-E007F"""
_PRINTED_TEXT = """
    88F C5C CDC CF3 1B4E-1B4F 1B7F 1C89-1C8A 20C1 2427-2429 2B96 2FFC-2FFF 31E4-31E5 31EF A7CB-A7CF
    A7D2 A7D4 A7DA-A7DC A7F1 FBC3-FBD2 FD90-FD91 FDC8-FDCE 105C0-105F3 10940-10959 10D40-10D65
    10D6E-10D85 10D8E-10D8F 10EC2-10EC7 10ED0-10ED8 1123F-11240 11380-11389 1138B 1138E
    11390-113B5 113B7 113B9-113BA 113CA 113CC-113CD 113D1 113D3-113D5 113D7-113D8 116D0-116E3
    1171E 11B00-11B09 11B61 11B65 11B67 11BC0-11BE1 11BF0-11BF9 11DB0-11DDB 11DE0-11DE9
    11F02-11F10 11F12-11F35 11F3E-11F3F 11F43-11F59 1342F 13441-13446 13460-143FA 16100-1611D
    1612A-1612C 16130-16139 16D40-16D79 16EA0-16EB8 16EBB-16ED3 16FF2-16FF6 187F8-187FF 18CFF
    18D09-18D1E 18D80-18DF2 1B132 1B155 1CC00-1CCFC 1CD00-1CEB3 1CEBA-1CED0 1CEE0-1CEF0
    1D2C0-1D2D3 1DF25-1DF2A 1E030-1E06D 1E4D0-1E4EB 1E4F0-1E4F9 1E5D0-1E5ED 1E5F0-1E5FA 1E5FF
    1E6C0-1E6DE 1E6E0-1E6E2 1E6E4-1E6E5 1E6E7-1E6ED 1E6F0-1E6F4 1E6FE-1E6FF 1F6D8 1F6DC
    1F774-1F77F 1F7D9 1F8B2-1F8BB 1F8C0-1F8C1 1F8D0-1F8D8 1FA54-1FA57 1FA75-1FA77 1FA87-1FA8A
    1FA8E-1FA8F 1FAAD-1FAAF 1FABB-1FABF 1FAC6 1FAC8 1FACD-1FACF 1FADA-1FADC 1FADF 1FAE8-1FAEA
    1FAEF 1FAF7-1FAF8 1FBCB-1FBEF 1FBFA 2B739-2B73F 2CEA2-2CEAD 2EBF0-2EE5D 31350-33479"""
_NOT_PRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})
_SIMPLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\t": "\\t", "\r": "\\r", "\n": "\\n"}


def _ranges(text: str) -> tuple[list[int], list[int]]:
    pairs = [(int(a, 16), int(b or a, 16)) for a, _, b in (r.partition("-") for r in text.split())]
    return [a for a, _ in pairs], [b for _, b in pairs]


def _within(code: int, ranges: tuple[list[int], list[int]]) -> bool:
    i = bisect_right(ranges[0], code) - 1
    return i >= 0 and code <= ranges[1][i]


_ESCAPED, _PRINTED = _ranges(_ESCAPED_TEXT), _ranges(_PRINTED_TEXT)


@lru_cache(maxsize=8192)
def _escape_char(ch: str) -> str:
    """One char as wasm-wave writes it: Rust's ``escape_default`` for quotes, backslash and
    tab/CR/LF, ``escape_unicode`` for controls, ``escape_debug`` for everything else."""
    if ch in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[ch]
    code = ord(ch)
    if 0x20 <= code < 0x7F or _within(code, _PRINTED):
        return ch
    category = unicodedata.category(ch)
    if category in ("Mn", "Me") or category in _NOT_PRINTABLE or _within(code, _ESCAPED):
        return f"\\u{{{code:x}}}"
    return ch


def _round_f32(x: float) -> float:
    """``x`` rounded to the nearest f32 (one rounding step: ``x`` is exact in f64)."""
    try:
        return float(struct.unpack("<f", struct.pack("<f", x))[0])
    except OverflowError:
        return math.copysign(math.inf, x)


def _f32_bits(x: float) -> int:
    return int(struct.unpack("<I", struct.pack("<f", x))[0])


def _bits_f32(bits: int) -> float:
    """The f32 with these bits; the bits of infinity give 2**128, the next step above the max."""
    if bits == 0x7F800000:
        return 2.0**128
    return float(struct.unpack("<f", struct.pack("<I", bits))[0])


def _exact_f32(q: Fraction) -> float:
    """The f32 nearest to ``q`` (ties to even), computed exactly."""
    a = abs(q)
    exp = max(a.numerator.bit_length() - a.denominator.bit_length(), -126)
    if exp > -126 and Fraction(2) ** exp > a:
        exp -= 1
    ulp = Fraction(2) ** (exp - 23)
    result = round(a / ulp) * ulp
    return math.copysign(math.inf if result >= 2**128 else float(result), q)


def _parse_f32(text: str) -> float:
    """Decimal text to f32 in one rounding, as Rust parses it. Going through f64 rounds twice,
    which matters only when the f64 lands exactly halfway between two f32s."""
    y = float(text)
    r = _round_f32(y)
    if r != y and not math.isinf(y):
        bits = _f32_bits(abs(r)) if math.isfinite(r) else 0x7F800000
        other = _bits_f32(bits + 1 if abs(y) > _bits_f32(bits) else bits - 1)
        if (_bits_f32(bits) + other) / 2 == abs(y):
            return _exact_f32(Fraction(text))
    return r


def _f32_shortest(x: float) -> str:
    """Shortest scientific text that reads back as the positive finite f32 ``x`` and, among
    those, the closest to it: the digits Rust's float ``Display`` prints."""
    bits = _f32_bits(x)
    lo, hi = (x + _bits_f32(bits - 1)) / 2, (x + _bits_f32(bits + 1)) / 2  # exact in f64
    if bits & 0x7FFFFF or bits < 0x1000000:  # symmetric interval: closest p digits suffice
        for p in range(9):
            y = float(candidate := f"{x:.{p}e}")
            if y in (lo, hi):
                break  # on the boundary after rounding to f64: decide exactly below
            if lo < y < hi:
                return candidate
    v, flo, fhi, even = Fraction(x), Fraction(lo), Fraction(hi), bits % 2 == 0
    e10 = math.floor(math.log10(x)) + 1
    while Fraction(10) ** e10 > v:
        e10 -= 1
    for precision in range(1, 18):
        unit = Fraction(10) ** (e10 - precision + 1)
        k = math.floor(v / unit)
        fits = [c for c in (k, k + 1) if flo < c * unit < fhi or (even and c * unit in (flo, fhi))]
        if fits:
            return f"{min(fits, key=lambda c: abs(c * unit - v))}e{e10 - precision + 1}"
    raise AssertionError("unreachable: 17 digits always identify an f32")


def _ties_up(x: float, text: str) -> str:
    """Between two equally close shortest digit strings Rust takes the upper one, Python's repr
    and ``format`` the even one; redo those (rare) ties by rounding the exact value half up."""
    significant = len(text.partition("e")[0].replace(".", "").strip("0"))
    exact = "".join(map(str, Decimal(x).as_tuple().digits)).rstrip("0")
    if len(exact) != significant + 1 or exact[-1] != "5":
        return text
    return format(Context(prec=significant, rounding=ROUND_HALF_UP).create_decimal(x), "e")


def _format_float(x: float, f32: bool) -> str:
    """Rust's ``Display`` for floats: shortest round-trip digits, never an exponent, no ``.0``."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x) or x == 0:
        return ("-" if math.copysign(1.0, x) < 0 else "") + ("inf" if math.isinf(x) else "0")
    mantissa, _, e = _ties_up(abs(x), _f32_shortest(abs(x)) if f32 else repr(abs(x))).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits, exp = (whole + frac).lstrip("0"), int(e or 0) - len(frac)
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    if exp >= 0:
        body = stripped + "0" * exp
    elif (point := len(stripped) + exp) > 0:
        body = f"{stripped[:point]}.{stripped[point:]}"
    else:
        body = "0." + "0" * -point + stripped
    return ("-" if x < 0 else "") + body


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_scalars(text: str, ty: WitType) -> str:
    """Python strings may hold lone surrogates (``surrogateescape``); WIT strings may not."""
    if not text.isascii() and _SURROGATE.search(text):
        raise _mismatch(ty, text, "a surrogate is not a Unicode scalar value")
    return text


def _expected(ty: WitType, shown: str, why: str = "") -> WitValueError:
    """The one error shape: ``expected u8, got 300: out of range 0..=255``."""
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return WitValueError(f"expected {type_label(ty)}, got {shown}" + (f": {why}" if why else ""))


def _mismatch(ty: WitType, value: Any, why: str = "") -> WitValueError:
    return _expected(ty, repr(value), why)


def _label(name: str) -> str:
    return f"%{name}" if name in KEYWORDS else name


def _format_primitive(v: Any, ty: Primitive) -> str:
    kind = ty.kind
    if kind == "bool":
        if not isinstance(v, bool):
            raise _mismatch(ty, v)
        return "true" if v else "false"
    if kind in INT_RANGES:
        lo, hi = INT_RANGES[kind]
        if not isinstance(v, int) or isinstance(v, bool):
            raise _mismatch(ty, v)
        if not lo <= v <= hi:
            raise _mismatch(ty, v, f"out of range {lo}..={hi}")
        return str(v)
    if kind in ("f32", "f64"):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise _mismatch(ty, v)
        x = _round_f32(float(v)) if kind == "f32" else float(v)
        return _format_float(x, kind == "f32")
    if not isinstance(v, str) or (kind == "char" and len(v) != 1):
        raise _mismatch(ty, v)
    _check_scalars(v, ty)
    if kind == "char":
        return f"'{_escape_char(v)}'"
    return '"' + "".join(map(_escape_char, v)) + '"'


def format_value(value: Any, ty: WitType) -> str:
    """The WAVE text of ``value`` (Python value model) of type ``ty``, exactly as wasm-wave's
    ``to_string`` (and so ``wasmtime run --invoke``) writes it."""
    if isinstance(ty, Primitive):
        return _format_primitive(value, ty)
    if isinstance(ty, ListType):
        if u8_list(ty) and isinstance(value, (bytes, bytearray, memoryview)):
            return "[" + ", ".join(map(str, bytes(value))) + "]"
        if not isinstance(value, (list, tuple)):
            raise _mismatch(ty, value)
        return "[" + ", ".join(format_value(x, ty.element) for x in value) + "]"
    if isinstance(ty, RecordType):
        return _format_record(value, ty)
    if isinstance(ty, TupleType):
        if not isinstance(value, (tuple, list)) or len(value) != len(ty.elements):
            raise _mismatch(ty, value)
        items = (format_value(x, t) for x, t in zip(value, ty.elements, strict=True))
        return "(" + ", ".join(items) + ")"
    if isinstance(ty, VariantType):
        cases = dict(ty.cases)
        if not isinstance(value, Case) or value.name not in cases:
            raise _mismatch(ty, value)
        payload_ty = cases[value.name]
        if payload_ty is None:
            if value.value is not None:
                raise _mismatch(ty, value, f"case `{value.name}` has no payload")
            return _label(value.name)
        return f"{_label(value.name)}({format_value(value.value, payload_ty)})"
    if isinstance(ty, EnumType):
        if not isinstance(value, str) or value not in ty.cases:
            raise _mismatch(ty, value)
        return _label(value)
    if isinstance(ty, OptionType):
        if value is None:
            return "none"
        if isinstance(ty.inner, OptionType):
            if not isinstance(value, Some):
                raise _mismatch(ty, value, "a nested option's `some` must be wrapped in Some")
            value = value.value
        return f"some({format_value(value, ty.inner)})"
    if isinstance(ty, ResultType):
        if not isinstance(value, (Ok, Err)):
            raise _mismatch(ty, value)
        word, side = ("ok", ty.ok) if isinstance(value, Ok) else ("err", ty.err)
        if side is None:
            if value.value is not None:
                raise _mismatch(ty, value, f"`{word}` has no payload")
            return word
        return f"{word}({format_value(value.value, side)})"
    if isinstance(ty, FlagsType):
        if not isinstance(value, AbstractSet) or not value <= set(ty.names):
            raise _mismatch(ty, value)
        return "{" + ", ".join(n for n in ty.names if n in value) + "}"
    if isinstance(ty, (OwnType, BorrowType)):
        raise WitValueError(f"{type_label(ty)}: resource handles have no WAVE text")
    raise TypeError(f"not a WIT type: {ty!r}")


def _format_record(value: Any, ty: RecordType) -> str:
    """``{a: 1, b: 2}``; ``option`` fields that are ``none`` are left out, as wasm-wave does,
    and a record with nothing left is ``{:}`` (``{}`` is empty flags)."""
    if not isinstance(value, Mapping):
        raise _mismatch(ty, value)
    names = [n for n, _ in ty.fields]
    if missing := [n for n in names if n not in value]:
        raise _mismatch(ty, value, f"missing field `{missing[0]}`")
    if extra := [k for k in value if k not in names]:
        raise _mismatch(ty, value, f"unknown field `{extra[0]}`")
    parts = [
        f"{n}: {format_value(value[n], t)}"
        for n, t in ty.fields if not (isinstance(t, OptionType) and value[n] is None)
    ]
    return "{" + ", ".join(parts) + "}" if parts else "{:}"


# ------------------------------------------------------------------------------------- lexing

_ESCAPE = r"""\\['"tnr\\]|\\u\{[0-9a-fA-F]{1,6}\}"""
_WORD = "[a-z][a-z0-9]*|[A-Z][A-Z0-9]*"
_TOKEN = re.compile(
    r"(?P<skip>[ \t\n\r]+|//[^\n]*)"
    r'|(?P<mstring>"""[\s\S]*?""")'
    rf'|(?P<string>"(?:[^\\"\n]|{_ESCAPE})*")'
    rf"|(?P<char>'(?:[^\\'\n]{{1,4}}|{_ESCAPE})')"
    r"|(?P<number>-inf|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
    rf"|(?P<label>%?(?:{_WORD})(?:-(?:[0-9]+(?:{_WORD})?|{_WORD}))*)"
    r"|(?P<punct>[{}()\[\]:,])"
)
_INTEGER = re.compile(r"-?[0-9]+")
_UNESCAPE = re.compile(r"""\\(?:(['"tnr\\])|u\{([0-9a-fA-F]{1,6})\}|)""")
_SIMPLE_UNESCAPES = {"'": "'", '"': '"', "t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


class _SyntaxError(Exception):
    """Malformed WAVE text; ``parse_value`` re-raises it as a WitValueError naming the type."""


class _Token(NamedTuple):
    kind: str  # the token group name, or the punctuation character itself
    start: int
    end: int


def _lex(text: str, pos: int = 0) -> list[_Token]:
    tokens: list[_Token] = []
    for m in _TOKEN.finditer(text, pos):
        start, end, kind = m.start(), m.end(), m.lastgroup
        if start != pos:
            break
        pos = end
        if kind == "char" and text[start + 1] != "\\" and end - start != 3:
            raise _SyntaxError(f"more than one character in char literal at offset {start}")
        if kind != "skip":
            tokens.append(_Token(text[start] if kind == "punct" else kind or "", start, end))
    if pos != len(text):
        raise _SyntaxError(f"invalid token at offset {pos}: {text[pos:pos + 12]!r}")
    return tokens


def _unescape(s: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return _SIMPLE_UNESCAPES[m.group(1)]
        code = int(m.group(2), 16) if m.group(2) else -1
        if not (0 <= code <= 0x10FFFF) or 0xD800 <= code <= 0xDFFF:
            raise _SyntaxError(f"invalid character escape {m.group(0)!r}")
        return chr(code)

    return _UNESCAPE.sub(one, s)


def _multiline(inner: str) -> str:
    """A ``\"\"\"`` string: opening quotes end their line, the closing quotes' indent is removed
    from every line, and the newlines right after the opening and before the closing quotes are
    not part of the value."""
    lines = inner.removeprefix("\r").split("\n")
    indent = lines.pop()
    if indent.strip(" "):
        raise _SyntaxError('closing """ must be on a line preceded only by spaces')
    if not lines or lines[0]:
        raise _SyntaxError('opening """ must be followed immediately by newline')
    body = []
    for line in lines[1:]:
        if not line.startswith(indent):
            raise _SyntaxError('lines must be indented at least as much as closing """')
        body.append(_unescape(line[len(indent):].removesuffix("\r")))
    return "\n".join(body)


# ------------------------------------------------------------------------------------ parsing


@dataclass(slots=True)
class _Node:
    kind: str  # bool, number, char, string, tuple, list, record, flags, label, some, none, ok, err
    start: int
    end: int
    children: tuple[_Node, ...] = ()
    name: str = ""  # label / variant case / record field, with any `%` removed


class _Parser:
    """wasm-wave's grammar, untyped: the typed conversion happens afterwards on the tree."""

    def __init__(self, text: str, start: int = 0) -> None:
        self.text, self.tokens, self.pos, self.depth = text, _lex(text, start), 0, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos].kind if self.pos < len(self.tokens) else None

    def advance(self) -> _Token:
        if self.pos >= len(self.tokens):
            raise _SyntaxError("unexpected end of input")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def expect(self, tok: _Token, kind: str) -> _Token:
        if tok.kind != kind:
            raise _SyntaxError(f"unexpected {self.text[tok.start:tok.end]!r} at offset {tok.start}")
        return tok

    def node(self) -> _Node:
        if self.depth >= MAX_DEPTH:
            raise _SyntaxError(f"value nesting deeper than {MAX_DEPTH}")
        self.depth += 1
        try:
            return self._node(self.advance())
        finally:
            self.depth -= 1

    def _node(self, tok: _Token) -> _Node:
        if tok.kind in ("number", "char", "string", "mstring"):
            return _Node(tok.kind, tok.start, tok.end)
        if tok.kind in "([":
            close = ")" if tok.kind == "(" else "]"
            items = self.sequence(close)
            if close == ")" and not items:
                raise _SyntaxError(f"empty tuple at offset {tok.start}")
            return _Node("tuple" if close == ")" else "list", tok.start, self.end, tuple(items))
        if tok.kind == "{":
            return self.record_or_flags(tok.start)
        self.expect(tok, "label")
        raw = self.text[tok.start:tok.end]
        if raw in ("true", "false", "none"):
            return _Node("bool" if raw != "none" else "none", tok.start, tok.end, name=raw)
        if raw in ("inf", "nan"):
            return _Node("number", tok.start, tok.end)
        if raw == "some" or self.peek() == "(":
            self.expect(self.advance(), "(")
            payload = self.node()
            self.expect(self.advance(), ")")
            kind = raw if raw in ("some", "ok", "err") else "label"
            return _Node(kind, tok.start, self.end, (payload,), raw.lstrip("%"))
        kind = raw if raw in ("ok", "err") else "label"
        return _Node(kind, tok.start, tok.end, name=raw.lstrip("%"))

    @property
    def end(self) -> int:
        return self.tokens[self.pos - 1].end

    def sequence(self, close: str) -> list[_Node]:
        items: list[_Node] = []
        if self.peek() == close:
            self.advance()
            return items
        while True:
            items.append(self.node())
            tok = self.advance()
            if tok.kind == "," and self.peek() == close:
                self.advance()
                return items
            if tok.kind != ",":
                self.expect(tok, close)
                return items

    def record_or_flags(self, start: int) -> _Node:
        """``{:}`` is the empty record, ``{}`` empty flags, ``{a: …}`` a record, ``{a, b}`` flags.
        Like wasm-wave, the comma between entries may be left out."""
        tok = self.advance()
        if tok.kind == ":":
            self.expect(self.advance(), "}")
            return _Node("record", start, self.end)
        if tok.kind == "}":
            return _Node("flags", start, self.end)
        is_record = self.peek() == ":"
        entries: list[_Node] = []
        seen: set[str] = set()
        while True:
            name = self.text[tok.start:tok.end].lstrip("%")
            self.expect(tok, "label")
            if name in seen:
                what = "field" if is_record else "flag"
                raise _SyntaxError(f"duplicate {what} {name!r} at offset {tok.start}")
            seen.add(name)
            if is_record:
                self.expect(self.advance(), ":")
                entries.append(_Node("field", tok.start, self.end, (self.node(),), name))
            else:
                entries.append(_Node("label", tok.start, tok.end, name=name))
            tok = self.advance()
            if tok.kind == ",":
                tok = self.advance()
            if tok.kind == "}":
                return _Node("record" if is_record else "flags", start, tok.end, tuple(entries))

    def finish(self) -> None:
        if self.pos < len(self.tokens):
            tok = self.tokens[self.pos]
            raise _SyntaxError(f"trailing characters after value at offset {tok.start}")


class _Converter:
    """Turns a parsed tree into the Python value model, checking it against the WIT type."""

    def __init__(self, text: str) -> None:
        self.text = text

    def fail(self, node: _Node, ty: WitType, why: str = "") -> NoReturn:
        raise _expected(ty, self.text[node.start:node.end], why)

    def value(self, node: _Node, ty: WitType) -> Any:
        if isinstance(ty, Primitive):
            return self.primitive(node, ty)
        if isinstance(ty, OptionType):
            if node.kind == "none":
                return None
            if node.kind == "some":
                inner = self.value(node.children[0], ty.inner)
                return Some(inner) if isinstance(ty.inner, OptionType) else inner
            if isinstance(ty.inner, (OptionType, ResultType)):  # only plain payloads flatten
                self.fail(node, ty)
            return self.value(node, ty.inner)
        if isinstance(ty, ResultType):
            if node.kind not in ("ok", "err"):
                if ty.ok is None or isinstance(ty.ok, (OptionType, ResultType)):
                    self.fail(node, ty)
                return Ok(self.value(node, ty.ok))
            side = ty.ok if node.kind == "ok" else ty.err
            payload = self.payload(node, ty, node.kind, side)
            return Ok(payload) if node.kind == "ok" else Err(payload)
        if isinstance(ty, ListType):
            if node.kind != "list":
                self.fail(node, ty)
            items = [self.value(child, ty.element) for child in node.children]
            return bytes(items) if u8_list(ty) else items
        if isinstance(ty, TupleType):
            if node.kind != "tuple":
                self.fail(node, ty)
            if len(node.children) != len(ty.elements):
                self.fail(node, ty, f"{len(node.children)} elements, expected {len(ty.elements)}")
            return tuple(self.value(c, t) for c, t in zip(node.children, ty.elements, strict=True))
        if isinstance(ty, RecordType):
            return self.record(node, ty)
        if isinstance(ty, VariantType):
            cases = dict(ty.cases)
            if node.kind != "label":
                self.fail(node, ty)
            if node.name not in cases:
                self.fail(node, ty, f"unknown case `{node.name}`")
            return Case(node.name, self.payload(node, ty, node.name, cases[node.name]))
        if isinstance(ty, EnumType):
            if node.kind != "label" or node.children:
                self.fail(node, ty)
            if node.name not in ty.cases:
                self.fail(node, ty, f"unknown case `{node.name}`")
            return node.name
        if isinstance(ty, FlagsType):
            if node.kind != "flags":
                self.fail(node, ty)
            if unknown := [c.name for c in node.children if c.name not in ty.names]:
                self.fail(node, ty, f"unknown flag `{unknown[0]}`")
            return frozenset(c.name for c in node.children)
        if isinstance(ty, (OwnType, BorrowType)):
            raise WitValueError(f"{type_label(ty)}: resource handles have no WAVE text")
        raise TypeError(f"not a WIT type: {ty!r}")

    def payload(self, node: _Node, ty: WitType, case: str, payload_ty: WitType | None) -> Any:
        if payload_ty is None:
            if node.children:
                self.fail(node, ty, f"`{case}` takes no payload")
            return None
        if not node.children:
            self.fail(node, ty, f"`{case}` needs a payload")
        return self.value(node.children[0], payload_ty)

    def record(self, node: _Node, ty: RecordType) -> dict[str, Any]:
        if node.kind != "record":
            self.fail(node, ty)
        given = {field.name: field.children[0] for field in node.children}
        types = dict(ty.fields)
        if unknown := [name for name in given if name not in types]:
            self.fail(node, ty, f"unknown field `{unknown[0]}`")
        result: dict[str, Any] = {}
        for name, field_ty in ty.fields:
            if name in given:
                result[name] = self.value(given[name], field_ty)
            elif isinstance(field_ty, OptionType):
                result[name] = None
            else:
                self.fail(node, ty, f"missing field `{name}`")
        return result

    def primitive(self, node: _Node, ty: Primitive) -> Any:
        kind, raw = ty.kind, self.text[node.start:node.end]
        if kind == "bool":
            if node.kind != "bool":
                self.fail(node, ty)
            return node.name == "true"
        if kind in ("char", "string"):
            if kind == "char" and node.kind == "char":
                text = _unescape(raw[1:-1]) if raw[1] == "\\" else raw[1:-1]
            elif kind == "string" and node.kind in ("string", "mstring"):
                text = _unescape(raw[1:-1]) if node.kind == "string" else _multiline(raw[3:-3])
            else:
                self.fail(node, ty)
            return _check_scalars(text, ty)
        if node.kind != "number":
            self.fail(node, ty)
        if kind in INT_RANGES:
            lo, hi = INT_RANGES[kind]
            if not _INTEGER.fullmatch(raw) or (lo == 0 and raw.startswith("-")):
                self.fail(node, ty)
            if not lo <= int(raw) <= hi:
                self.fail(node, ty, f"out of range {lo}..={hi}")
            return int(raw)
        if raw in ("inf", "-inf", "nan") or kind == "f64":
            return float(raw)
        return _parse_f32(raw)


def parse_value(text: str, ty: WitType) -> Any:
    """Parse WAVE ``text`` as a value of ``ty`` into the Python value model."""
    if not isinstance(text, str):
        raise WitValueError(f"WAVE text must be a str, got {type(text).__name__}")
    try:
        parser = _Parser(text)
        node = parser.node()
        parser.finish()
        return _Converter(text).value(node, ty)
    except _SyntaxError as e:
        raise WitValueError(f"invalid WAVE for {type_label(ty)}: {e}") from None


_FUNC_NAME = re.compile(r"[A-Za-z0-9_\-.:/#@%\[\]]+")


def parse_call(text: str) -> tuple[str, list[str]]:
    """Split ``name(arg, …)`` into the function name and each argument's raw WAVE text.

    The arguments are parsed as WAVE values (untyped, as wasm-wave parses a call's parameter
    tuple), so commas inside strings, chars, lists or records never split an argument and a
    trailing comma is allowed; their types are checked later, by ``parse_args``.
    """
    stripped = text.strip()
    open_at = stripped.find("(")
    name = stripped[:open_at].rstrip() if open_at > 0 else ""
    try:
        if not _FUNC_NAME.fullmatch(name):
            raise _SyntaxError("expected `name(arg, …)`")
        parser = _Parser(stripped, open_at)
        parser.expect(parser.advance(), "(")
        args = [stripped[node.start:node.end] for node in parser.sequence(")")]
        parser.finish()
    except _SyntaxError as e:
        raise WitValueError(f"invalid call expression {text!r}: {e}") from None
    return name, args


def parse_args(texts: list[str], params: tuple[tuple[str, WitType], ...]) -> list[Any]:
    """Parse each argument text by its parameter's type. Trailing ``option`` parameters may be
    left out (they become ``None``), as wasmtime allows."""
    required = len(params)
    while required and isinstance(params[required - 1][1], OptionType):
        required -= 1
    if not required <= len(texts) <= len(params):
        names = ", ".join(n for n, _ in params) or "none"
        count = str(len(params)) if required == len(params) else f"{required} to {len(params)}"
        raise WitValueError(f"expected {count} argument(s) ({names}), got {len(texts)}")
    values: list[Any] = []
    for (name, ty), text in zip(params, texts, strict=False):
        try:
            values.append(parse_value(text, ty))
        except WitValueError as e:
            raise WitValueError(f"argument `{name}`: {e}") from None
    return values + [None] * (len(params) - len(texts))


def parse_cli_arg(text: str, ty: WitType) -> Any:
    """One plain shell word as a value of ``ty`` (``trellis run --invoke greet FILE Developer``).

    A ``string`` is the word itself, quotes and all, so any word is accepted verbatim. A ``char``
    is the one character given, or a WAVE char literal such as ``'\\n'`` when the word is
    longer. Every other type is WAVE text (``42``, ``true``, ``[1, 2]``, ``{a: 1}``).
    """
    if ty == Primitive("string") or (ty == Primitive("char") and len(text) == 1):
        return _check_scalars(text, ty)
    return parse_value(text, ty)
