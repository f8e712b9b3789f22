"""WIT types as JSON: round trips over random types, pinned forms, hostile input.

The golden forms pin the format in ``trellis.lattice.wit.typejson``'s docstring: callers in other
languages parse it, so a change that breaks one breaks them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _wit_strategies import names as label_tuples
from _wit_strategies import wit_types
from hypothesis import given
from hypothesis import strategies as st
from trellis.lattice.errors import WitValueError
from trellis.lattice.wit.typejson import (
    MAX_DEPTH,
    exports_from_json,
    exports_to_json,
    func_from_json,
    func_to_json,
    type_from_json,
    type_to_json,
)
from trellis.lattice.wit.types import (
    NAMED_TYPES,
    BorrowType,
    EnumType,
    FlagsType,
    FuncType,
    InterfaceType,
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

U32, STRING = Primitive("u32"), Primitive("string")

# ------------------------------------------------------------------------------ random types

LABELS = st.sampled_from(["a", "b", "c", "x-y", "name", "v2", "ok", "err", "none", "some"])
TYPE_NAMES = st.none() | st.sampled_from(["point", "shape", "color", "perms", "my-type"])


WIT_TYPES = wit_types(
    labels=LABELS, max_leaves=12, type_names=TYPE_NAMES,
    flag_names=label_tuples(LABELS, max_size=8), resources=["counter", "stream", "file-handle"],
)
FUNCS = st.builds(
    FuncType,
    st.sampled_from(["greet", "add", "[constructor]counter", "[method]counter.inc"]),
    st.lists(st.tuples(LABELS, WIT_TYPES), max_size=4, unique_by=lambda p: p[0]).map(tuple),
    st.none() | WIT_TYPES,
)


def names(ty: WitType | None) -> list[Any]:
    """Every type name in ``ty`` in order: equality of types ignores them, the JSON must not."""
    if ty is None or isinstance(ty, (Primitive, OwnType, BorrowType)):
        return []
    own = [ty.name] if isinstance(ty, NAMED_TYPES) else []
    if isinstance(ty, (ListType, OptionType)):
        return names(ty.element if isinstance(ty, ListType) else ty.inner)
    if isinstance(ty, ResultType):
        return names(ty.ok) + names(ty.err)
    if isinstance(ty, TupleType):
        return [n for t in ty.elements for n in names(t)]
    if isinstance(ty, RecordType):
        return own + [n for _, t in ty.fields for n in names(t)]
    if isinstance(ty, VariantType):
        return own + [n for _, t in ty.cases for n in names(t)]
    return own


def through_text(obj: Any) -> Any:
    """What the far end sees: the JSON text, parsed again."""
    return json.loads(json.dumps(obj))


@given(WIT_TYPES)
def test_type_round_trip(ty: WitType) -> None:
    obj = type_to_json(ty)
    back = type_from_json(through_text(obj))
    assert back == ty
    assert names(back) == names(ty)
    assert type_to_json(back) == obj  # stable: one JSON form per type


@given(FUNCS)
def test_func_round_trip(func: FuncType) -> None:
    back = func_from_json(through_text(func_to_json(func)))
    assert back == func
    assert [names(t) for _, t in back.params] == [names(t) for _, t in func.params]
    assert names(back.result) == names(func.result)


@given(st.lists(FUNCS, max_size=3, unique_by=lambda f: f.name),
       st.lists(st.sampled_from(["example:calc/calc@0.1.0", "wasi:http/incoming-handler@0.2.0",
                                 "local:x/y"]), max_size=2, unique=True),
       st.data())
def test_exports_round_trip(root: list[FuncType], ifaces: list[str], data: st.DataObject) -> None:
    exports = tuple(
        InterfaceType(name, functions={f.name: f for f in data.draw(
            st.lists(FUNCS, min_size=1, max_size=3, unique_by=lambda f: f.name))})
        for name in ifaces
    )
    world = WorldType(exports=exports, export_funcs=tuple(root))
    obj = exports_to_json(world)
    expected = {f.name: f for f in root} | {
        f"{i.name}#{n}": f for i in exports for n, f in i.functions.items()}
    assert exports_from_json(through_text(obj)) == expected


# ------------------------------------------------------------------------------ pinned forms

GOLDEN: list[tuple[WitType, Any]] = [
    (U32, "u32"),
    (ListType(Primitive("u8")), {"list": "u8"}),
    (OptionType(OptionType(STRING)), {"option": {"option": "string"}}),
    (ResultType(U32, STRING), {"result": {"ok": "u32", "err": "string"}}),
    (ResultType(None, STRING), {"result": {"err": "string"}}),
    (ResultType(None, None), {"result": {}}),
    (TupleType((U32, STRING)), {"tuple": ["u32", "string"]}),
    (RecordType((("x", U32), ("y", U32)), name="point"),
     {"record": [["x", "u32"], ["y", "u32"]], "name": "point"}),
    (RecordType((("x", U32),)), {"record": [["x", "u32"]]}),
    (VariantType((("c", U32), ("e", None)), name="shape"),
     {"variant": [["c", "u32"], ["e", None]], "name": "shape"}),
    (EnumType(("r", "g"), name="color"), {"enum": ["r", "g"], "name": "color"}),
    (FlagsType(("read",), name="perms"), {"flags": ["read"], "name": "perms"}),
    (OwnType("counter"), {"own": "counter"}),
    (BorrowType("counter"), {"borrow": "counter"}),
]


@pytest.mark.parametrize(("ty", "obj"), GOLDEN, ids=[json.dumps(o) for _, o in GOLDEN])
def test_golden_forms(ty: WitType, obj: Any) -> None:
    assert type_to_json(ty) == obj
    assert type_from_json(obj) == ty
    assert names(type_from_json(obj)) == names(ty)


def test_golden_function() -> None:
    func = FuncType("greet", (("who", STRING),), STRING)
    assert func_to_json(func) == {"name": "greet", "params": [["who", "string"]],
                                  "result": "string"}
    assert func_to_json(FuncType("fail", ())) == {"name": "fail", "params": []}
    assert func_from_json({"name": "fail", "params": [], "result": None}) == FuncType("fail", ())


def test_export_keys_match_the_loader(calc_wat: str, tmp_path: Path) -> None:
    """The keys are the ones ``trellis.host`` resolves functions by, for a real component."""
    from trellis.host.runtime.runtime import Runtime

    with Runtime(cache_dir=tmp_path) as rt:
        compiled = rt.load(calc_wat.encode(), name="calc").compiled
    obj = exports_to_json(compiled.world)
    assert set(obj) == set(compiled.functions) == {
        "version", "example:calc/calc@0.1.0#add", "example:calc/calc@0.1.0#greet",
        "example:calc/calc@0.1.0#fail"}
    funcs = exports_from_json(through_text(obj))
    assert funcs == {k: e.type for k, e in compiled.functions.items()}
    assert funcs["example:calc/calc@0.1.0#add"] == FuncType("add", (("a", U32), ("b", U32)), U32)


# ------------------------------------------------------------------------------ hostile input

BAD_TYPES: list[tuple[Any, str]] = [
    ("u128", "$: unknown primitive type 'u128'"),
    (None, "$: expected a type"),
    (3, "$: expected a type"),
    ({}, "$: expected exactly one of"),
    ({"list": "u8", "option": "u8"}, "$: expected exactly one of"),
    ({"list": "u8", "name": "x"}, "$: unexpected key 'name' in a list type"),
    ({"record": [["x", "u32"]], "doc": "?"}, "$: unexpected key 'doc'"),
    ({"list": {"list": "u99"}}, "$.list.list: unknown primitive type 'u99'"),
    ({"record": []}, "$.record: expected at least 1 fields"),
    ({"record": [["x"]]}, "$.record[0]: expected a [name, type] pair"),
    ({"record": [["x", "u32"], ["x", "u8"]]}, "$.record: duplicate field name 'x'"),
    ({"record": [[3, "u32"]]}, "$.record[0][0]: expected a field name"),
    ({"record": [["", "u32"]]}, "$.record[0][0]: expected a field name"),
    ({"record": {"x": "u32"}}, "$.record: expected fields (a list), got an object"),
    ({"record": [["x", "u32"]], "name": 7}, "$.name: expected a type name"),
    ({"variant": [["a", None], ["b", "nope"]]}, "$.variant[1][1]: unknown primitive"),
    ({"enum": ["a", "a"]}, "$.enum: duplicate enum case 'a'"),
    ({"enum": "a"}, "$.enum: expected enum cases (a list)"),
    ({"flags": []}, "$.flags: expected at least 1 flags"),
    ({"flags": ["r", None]}, "$.flags[1]: expected a flag"),
    ({"tuple": []}, "$.tuple: expected at least 1 tuple element types"),
    ({"result": {"ok": None}}, "$.result.ok: expected a type"),
    ({"result": {"value": "u8"}}, "$.result: unexpected key 'value'"),
    ({"result": ["u8", "u8"]}, "$.result: expected an object"),
    ({"own": ""}, "$.own: expected a resource name"),
    ({"borrow": ["counter"]}, "$.borrow: expected a resource name"),
    ({"option": {"tuple": ["u8", {"list": {"record": [["x", True]]}}]}},
     "$.option.tuple[1].list.record[0][1]: expected a type"),
]


@pytest.mark.parametrize(("obj", "message"), BAD_TYPES, ids=[m for _, m in BAD_TYPES])
def test_malformed_types_name_the_path(obj: Any, message: str) -> None:
    with pytest.raises(WitValueError, match="^bad WIT type JSON at ") as info:
        type_from_json(obj)
    assert message in str(info.value)


BAD_FUNCS: list[tuple[Any, str]] = [
    ([], "$: expected a function"),
    ({"name": "f"}, "$: a function needs 'name' and 'params'"),
    ({"name": "f", "params": [], "results": "u8"}, "$: unexpected key 'results'"),
    ({"name": "", "params": []}, "$.name: expected a function name"),
    ({"name": "f", "params": [["a", "u8"], ["a", "u8"]]}, "$.params: duplicate parameter name"),
    ({"name": "f", "params": [["a", {"list": 1}]]}, "$.params[0][1].list: expected a type"),
    ({"name": "f", "params": [], "result": "bytes"}, "$.result: unknown primitive type"),
]


@pytest.mark.parametrize(("obj", "message"), BAD_FUNCS, ids=[m for _, m in BAD_FUNCS])
def test_malformed_functions_name_the_path(obj: Any, message: str) -> None:
    with pytest.raises(WitValueError) as info:
        func_from_json(obj)
    assert message in str(info.value)


def test_malformed_exports_name_the_path() -> None:
    good = {"name": "add", "params": []}
    assert exports_from_json({"add": good, "a:b/c#add": good}).keys() == {"add", "a:b/c#add"}
    with pytest.raises(WitValueError, match=r"at \$: expected an object"):
        exports_from_json([good])
    with pytest.raises(WitValueError, match=r'at \$\["a:b/c#sub"\]: the key must be'):
        exports_from_json({"a:b/c#sub": good})
    with pytest.raises(WitValueError, match=r'at \$\["k"\]\.params\[0\]\[1\]: unknown primitive'):
        exports_from_json({"k": {"name": "k", "params": [["x", "int"]]}})
    with pytest.raises(WitValueError, match="non-empty strings"):
        exports_from_json({1: good})


def nested_lists(depth: int) -> Any:
    obj: Any = "u8"
    for _ in range(depth):
        obj = {"list": obj}
    return obj


def test_depth_limit() -> None:
    assert type_from_json(nested_lists(MAX_DEPTH)) is not None
    with pytest.raises(WitValueError, match=f"deeper than {MAX_DEPTH}"):
        type_from_json(nested_lists(MAX_DEPTH + 1))
    # far past Python's recursion limit: still our error, not RecursionError
    with pytest.raises(WitValueError, match="deeper than"):
        type_from_json(nested_lists(100_000))
    with pytest.raises(WitValueError, match=r"\$\.params\[0\]\[1\](\.list)+: .*deeper than"):
        func_from_json({"name": "f", "params": [["x", nested_lists(5000)]]})


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from(
        ["u8", "string", "list", "record", "name", "ok", "err", "x", ""]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["list", "option", "result", "tuple", "record", "variant", "enum",
                         "flags", "own", "borrow", "name", "ok", "err", "params", "x"]),
        children, max_size=3),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_arbitrary_json_parses_or_raises_wit_value_error(obj: Any) -> None:
    for parse in (type_from_json, func_from_json, exports_from_json):
        try:
            parse(obj)
        except WitValueError as exc:
            assert str(exc).startswith("bad WIT type JSON at $")
