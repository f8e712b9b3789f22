"""WIT types as JSON, so a remote caller can learn a component's signatures and encode arguments.

A host publishes ``exports_to_json(world)``; a caller in any language reads it back to build the
types that drive the value codec (``trellis.lattice.codec``). Names of records, variants, enums
and flags are kept: the codec ignores them, but error messages and printed WIT need them.

Types (``T``); ``"name"`` is optional on the four named kinds and absent when unnamed::

    bool s8 u8 s16 u16 s32 u32 s64 u64 f32 f64 char string   the bare string, e.g. "u32"
    list<T>                   {"list": T}
    option<T>                 {"option": T}
    result<O, E>              {"result": {"ok": O, "err": E}}   a key is absent where WIT has _
    tuple<A, B>               {"tuple": [A, B]}
    record point {x, y}       {"record": [["x", T], ["y", T]], "name": "point"}
    variant shape {c(T), e}   {"variant": [["c", T], ["e", null]], "name": "shape"}
    enum color {r, g}         {"enum": ["r", "g"], "name": "color"}
    flags perms {read}        {"flags": ["read"], "name": "perms"}
    own<counter> / counter    {"own": "counter"}        resources never cross hosts, but a
    borrow<counter>           {"borrow": "counter"}     signature still shows them

Functions and a component's exports::

    {"name": "greet", "params": [["who", T], ...], "result": T}     "result" absent: no result
    {"greet": F, "wasi:http/incoming-handler@0.2.0#handle": F, ...} keys as the loader builds them

Fields, cases and parameters are ``[name, type]`` pairs, not objects, so their order survives every
JSON library. Decoding treats its input as hostile: anything malformed (unknown kind, extra key,
duplicate or empty name, nesting deeper than ``MAX_DEPTH``) is a ``WitValueError`` naming the
JSON path, e.g. ``$.params[0][1].record[2][1]``. ``FORMAT`` names this format on the wire.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from trellis.lattice.errors import WitValueError

from .types import (
    PRIMITIVES,
    BorrowType,
    EnumType,
    FlagsType,
    FuncType,
    ListType,
    OptionType,
    OwnType,
    Primitive,
    RecordType,
    ResultType,
    TupleType,
    VariantType,
    WitType,
    WorldType,
)

__all__ = [
    "FORMAT",
    "MAX_DEPTH",
    "exports_from_json",
    "exports_to_json",
    "func_from_json",
    "func_to_json",
    "type_from_json",
    "type_to_json",
]

FORMAT = "trellis-typejson/1"
MAX_DEPTH = 64
"""Deepest type nesting accepted; real WIT stays far below, hostile input could recurse forever."""

Json: TypeAlias = Any
_PRIMITIVES = {kind: Primitive(kind) for kind in PRIMITIVES}


# -- to JSON -------------------------------------------------------------------------------------


def type_to_json(ty: WitType) -> Json:
    """The JSON form of a WIT type (see the module docstring)."""
    if isinstance(ty, Primitive):
        return ty.kind
    if isinstance(ty, ListType):
        return {"list": type_to_json(ty.element)}
    if isinstance(ty, OptionType):
        return {"option": type_to_json(ty.inner)}
    if isinstance(ty, ResultType):
        sides: dict[str, Json] = {}
        if ty.ok is not None:
            sides["ok"] = type_to_json(ty.ok)
        if ty.err is not None:
            sides["err"] = type_to_json(ty.err)
        return {"result": sides}
    if isinstance(ty, TupleType):
        return {"tuple": [type_to_json(t) for t in ty.elements]}
    if isinstance(ty, RecordType):
        return _named("record", [[n, type_to_json(t)] for n, t in ty.fields], ty.name)
    if isinstance(ty, VariantType):
        cases = [[n, None if t is None else type_to_json(t)] for n, t in ty.cases]
        return _named("variant", cases, ty.name)
    if isinstance(ty, EnumType):
        return _named("enum", list(ty.cases), ty.name)
    if isinstance(ty, FlagsType):
        return _named("flags", list(ty.names), ty.name)
    if isinstance(ty, OwnType):
        return {"own": ty.resource}
    if isinstance(ty, BorrowType):
        return {"borrow": ty.resource}
    raise TypeError(f"not a WIT type: {ty!r}")


def _named(kind: str, body: Json, name: str | None) -> dict[str, Json]:
    return {kind: body} if name is None else {kind: body, "name": name}


def func_to_json(func: FuncType) -> dict[str, Json]:
    """The JSON form of a function signature."""
    out: dict[str, Json] = {
        "name": func.name,
        "params": [[n, type_to_json(t)] for n, t in func.params],
    }
    if func.result is not None:
        out["result"] = type_to_json(func.result)
    return out


def exports_to_json(world: WorldType) -> dict[str, Json]:
    """Every function a component exports, keyed as ``trellis.host`` keys its functions: a root
    function by its name, an interface's as ``ns:pkg/iface@ver#func``."""
    out = {ft.name: func_to_json(ft) for ft in world.export_funcs}
    for iface in world.exports:
        for fname, ft in iface.functions.items():
            out[f"{iface.name}#{fname}"] = func_to_json(ft)
    return out


# -- from JSON -----------------------------------------------------------------------------------


def type_from_json(obj: Json) -> WitType:
    """Parse the JSON form of a WIT type.

    Raises:
        WitValueError: ``obj`` is not a well-formed type; the message names the JSON path.
    """
    return _type(obj, "$", 0)


def func_from_json(obj: Json) -> FuncType:
    """Parse the JSON form of a function signature.

    Raises:
        WitValueError: ``obj`` is not a well-formed signature; the message names the JSON path.
    """
    return _func(obj, "$")


def exports_from_json(obj: Json) -> dict[str, FuncType]:
    """Parse ``exports_to_json`` output back into ``{key: FuncType}``.

    Raises:
        WitValueError: malformed, or a key that does not end in its function's name.
    """
    exports = _object(obj, "$", "an object of exported functions")
    out: dict[str, FuncType] = {}
    for key, value in exports.items():
        path = f"$[{json.dumps(key) if isinstance(key, str) else repr(key)}]"
        if not isinstance(key, str) or not key:
            raise _bad(path, "function keys must be non-empty strings")
        func = _func(value, path)
        if key != func.name and not key.endswith(f"#{func.name}"):
            raise _bad(path, f"the key must be {func.name!r} or end in '#{func.name}'")
        out[key] = func
    return out


def _bad(path: str, problem: str) -> WitValueError:
    return WitValueError(f"bad WIT type JSON at {path}: {problem}")


def _describe(value: Json) -> str:
    """A short description of what was found; containers by kind only (they may be huge)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    text = "null" if value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _object(obj: Json, path: str, what: str) -> Mapping[str, Json]:
    if not isinstance(obj, dict):
        raise _bad(path, f"expected {what}, got {_describe(obj)}")
    return obj


def _list(obj: Json, path: str, what: str, *, min_len: int = 0) -> list[Json]:
    if not isinstance(obj, list):
        raise _bad(path, f"expected {what} (a list), got {_describe(obj)}")
    if len(obj) < min_len:
        raise _bad(path, f"expected at least {min_len} {what}")
    return obj


def _name(obj: Json, path: str, what: str) -> str:
    if not isinstance(obj, str) or not obj:
        raise _bad(path, f"expected a {what} (a non-empty string), got {_describe(obj)}")
    return obj


def _names(obj: Json, path: str, what: str) -> tuple[str, ...]:
    names = tuple(_name(n, f"{path}[{i}]", what) for i, n in enumerate(
        _list(obj, path, f"{what}s", min_len=1)))
    _unique(names, path, what)
    return names


def _unique(names: tuple[str, ...], path: str, what: str) -> None:
    if len(set(names)) != len(names):
        dup = next(n for i, n in enumerate(names) if n in names[:i])
        raise _bad(path, f"duplicate {what} {dup!r}")


def _pairs(
    obj: Json, path: str, what: str, value: Callable[[Json, str], Any], *, min_len: int
) -> tuple[tuple[str, Any], ...]:
    """``[[name, value], ...]`` with unique names: record fields, variant cases, parameters."""
    out = []
    for i, pair in enumerate(_list(obj, path, f"{what}s", min_len=min_len)):
        at = f"{path}[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise _bad(at, f"expected a [name, type] pair, got {_describe(pair)}")
        out.append((_name(pair[0], f"{at}[0]", f"{what} name"), value(pair[1], f"{at}[1]")))
    result = tuple(out)
    _unique(tuple(n for n, _ in result), path, f"{what} name")
    return result


_NAMED_KINDS = frozenset({"record", "variant", "enum", "flags"})
_KINDS = ("list", "option", "result", "tuple", "record", "variant", "enum", "flags", "own",
          "borrow")


def _type(obj: Json, path: str, depth: int) -> WitType:  # noqa: C901 - one branch per kind
    if isinstance(obj, str):
        if obj not in _PRIMITIVES:
            raise _bad(path, f"unknown primitive type {obj!r} (expected one of "
                       f"{', '.join(PRIMITIVES)})")
        return _PRIMITIVES[obj]
    if depth >= MAX_DEPTH:
        raise _bad(path, f"types nest deeper than {MAX_DEPTH} levels")
    node = _object(obj, path, "a type (a primitive name or an object)")
    kinds = [k for k in node if k in _KINDS]
    if len(kinds) != 1:
        found = ", ".join(map(repr, node)) or "none"
        raise _bad(path, f"expected exactly one of {', '.join(_KINDS)} as key, found {found}")
    kind = kinds[0]
    extra = set(node) - {kind} - ({"name"} if kind in _NAMED_KINDS else set())
    if extra:
        raise _bad(path, f"unexpected key {sorted(extra)[0]!r} in a {kind} type")
    name = _name(node["name"], f"{path}.name", "type name") if "name" in node else None
    body, at = node[kind], f"{path}.{kind}"

    def sub(o: Json, p: str) -> WitType:
        return _type(o, p, depth + 1)

    if kind == "list":
        return ListType(sub(body, at))
    if kind == "option":
        return OptionType(sub(body, at))
    if kind == "result":
        sides = _object(body, at, "an object with optional 'ok' and 'err' types")
        unknown = set(sides) - {"ok", "err"}
        if unknown:
            raise _bad(at, f"unexpected key {sorted(unknown)[0]!r} in a result type")
        ok = sub(sides["ok"], f"{at}.ok") if "ok" in sides else None
        err = sub(sides["err"], f"{at}.err") if "err" in sides else None
        return ResultType(ok, err)
    if kind == "tuple":
        items = _list(body, at, "tuple element types", min_len=1)
        return TupleType(tuple(sub(t, f"{at}[{i}]") for i, t in enumerate(items)))
    if kind == "record":
        return RecordType(_pairs(body, at, "field", sub, min_len=1), name=name)
    if kind == "variant":
        cases = _pairs(body, at, "case", lambda o, p: None if o is None else sub(o, p), min_len=1)
        return VariantType(cases, name=name)
    if kind == "enum":
        return EnumType(_names(body, at, "enum case"), name=name)
    if kind == "flags":
        return FlagsType(_names(body, at, "flag"), name=name)
    resource = _name(body, at, "resource name")
    return OwnType(resource) if kind == "own" else BorrowType(resource)


def _func(obj: Json, path: str) -> FuncType:
    node = _object(obj, path, "a function (an object with 'name' and 'params')")
    extra = set(node) - {"name", "params", "result"}
    if extra:
        raise _bad(path, f"unexpected key {sorted(extra)[0]!r} in a function")
    if "name" not in node or "params" not in node:
        raise _bad(path, "a function needs 'name' and 'params'")
    name = _name(node["name"], f"{path}.name", "function name")
    params = _pairs(node["params"], f"{path}.params", "parameter",
                    lambda o, p: _type(o, p, 0), min_len=0)
    result = node.get("result")
    return FuncType(name, params, None if result is None else _type(result, f"{path}.result", 0))
