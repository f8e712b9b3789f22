"""WAVE, the WebAssembly Value Encoding: the value syntax of ``wasmtime run --invoke``.

``format_value`` reproduces wasm-wave's writer character for character, so Trellis prints results
exactly as wasmtime does. ``parse_value`` accepts what wasm-wave's parser accepts (``//`` comments,
trailing commas, ``\"\"\"`` multiline strings, ``%``-escaped labels, flattened ``some``/``ok``,
omitted ``option`` record fields) and checks the result against the WIT type model.

Known deviations: unknown record fields and flags are rejected (wasm-wave ignores unknown record
fields); which characters a string escapes follows Python's Unicode database, which may be older
than the one in the Rust toolchain that built wasmtime.
"""

from __future__ import annotations

import math
import re
import struct
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, NoReturn

from trellis.lattice.errors import WitValueError
from trellis.lattice.wit.types import (
    INT_RANGES, BorrowType, EnumType, FlagsType, ListType, OptionType, OwnType, Primitive,
    RecordType, ResultType, TupleType, VariantType, WitType, type_label, u8_list,
)
from trellis.lattice.wit.values import Case, Err, Ok, Some

__all__ = ["format_value", "parse_value", "parse_call", "parse_args", "parse_cli_arg"]

KEYWORDS = frozenset({"true", "false", "some", "none", "ok", "err", "inf", "nan"})
MAX_DEPTH = 100  # wasm-wave's nesting limit: deeper input is rejected, not recursed into

# ---------------------------------------------------------------------------------- formatting

# Grapheme_Extend = Mn + Me + Other_Grapheme_Extend; Python exposes only the categories, so the
# spacing marks and others that Unicode lists as Other_Grapheme_Extend are spelled out here.
_OTHER_GRAPHEME_EXTEND = (
    (0x09BE, 0x09BE), (0x09D7, 0x09D7), (0x0B3E, 0x0B3E), (0x0B57, 0x0B57), (0x0BBE, 0x0BBE),
    (0x0BD7, 0x0BD7), (0x0CC2, 0x0CC2), (0x0CD5, 0x0CD6), (0x0D3E, 0x0D3E), (0x0D57, 0x0D57),
    (0x0DCF, 0x0DCF), (0x0DDF, 0x0DDF), (0x1B35, 0x1B35), (0x200C, 0x200C), (0x302E, 0x302F),
    (0xFF9E, 0xFF9F), (0x1133E, 0x1133E), (0x11357, 0x11357), (0x114B0, 0x114B0),
    (0x114BD, 0x114BD), (0x115AF, 0x115AF), (0x11930, 0x11930), (0x1D165, 0x1D165),
    (0x1D16E, 0x1D172), (0xE0020, 0xE007F),
)
_NOT_PRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})
_SIMPLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\t": "\\t", "\r": "\\r", "\n": "\\n"}


@lru_cache(maxsize=8192)
def _escape_char(ch: str) -> str:
    """One char as wasm-wave writes it: Rust's ``escape_default`` for quotes, backslash and
    tab/CR/LF, ``escape_unicode`` for controls, ``escape_debug`` (escapes grapheme extenders and
    non-printables) for everything else."""
    if ch in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[ch]
    code = ord(ch)
    if 0x20 <= code < 0x7F:
        return ch
    category = unicodedata.category(ch)
    extend = category in ("Mn", "Me") or any(lo <= code <= hi for lo, hi in _OTHER_GRAPHEME_EXTEND)
    if extend or (category in _NOT_PRINTABLE and ch != " "):
        return f"\\u{{{code:x}}}"
    return ch


def _nearest_f32(q: Fraction) -> float:
    """Round a rational to the nearest f32 (ties to even) in one step, as Rust's parser does;
    going through f64 first could round twice."""
    if q == 0:
        return 0.0
    a = abs(q)
    exp = max(a.numerator.bit_length() - a.denominator.bit_length(), -126)
    if Fraction(2) ** exp > a and exp > -126:
        exp -= 1
    ulp = Fraction(2) ** (exp - 23)
    result = round(a / ulp) * ulp
    value = math.inf if result >= 2**128 else float(result)
    return -value if q < 0 else value


def _f32_bits_value(bits: int) -> Fraction:
    return Fraction(struct.unpack("<f", struct.pack("<I", bits))[0])


def _shortest_f32(x: float) -> tuple[str, int]:
    """Shortest decimal digits (and exponent) that read back as the positive f32 ``x``, the
    closest such when several have that length: what Rust's float ``Display`` emits."""
    v = Fraction(x)
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    up = Fraction(2**128) if bits == 0x7F7FFFFF else _f32_bits_value(bits + 1)
    lo, hi = (v + _f32_bits_value(bits - 1)) / 2, (v + up) / 2
    even = bits % 2 == 0
    e10 = math.floor(math.log10(x))
    while Fraction(10) ** e10 > v:
        e10 -= 1
    while Fraction(10) ** (e10 + 1) <= v:
        e10 += 1
    for precision in range(1, 18):
        unit = Fraction(10) ** (e10 - precision + 1)
        k = math.floor(v / unit)
        fits = [c for c in (k, k + 1) if lo < c * unit < hi or (even and c * unit in (lo, hi))]
        if fits:
            best = min(fits, key=lambda c: (abs(c * unit - v), -c))
            return str(best), e10 - precision + 1
    raise AssertionError("unreachable: 17 digits always identify an f32")


def _format_float(x: float, f32: bool) -> str:
    """Rust's ``Display`` for floats: shortest round-trip digits, never an exponent, no ``.0``."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x) or x == 0:
        return ("-" if math.copysign(1.0, x) < 0 else "") + ("inf" if math.isinf(x) else "0")
    if f32:
        digits, exp = _shortest_f32(abs(x))
    else:
        mantissa, _, e = repr(abs(x)).partition("e")
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


def _mismatch(ty: WitType, value: Any, why: str = "") -> WitValueError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return WitValueError(f"expected {type_label(ty)}, got {shown}" + (f": {why}" if why else ""))


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
        x = float(v)
        if kind == "f32" and math.isfinite(x):
            x = math.copysign(_nearest_f32(Fraction(x)), x)
        return _format_float(x, kind == "f32")
    if not isinstance(v, str) or (kind == "char" and len(v) != 1):
        raise _mismatch(ty, v)
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise _mismatch(ty, v, "contains a surrogate, which is not a Unicode scalar value") from None
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
        return "(" + ", ".join(format_value(x, t) for x, t in zip(value, ty.elements)) + ")"
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
        if not isinstance(value, (set, frozenset)) or not value <= set(ty.names):
            raise _mismatch(ty, value)
        return "{" + ", ".join(n for n in ty.names if n in value) + "}"
    if isinstance(ty, (OwnType, BorrowType)):
        raise WitValueError(f"{type_label(ty)}: resource handles have no WAVE text")
    raise TypeError(f"not a WIT type: {ty!r}")


def _format_record(value: Any, ty: RecordType) -> str:
    """``{a: 1, b: 2}``; ``option`` fields that are ``none`` are left out, as wasm-wave does,
    and a record with nothing left is ``{:}`` (``{}`` is empty flags)."""
    if not isinstance(value, dict):
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
    r'|(?P<mstring>""")'
    rf'|(?P<string>"(?:[^\\"\n]|{_ESCAPE})*")'
    rf"|(?P<char>'(?:[^\\'\n]{{1,4}}|{_ESCAPE})')"
    r"|(?P<number>-inf|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
    rf"|(?P<label>%?(?:{_WORD})(?:-(?:[0-9]+(?:{_WORD})?|{_WORD}))*)"
    r"|(?P<punct>[{}()\[\]:,])"
)
_UNESCAPE = re.compile(r"""\\(?:(['"tnr\\])|u\{([0-9a-fA-F]{1,6})\}|)""")
_SIMPLE_UNESCAPES = {"'": "'", '"': '"', "t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


class _SyntaxError(Exception):
    """Malformed WAVE text; ``parse_value`` re-raises it as a WitValueError naming the type."""


@dataclass(frozen=True)
class _Token:
    kind: str  # skip-less token group name, or the punctuation character itself
    start: int
    end: int


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _SyntaxError(f"invalid token at offset {pos}: {text[pos:pos + 12]!r}")
        kind = m.lastgroup or ""
        end = m.end()
        if kind == "mstring":
            close = text.find('"""', end)
            if close < 0:
                raise _SyntaxError(f'unterminated """ string at offset {pos}')
            end = close + 3
        elif kind == "char" and text[pos + 1] != "\\" and end - pos != 3:
            raise _SyntaxError(f"more than one character in char literal at offset {pos}")
        if kind != "skip":
            tokens.append(_Token(text[pos] if kind == "punct" else kind, pos, end))
        pos = end
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


@dataclass(frozen=True)
class _Node:
    kind: str  # bool, number, char, string, tuple, list, record, flags, label, some, none, ok, err
    start: int
    end: int
    children: tuple[_Node, ...] = ()
    name: str = ""  # label / variant case / record field, with any `%` removed


class _Parser:
    """wasm-wave's grammar, untyped: the typed conversion happens afterwards on the tree."""

    def __init__(self, text: str) -> None:
        self.text, self.tokens, self.pos, self.depth = text, _lex(text), 0, 0

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
        return _Node(raw if raw in ("ok", "err") else "label", tok.start, tok.end, name=raw.lstrip("%"))

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
        shown = self.text[node.start:node.end]
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise WitValueError(f"expected {type_label(ty)}, got {shown}" + (f": {why}" if why else ""))

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
            return tuple(self.value(c, t) for c, t in zip(node.children, ty.elements))
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
                inner = raw[1:-1]
                return _unescape(inner) if inner.startswith("\\") else inner
            if kind == "string" and node.kind == "string":
                return _unescape(raw[1:-1])
            if kind == "string" and node.kind == "mstring":
                return _multiline(raw[3:-3])
            self.fail(node, ty)
        if node.kind != "number":
            self.fail(node, ty)
        if kind in INT_RANGES:
            lo, hi = INT_RANGES[kind]
            if not re.fullmatch(r"-?[0-9]+", raw) or (lo == 0 and raw.startswith("-")):
                self.fail(node, ty)
            if not lo <= int(raw) <= hi:
                self.fail(node, ty, f"out of range {lo}..={hi}")
            return int(raw)
        if raw in ("inf", "-inf", "nan") or kind == "f64":
            return float(raw)
        return math.copysign(_nearest_f32(Fraction(raw)), -1.0 if raw[0] == "-" else 1.0)


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
_CLOSERS = {"(": ")", "[": "]", "{": "}"}


def parse_call(text: str) -> tuple[str, list[str]]:
    """Split ``name(arg, …)`` into the function name and each argument's raw WAVE text.

    The split follows WAVE tokens, so commas inside strings, chars, lists, records or comments
    never split an argument; a trailing comma is allowed, as in wasm-wave. Each argument must be
    one well-formed WAVE value (its type is checked later, by ``parse_args``).
    """
    def bad(why: str) -> WitValueError:
        return WitValueError(f"invalid call expression {text!r}: {why}")

    stripped = text.strip()
    open_at = stripped.find("(")
    name = stripped[:open_at].rstrip() if open_at > 0 else ""
    if not _FUNC_NAME.fullmatch(name):
        raise bad("expected `name(arg, …)`")
    try:
        tokens = _lex(stripped[open_at:])
    except _SyntaxError as e:
        raise bad(str(e)) from None
    args: list[str] = []
    stack = [")"]
    arg: list[_Token] = []
    for tok in tokens[1:]:
        if not stack:
            raise bad(f"trailing characters at offset {open_at + tok.start}")
        if len(stack) == 1 and tok.kind in (",", ")"):
            if arg:
                args.append(stripped[open_at + arg[0].start:open_at + arg[-1].end])
            elif tok.kind == ",":
                raise bad(f"missing argument before ',' at offset {open_at + tok.start}")
            arg = []
            if tok.kind == ")":
                stack.pop()
            continue
        arg.append(tok)
        if tok.kind in _CLOSERS:
            stack.append(_CLOSERS[tok.kind])
        elif tok.kind in (")", "]", "}") and tok.kind != stack.pop():
            raise bad(f"unbalanced {tok.kind!r} at offset {open_at + tok.start}")
    if stack:
        raise bad("unbalanced brackets")
    for i, arg_text in enumerate(args):
        try:
            parser = _Parser(arg_text)
            parser.node()
            parser.finish()
        except _SyntaxError as e:
            raise bad(f"argument {i + 1}: {e}") from None
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
    for (name, ty), text in zip(params, texts):
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
    if ty == Primitive("string"):
        return text
    if ty == Primitive("char") and len(text) == 1:
        return text
    return parse_value(text, ty)
