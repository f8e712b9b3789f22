"""The fast conversion path (``trellis.host.runtime.convert``) against wasmtime-py's own.

Three kinds of evidence:

* equivalence without calling wasm: for a fixed rich corpus of WIT types (hand-picked plus
  seeded-random, nested, every kind) compiled into a dummy component by ``wasm-tools``, so that
  real wasmtime ``ValType``s exist, random values lowered by us are lifted by wasmtime-py to the
  same value and the other way round;
* round trips through our own lowerer and lifter over hypothesis-generated WIT types;
* real calls into an inline WAT component (identity functions in the canonical ABI), where
  ``FastFunc.call`` and ``Func.__call__`` must return the same results.

Run as a script for the stock-versus-fast call benchmark: ``python tests/host/test_convert.py``.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _wit_strategies import values_of, wit_types
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from trellis.host.runtime import introspect
from trellis.host.runtime.convert import FastFunc, make_lifter, make_lowerer, owns_memory
from trellis.lattice.errors import WitValueError
from trellis.lattice.wit import types as t
from trellis.lattice.wit.values import Case, Err, Ok, Resource, Some
from wasmtime import Engine, Store, WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import Component, Linker, ResourceAny, ResourceHost
from wasmtime.component import _types as wt

P = t.Primitive
HERE = Path(__file__).resolve()
SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# --- the WAT component -------------------------------------------------------------------------

# Identity functions work for many types because a lifted result may point straight at the
# argument the guest received: the bump allocator is only reset by post-return.
WAT = r"""
(component
  (import "host-inc" (func $host_inc (param "x" u32) (result u32)))
  (type $blob (resource (rep i32)))
  (core func $new (canon resource.new $blob))
  (core func $rep (canon resource.rep $blob))
  (core func $drop (canon resource.drop $blob))
  (core func $inc (canon lower (func $host_inc)))
  (core module $m
    (import "" "new" (func $new (param i32) (result i32)))
    (import "" "rep" (func $rep (param i32) (result i32)))
    (import "" "drop" (func $drop (param i32)))
    (import "" "inc" (func $inc (param i32) (result i32)))
    (memory (export "mem") 1)
    (global $bump (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32) (local $end i32)
      (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get $align) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $p) (local.get $size)))
      (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
        (then (if (i32.eq (memory.grow (i32.sub (i32.shr_u (i32.add (local.get $end)
                                                                    (i32.const 65535))
                                                           (i32.const 16))
                                                (memory.size)))
                          (i32.const -1))
                (then unreachable))))
      (global.set $bump (local.get $end))
      (local.get $p))
    (func (export "reset") (param i32) (global.set $bump (i32.const 1024)))
    (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
    (func (export "id32") (param i32) (result i32) (local.get 0))
    (func (export "id64") (param i64) (result i64) (local.get 0))
    (func (export "idf32") (param f32) (result f32) (local.get 0))
    (func (export "idf64") (param f64) (result f64) (local.get 0))
    (func (export "echo2") (param i32 i32) (result i32)
      (i32.store (i32.const 0) (local.get 0))
      (i32.store (i32.const 4) (local.get 1))
      (i32.const 0))
    (func (export "echo3") (param i32 i32 i32) (result i32)
      (i32.store (i32.const 16) (local.get 0))
      (i32.store (i32.const 20) (local.get 1))
      (i32.store (i32.const 24) (local.get 2))
      (i32.const 16))
    (func (export "make") (param i32) (result i32) (call $new (local.get 0)))
    (func (export "peek") (param i32) (result i32) (local.get 0))
    (func (export "take") (param $h i32) (result i32) (local $r i32)
      (local.set $r (call $rep (local.get $h)))
      (call $drop (local.get $h))
      (local.get $r))
    (func (export "call-host") (param i32) (result i32) (call $inc (local.get 0)))
    (func (export "boom") unreachable)
  )
  (core instance $i (instantiate $m (with "" (instance
    (export "new" (func $new)) (export "rep" (func $rep)) (export "drop" (func $drop))
    (export "inc" (func $inc))))))
  (type $point (record (field "a" u32) (field "b" string)))
  (export $pt "point" (type $point))
  (type $shape (variant (case "name" string) (case "size" u32) (case "none")))
  (export $sh "shape" (type $shape))
  (type $color (enum "red" "green" "blue"))
  (export $co "color" (type $color))
  (type $perms (flags "read" "write" "exec"))
  (export $pe "perms" (type $perms))
  (export $b "blob" (type $blob))
  (func (export "add") (param "a" u32) (param "b" u32) (result u32)
    (canon lift (core func $i "add")))
  (func (export "echo-bool") (param "x" bool) (result bool) (canon lift (core func $i "id32")))
  (func (export "echo-s8") (param "x" s8) (result s8) (canon lift (core func $i "id32")))
  (func (export "echo-u16") (param "x" u16) (result u16) (canon lift (core func $i "id32")))
  (func (export "echo-s32") (param "x" s32) (result s32) (canon lift (core func $i "id32")))
  (func (export "echo-u64") (param "x" u64) (result u64) (canon lift (core func $i "id64")))
  (func (export "echo-s64") (param "x" s64) (result s64) (canon lift (core func $i "id64")))
  (func (export "echo-f32") (param "x" f32) (result f32) (canon lift (core func $i "idf32")))
  (func (export "echo-f64") (param "x" f64) (result f64) (canon lift (core func $i "idf64")))
  (func (export "echo-char") (param "x" char) (result char) (canon lift (core func $i "id32")))
  (func (export "echo-enum") (param "x" $co) (result $co) (canon lift (core func $i "id32")))
  (func (export "echo-flags") (param "x" $pe) (result $pe) (canon lift (core func $i "id32")))
  (func (export "echo") (param "s" string) (result string)
    (canon lift (core func $i "echo2") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc")) (post-return (core func $i "reset"))))
  (func (export "echo-bytes") (param "b" (list u8)) (result (list u8))
    (canon lift (core func $i "echo2") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc")) (post-return (core func $i "reset"))))
  (func (export "echo-u32s") (param "b" (list u32)) (result (list u32))
    (canon lift (core func $i "echo2") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc")) (post-return (core func $i "reset"))))
  (func (export "echo-strings") (param "b" (list string)) (result (list string))
    (canon lift (core func $i "echo2") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc")) (post-return (core func $i "reset"))))
  (func (export "echo-points") (param "b" (list $pt)) (result (list $pt))
    (canon lift (core func $i "echo2") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc")) (post-return (core func $i "reset"))))
  (func (export "echo-rec") (param "p" $pt) (result $pt)
    (canon lift (core func $i "echo3") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc")) (post-return (core func $i "reset"))))
  (func (export "echo-opt") (param "o" (option string)) (result (option string))
    (canon lift (core func $i "echo3") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc")) (post-return (core func $i "reset"))))
  (func (export "echo-res") (param "r" (result string (error string)))
    (result (result string (error string)))
    (canon lift (core func $i "echo3") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc")) (post-return (core func $i "reset"))))
  (func (export "echo-tuple") (param "t" (tuple u32 string)) (result (tuple u32 string))
    (canon lift (core func $i "echo3") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc")) (post-return (core func $i "reset"))))
  (func (export "echo-shape") (param "s" $sh) (result $sh)
    (canon lift (core func $i "echo3") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc")) (post-return (core func $i "reset"))))
  (func (export "make") (param "v" u32) (result (own $b)) (canon lift (core func $i "make")))
  (func (export "peek") (param "b" (borrow $b)) (result u32) (canon lift (core func $i "peek")))
  (func (export "take") (param "b" (own $b)) (result u32) (canon lift (core func $i "take")))
  (func (export "call-host") (param "x" u32) (result u32) (canon lift (core func $i "call-host")))
  (func (export "boom") (canon lift (core func $i "boom")))
)
"""


class Unlucky(Exception):
    pass


def host_inc(store: Any, x: int) -> int:
    if x == 13:
        raise Unlucky(x)
    return x + 1


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


@pytest.fixture(scope="module")
def tiny(engine: Engine) -> Component:
    return Component(engine, WAT)


@dataclass
class Guest:
    store: Store
    instance: Any
    world: t.WorldType

    def stock(self, name: str) -> Any:
        f = self.instance.get_func(self.store, name)
        assert f is not None
        return f

    def fast(self, name: str, owner: object = None) -> FastFunc:
        ft = next(f for f in self.world.export_funcs if f.name == name)
        return FastFunc(self.stock(name), ft, owner)


def instantiate(engine: Engine, component: Component) -> Guest:
    linker = Linker(engine)
    with linker.root() as root:
        root.add_func("host-inc", host_inc)
    store = Store(engine)
    return Guest(
        store, linker.instantiate(store, component), introspect.world_type(component, engine)
    )


@pytest.fixture
def guest(engine: Engine, tiny: Component) -> Guest:
    return instantiate(engine, tiny)


@pytest.fixture(scope="module")
def shared_guest(engine: Engine, tiny: Component) -> Guest:
    """One instance for hypothesis tests (function-scoped fixtures do not mix with @given)."""
    return instantiate(engine, tiny)


# --- values: generation, stock representation, comparison --------------------------------------


@dataclass(frozen=True)
class Res:
    """A resource in a generated value, made into a fresh host handle at each use."""

    rep: int


HOST_RESOURCE_TYPE = 7


def materialize(v: Any, store: Store) -> Any:
    """Replace every ``Res`` by a ``Resource`` with a new ``ResourceAny`` (own lowering moves
    the handle, so each conversion needs its own)."""
    if isinstance(v, Res):
        handle = ResourceHost.own(v.rep, HOST_RESOURCE_TYPE).to_any(store)
        return Resource("blob", handle, None)
    if isinstance(v, list):
        return [materialize(x, store) for x in v]
    if isinstance(v, tuple):
        return tuple(materialize(x, store) for x in v)
    if isinstance(v, dict):
        return {k: materialize(x, store) for k, x in v.items()}
    if isinstance(v, Case):
        return Case(v.name, materialize(v.value, store))
    if isinstance(v, (Ok, Err, Some)):
        return type(v)(materialize(v.value, store))
    return v


def norm(v: Any, store: Store) -> Any:
    """A comparable form: resources by host rep, NaN equal to itself, wrappers tagged."""
    if isinstance(v, Resource):
        return ("res", v.handle.to_host(store).rep)
    if isinstance(v, ResourceAny):
        return ("res", v.to_host(store).rep)
    if isinstance(v, Res):
        return ("res", v.rep)
    if isinstance(v, float) and math.isnan(v):
        return ("nan",)
    if isinstance(v, list):
        return [norm(x, store) for x in v]
    if isinstance(v, tuple):
        return ("tuple", *(norm(x, store) for x in v))
    if isinstance(v, dict):
        return ("dict", *sorted((k, norm(x, store)) for k, x in v.items()))
    if isinstance(v, Case):
        return ("case", v.name, norm(v.value, store))
    if isinstance(v, (Ok, Err, Some)):
        return (type(v).__name__, norm(v.value, store))
    if isinstance(v, (set, frozenset)):
        return ("flags", *sorted(v))
    if isinstance(v, bool):
        return ("bool", v)
    return v


def values(ty: t.WitType) -> st.SearchStrategy[Any]:
    """Random Trellis values of ``ty`` (resources as ``Res`` markers)."""
    return values_of(ty, max_text=12, max_bytes=40, max_list=4,
                     resources=st.integers(1, 10_000).map(Res))


def _classes(vt: Any) -> tuple[type, ...]:
    s: set[type] = set()
    vt.add_classes(s)
    return tuple(s)


def to_stock(vt: Any, v: Any) -> Any:
    """The value wasmtime-py's ``convert_to_c`` expects for Trellis value ``v``."""
    if isinstance(vt, wt.ListType):
        el = vt.element
        return bytes(v) if isinstance(el, wt.U8) else [to_stock(el, x) for x in v]
    if isinstance(vt, wt.RecordType):
        r = wt.Record()
        for name, ft in vt.fields:
            setattr(r, name, to_stock(ft, v[name]))
        return r
    if isinstance(vt, wt.TupleType):
        return tuple(to_stock(e, x) for e, x in zip(vt.elements, v, strict=True))
    if isinstance(vt, (wt.VariantType, wt.OptionType, wt.ResultType)):
        if isinstance(vt, wt.OptionType):
            if v is None:
                tag, payload = "none", None
            else:
                tag, payload = "some", v.value if isinstance(v, Some) else v
        elif isinstance(vt, wt.ResultType):
            tag, payload = ("ok" if isinstance(v, Ok) else "err"), v.value
        else:
            tag, payload = v.name, v.value
        pty = dict(vt._cases())[tag]
        raw = None if pty is None else to_stock(pty, payload)
        return wt.Variant(tag, raw) if vt._tagged() else raw
    if isinstance(vt, wt.FlagsType):
        return set(v)
    if isinstance(vt, (wt.OwnType, wt.BorrowType)):
        return v.handle
    if isinstance(vt, (wt.F32, wt.F64)):
        return float(v)
    return v


def from_stock(vt: Any, s: Any) -> Any:
    """The Trellis value of what wasmtime-py's ``convert_from_c`` returned."""
    if isinstance(vt, wt.ListType):
        el = vt.element
        return s if isinstance(el, wt.U8) else [from_stock(el, x) for x in s]
    if isinstance(vt, wt.RecordType):
        return {name: from_stock(ft, getattr(s, name)) for name, ft in vt.fields}
    if isinstance(vt, wt.TupleType):
        return tuple(from_stock(e, x) for e, x in zip(vt.elements, s, strict=True))
    if isinstance(vt, (wt.VariantType, wt.OptionType, wt.ResultType)):
        cases = vt._cases()
        if vt._tagged():
            tag, raw = s.tag, s.payload
        else:  # untagged: the case whose Python classes match (exactly first: bool vs int)
            fits = [n for n, p in cases if (s is None if p is None else type(s) in _classes(p))]
            fits += [n for n, p in cases if p is not None and isinstance(s, _classes(p))]
            tag, raw = fits[0], s
        pty = dict(cases)[tag]
        payload = None if pty is None else from_stock(pty, raw)
        if isinstance(vt, wt.OptionType):
            if tag == "none":
                return None
            return Some(payload) if isinstance(vt.payload, wt.OptionType) else payload
        if isinstance(vt, wt.ResultType):
            return Ok(payload) if tag == "ok" else Err(payload)
        return Case(tag, payload)
    if isinstance(vt, wt.FlagsType):
        return frozenset(s)
    if isinstance(vt, (wt.OwnType, wt.BorrowType)):
        return Resource("blob", s, None)
    return s


# --- a corpus of WIT types with real wasmtime ValTypes ----------------------------------------

HAND_PICKED = [
    "bool", "s8", "u8", "s16", "u16", "s32", "u32", "s64", "u64", "f32", "f64", "char",
    "string", "list<u8>", "list<u32>", "list<s64>", "list<f32>", "list<f64>", "list<bool>",
    "list<s8>", "list<u16>", "list<char>", "list<string>", "list<list<u8>>",
    "option<u32>", "option<option<string>>", "option<option<option<u8>>>",
    "result", "result<u32>", "result<_, string>", "result<u32, u32>", "result<string, u8>",
    "result<list<u8>, option<bool>>", "tuple<u8, string, f64>", "tuple<tuple<s8>, list<u16>>",
    "own<blob>", "borrow<blob>", "list<own<blob>>", "option<own<blob>>",
]


class WitWriter:
    """Spells ``WitType``s in WIT, emitting a named definition for each record/variant/…"""

    def __init__(self) -> None:
        self.defs: list[str] = []
        self.names: list[str] = []

    def ref(self, ty: t.WitType) -> str:
        if isinstance(ty, t.Primitive):
            return ty.kind
        if isinstance(ty, t.ListType):
            return f"list<{self.ref(ty.element)}>"
        if isinstance(ty, t.OptionType):
            return f"option<{self.ref(ty.inner)}>"
        if isinstance(ty, t.TupleType):
            return f"tuple<{', '.join(self.ref(e) for e in ty.elements)}>"
        if isinstance(ty, t.ResultType):
            if ty.ok is None and ty.err is None:
                return "result"
            if ty.err is None:
                return f"result<{self.ref(ty.ok)}>"  # type: ignore[arg-type]
            ok = "_" if ty.ok is None else self.ref(ty.ok)
            return f"result<{ok}, {self.ref(ty.err)}>"
        if isinstance(ty, t.OwnType):
            return f"own<{ty.resource}>"
        if isinstance(ty, t.BorrowType):
            return f"borrow<{ty.resource}>"
        name = f"t{len(self.names)}"
        self.names.append(name)
        if isinstance(ty, t.RecordType):
            body = ", ".join(f"{n}: {self.ref(f)}" for n, f in ty.fields)
            self.defs.append(f"record {name} {{ {body} }}")
        elif isinstance(ty, t.VariantType):
            body = ", ".join(n if p is None else f"{n}({self.ref(p)})" for n, p in ty.cases)
            self.defs.append(f"variant {name} {{ {body} }}")
        elif isinstance(ty, t.EnumType):
            self.defs.append(f"enum {name} {{ {', '.join(ty.cases)} }}")
        elif isinstance(ty, t.FlagsType):
            self.defs.append(f"flags {name} {{ {', '.join(ty.names)} }}")
        else:
            raise TypeError(ty)
        return name


def random_type(rng: random.Random, depth: int = 0) -> t.WitType:
    """A seeded random WIT type, nested up to three levels, every kind represented."""
    leaves = [*t.PRIMITIVES, "own", "borrow"]
    kinds = ["list", "record", "tuple", "variant", "enum", "option", "result", "flags"]
    pick = rng.choice(leaves if depth >= 3 else leaves + kinds * 2)
    if pick in t.PRIMITIVES:
        return P(pick)
    if pick == "own":
        return t.OwnType("blob")
    if pick == "borrow":
        return t.BorrowType("blob")
    sub = lambda: random_type(rng, depth + 1)  # noqa: E731
    count = rng.randint(1, 4)
    if pick == "list":
        return t.ListType(sub())
    if pick == "record":
        return t.RecordType(tuple((f"f{i}", sub()) for i in range(count)))
    if pick == "tuple":
        return t.TupleType(tuple(sub() for _ in range(count)))
    if pick == "variant":
        return t.VariantType(
            tuple((f"c{i}", sub() if rng.random() < 0.7 else None) for i in range(count))
        )
    if pick == "enum":
        return t.EnumType(tuple(f"e{i}" for i in range(count)))
    if pick == "option":
        return t.OptionType(sub())
    if pick == "result":
        return t.ResultType(
            sub() if rng.random() < 0.7 else None, sub() if rng.random() < 0.7 else None
        )
    return t.FlagsType(tuple(f"g{i}" for i in range(rng.randint(1, 9))))


HAND_PICKED_NAMED: list[t.WitType] = [
    t.RecordType((("x", P("s32")), ("y", P("s32"))), name="point"),
    t.EnumType(("red", "green", "blue"), name="color"),
    t.FlagsType(("read", "write", "exec"), name="perms"),
    t.VariantType(
        (("circle", P("f64")), ("rect", t.RecordType((("w", P("u32")), ("h", P("u32"))))),
         ("empty", None)),
        name="shape",
    ),
    t.VariantType((("a", P("u32")), ("b", P("bool")), ("c", P("string")))),
    t.ListType(t.RecordType((("name", P("string")), ("tags", t.ListType(P("string")))))),
    t.RecordType((("res", t.OwnType("blob")), ("opt", t.OptionType(t.BorrowType("blob"))))),
]


def _strip_resource_names(ty: t.WitType | None) -> Any:
    """World-level functions see their resources as ``resource`` (the name lives in the
    interface), so types are compared with resource names blanked."""
    r = _strip_resource_names
    if ty is None or isinstance(ty, (t.Primitive, t.EnumType, t.FlagsType)):
        return ty
    if isinstance(ty, (t.OwnType, t.BorrowType)):
        return type(ty)("resource")
    if isinstance(ty, t.ListType):
        return t.ListType(r(ty.element))
    if isinstance(ty, t.OptionType):
        return t.OptionType(r(ty.inner))
    if isinstance(ty, t.ResultType):
        return t.ResultType(r(ty.ok), r(ty.err))
    if isinstance(ty, t.TupleType):
        return t.TupleType(tuple(r(e) for e in ty.elements))
    if isinstance(ty, t.RecordType):
        return t.RecordType(tuple((n, r(f)) for n, f in ty.fields))
    return t.VariantType(tuple((n, r(p)) for n, p in ty.cases))


@dataclass
class Entry:
    wit: t.WitType  # as introspected (what production code compiles)
    vt: Any  # wasmtime-py's ValType of the same type

    def __repr__(self) -> str:
        return t.type_label(self.wit)


def _wasm_tools() -> str | None:
    local = Path(sys.executable).parent / "wasm-tools"
    return str(local) if local.exists() else shutil.which("wasm-tools")


@pytest.fixture(scope="module")
def corpus(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> list[Entry]:
    tool = _wasm_tools()
    if tool is None:
        pytest.skip("wasm-tools is not installed")
    rng = random.Random(20240605)
    generated = [random_type(rng) for _ in range(60)]
    writer = WitWriter()
    lines = [f"  export h{i}: func(x: {s});" for i, s in enumerate(HAND_PICKED)]
    for i, ty in enumerate([*HAND_PICKED_NAMED, *generated]):
        lines.append(f"  export g{i}: func(x: {writer.ref(ty)});")
    uses = ", ".join(["blob", *writer.names])
    wit = "\n".join([
        "package trellis:conv;",
        "interface types {",
        "  resource blob;",
        *(f"  {d}" for d in writer.defs),
        "}",
        "world conv {",
        f"  use types.{{{uses}}};",
        *lines,
        "}",
    ])
    root = tmp_path_factory.mktemp("corpus")
    (root / "wit").mkdir()
    (root / "wit" / "conv.wit").write_text(wit)
    core, comp = root / "core.wasm", root / "comp.wasm"
    subprocess.run(
        [tool, "component", "embed", "--dummy", str(root / "wit"), "-w", "conv", "-o", str(core)],
        check=True, capture_output=True,
    )
    subprocess.run([tool, "component", "new", str(core), "-o", str(comp)], check=True,
                   capture_output=True)
    component = Component.from_file(engine, comp)
    exports = component.type.exports(engine)
    entries: list[Entry] = []
    expected = [*(None for _ in HAND_PICKED), *HAND_PICKED_NAMED, *generated]
    names = [f"h{i}" for i in range(len(HAND_PICKED))]
    names += [f"g{i}" for i in range(len(HAND_PICKED_NAMED) + len(generated))]
    for name, want in zip(names, expected, strict=True):
        ft = exports[name].ty
        ((_, vt),) = ft.params
        wit_ty = introspect.wit_type(vt)
        if want is not None:
            assert wit_ty == _strip_resource_names(want), name
        entries.append(Entry(wit_ty, vt))
    kinds = {type(e.wit).__name__ for e in entries}
    assert kinds >= {"Primitive", "ListType", "RecordType", "TupleType", "VariantType",
                     "EnumType", "OptionType", "ResultType", "FlagsType", "OwnType",
                     "BorrowType"}
    return entries


@pytest.fixture(scope="module")
def store(engine: Engine) -> Store:
    return Store(engine)


def test_corpus_is_rich(corpus: list[Entry]) -> None:
    def depth(ty: t.WitType | None) -> int:
        if ty is None or isinstance(ty, (t.Primitive, t.EnumType, t.FlagsType, t.OwnType,
                                         t.BorrowType)):
            return 0
        if isinstance(ty, t.ListType):
            return 1 + depth(ty.element)
        if isinstance(ty, t.OptionType):
            return 1 + depth(ty.inner)
        if isinstance(ty, t.ResultType):
            return 1 + max(depth(ty.ok), depth(ty.err))
        if isinstance(ty, t.TupleType):
            return 1 + max(depth(e) for e in ty.elements)
        if isinstance(ty, t.RecordType):
            return 1 + max(depth(f) for _, f in ty.fields)
        assert isinstance(ty, t.VariantType)
        return 1 + max(depth(p) for _, p in ty.cases)

    assert len(corpus) > 100
    assert max(depth(e.wit) for e in corpus) >= 3


# --- equivalence with wasmtime-py, no wasm involved -------------------------------------------


def _stock_roundtrips(entry: Entry, v: Any, store: Store) -> bool:
    """wasmtime-py guesses untagged variant cases from Python classes (``True`` is an ``int``),
    so some values cannot survive its own round trip; those say nothing about the fast path."""
    c = ffi.wasmtime_component_val_t()
    entry.vt.convert_to_c(store, to_stock(entry.vt, materialize(v, store)), ctypes.pointer(c))
    back = from_stock(entry.vt, entry.vt.convert_from_c(c))
    return bool(norm(back, store) == norm(v, store))


@SETTINGS
@given(data=st.data())
def test_fast_lower_then_stock_lift(corpus: list[Entry], store: Store, data: Any) -> None:
    entry = data.draw(st.sampled_from(corpus))
    v = data.draw(values(entry.wit))
    c = ffi.wasmtime_component_val_t()
    make_lowerer(entry.wit)(store, materialize(v, store), ctypes.pointer(c))
    got = from_stock(entry.vt, entry.vt.convert_from_c(c))
    assert norm(got, store) == norm(v, store)


@SETTINGS
@given(data=st.data())
def test_stock_lower_then_fast_lift(corpus: list[Entry], store: Store, data: Any) -> None:
    entry = data.draw(st.sampled_from(corpus))
    v = data.draw(values(entry.wit))
    assume(_stock_roundtrips(entry, v, store))
    c = ffi.wasmtime_component_val_t()
    entry.vt.convert_to_c(store, to_stock(entry.vt, materialize(v, store)), ctypes.pointer(c))
    got = make_lifter(entry.wit)(c)
    assert c.kind == 0 or not owns_memory(entry.wit)  # consumed
    assert norm(got, store) == norm(v, store)


@SETTINGS
@given(data=st.data())
def test_corpus_round_trip(corpus: list[Entry], store: Store, data: Any) -> None:
    entry = data.draw(st.sampled_from(corpus))
    v = data.draw(values(entry.wit))
    c = ffi.wasmtime_component_val_t()
    make_lowerer(entry.wit)(store, materialize(v, store), c)
    assert norm(make_lifter(entry.wit)(c), store) == norm(v, store)


# --- round trips over hypothesis-generated types -----------------------------------------------

def _unique_names(n: int) -> tuple[str, ...]:
    return tuple(f"n{i}" for i in range(n))


random_types = wit_types(
    labels=st.sampled_from(_unique_names(4)), max_leaves=8,
    enum_names=st.integers(1, 5).map(_unique_names),
    flag_names=st.integers(1, 12).map(_unique_names), resources=["blob"],
)


@SETTINGS
@given(data=st.data())
def test_round_trip_random_types(store: Store, data: Any) -> None:
    ty = data.draw(random_types)
    v = data.draw(values(ty))
    lower, lift = make_lowerer(ty), make_lifter(ty)
    c = ffi.wasmtime_component_val_t()
    lower(store, materialize(v, store), ctypes.pointer(c))
    assert norm(lift(c), store) == norm(v, store)
    assert c.kind == 0 or not owns_memory(ty)


def test_lifted_resources_carry_owner(store: Store) -> None:
    ty = t.ListType(t.OwnType("blob"))
    owner = object()
    c = ffi.wasmtime_component_val_t()
    make_lowerer(ty)(store, materialize([Res(3), Res(4)], store), c)
    got = make_lifter(ty, owner)(c)
    assert [(r.resource, r.owner, r.handle.to_host(store).rep) for r in got] == [
        ("blob", owner, 3), ("blob", owner, 4)
    ]


def test_own_moves_the_handle_and_borrow_lends_it(store: Store) -> None:
    r = materialize(Res(9), store)
    c = ffi.wasmtime_component_val_t()
    make_lowerer(t.BorrowType("blob"))(store, r, c)
    make_lifter(t.BorrowType("blob"))(c)
    assert r.handle.to_host(store).rep == 9  # still ours
    make_lowerer(t.OwnType("blob"))(store, r, c)
    make_lifter(t.OwnType("blob"))(c)
    with pytest.raises(WitValueError, match="already moved"):
        make_lowerer(t.OwnType("blob"))(store, r, ffi.wasmtime_component_val_t())


def test_bytes_inputs_and_outputs(store: Store) -> None:
    ty = t.ListType(P("u8"))
    lower, lift = make_lowerer(ty), make_lifter(ty)
    payload = bytes(range(256)) * 3
    for given_ in (payload, bytearray(payload), memoryview(payload), memoryview(payload)[::2]):
        c = ffi.wasmtime_component_val_t()
        lower(store, given_, c)
        got = lift(c)
        assert type(got) is bytes and got == bytes(given_)
    c = ffi.wasmtime_component_val_t()
    lower(store, memoryview(bytearray(b"\x01\x00\x02\x00")).cast("H"), c)
    assert lift(c) == b"\x01\x00\x02\x00"


def test_numeric_lists_fall_back_for_odd_values(store: Store) -> None:
    """Values ``array`` refuses or the type check sends away still convert (or fail)
    exactly like single values."""
    for ty, v, want in [
        (t.ListType(P("f32")), [1, 2.5, 1e300], [1.0, 2.5, math.inf]),
        (t.ListType(P("f64")), (1, 2), [1.0, 2.0]),
        (t.ListType(P("s64")), [-(2**63), 2**63 - 1], [-(2**63), 2**63 - 1]),
        (t.ListType(P("bool")), [True, False], [True, False]),
    ]:
        c = ffi.wasmtime_component_val_t()
        make_lowerer(ty)(store, v, c)
        assert make_lifter(ty)(c) == want


# --- error messages ----------------------------------------------------------------------------

POINT = t.RecordType((("x", P("s32")), ("y", P("u8"))), name="point")


@pytest.mark.parametrize(
    ("ty", "value", "message"),
    [
        (P("u8"), 300, "expected u8 (0..255), got 300"),
        (P("u8"), -1, "expected u8 (0..255), got -1"),
        (P("s8"), 128, "expected s8 (-128..127), got 128"),
        (P("u32"), True, "expected u32 (0..4294967295), got bool True"),
        (P("u64"), 1.0, "expected u64 (0..18446744073709551615), got 1.0"),
        (P("s64"), "3", "expected s64 (-9223372036854775808..9223372036854775807), got str '3'"),
        (P("f32"), False, "expected f32 (a float), got bool False"),
        (P("f64"), "1.5", "expected f64 (a float), got str '1.5'"),
        (P("f64"), 10**400, "expected f64 (a float), got an int too large for a float"),
        (P("bool"), 1, "expected bool, got int 1"),
        (P("char"), "ab", "expected char (a str of one Unicode scalar value), got str 'ab'"),
        (P("char"), "\ud800", "expected char, got the lone surrogate U+D800"),
        (P("string"), b"x", "expected string, got bytes b'x'"),
        (P("string"), "a\udc00", "string has a lone surrogate at index 1"),
        (t.ListType(P("u8")), [1, 2], "expected bytes for list<u8>, got list [1, 2]"),
        (t.ListType(P("u16")), [1, 70000], "list element 1: expected u16 (0..65535), got 70000"),
        (t.ListType(P("u16")), [1, True], "list element 1: expected u16 (0..65535), got bool"),
        (t.ListType(P("string")), "abc", "expected a list for list<string>, got str 'abc'"),
        (t.ListType(P("string")), ["a", 1], "list element 1: expected string, got int 1"),
        (POINT, {"x": 1}, "record point: missing field y"),
        (POINT, {"x": 1, "y": 2, "z": 3}, "record point: unexpected field z"),
        (POINT, {"x": 1, "z": 3}, "record point: missing field y"),
        (POINT, {"x": 1, "y": 300}, "record point, field y: expected u8 (0..255), got 300"),
        (POINT, [1, 2], "expected a dict for record point, got list [1, 2]"),
        (t.EnumType(("a", "b")), "x", "unknown enum case 'x'; expected one of a, b"),
        (t.EnumType(("a", "b"), name="ab"), 1, "expected a case name (str) for enum ab, got int 1"),
        (t.VariantType((("a", None), ("b", P("u8")))), Case("x"),
         "unknown variant case 'x'; expected one of a, b"),
        (t.VariantType((("a", None), ("b", P("u8")))), Case("a", 1),
         "variant case a has no payload, got int 1"),
        (t.VariantType((("a", None), ("b", P("u8")))), Case("b", -1),
         "variant case b: expected u8 (0..255), got -1"),
        (t.VariantType((("a", None),), name="v"), "a", "expected Case(name, value) for variant v"),
        (t.OptionType(P("u8")), Some(256), "option some: expected u8 (0..255), got 256"),
        (t.OptionType(t.OptionType(P("u8"))), 3,
         "expected None or Some(value) for option<option<u8>>, got int 3"),
        (t.ResultType(P("u8"), None), Err(3), "result err has no payload, got int 3"),
        (t.ResultType(P("u8"), P("string")), Err(3), "result err: expected string, got int 3"),
        (t.ResultType(None, None), None, "expected Ok(value) or Err(value) for result, got"),
        (t.FlagsType(("r", "w")), {"r", "x"}, "unknown flag 'x'; expected some of r, w"),
        (t.FlagsType(("r", "w"), name="p"), ["r"], "expected a set of flag names for flags p"),
        (t.TupleType((P("u8"), P("u8"))), (1,), "expected a tuple of 2 for tuple<u8, u8>"),
        (t.TupleType((P("u8"), P("u8"))), (1, 256),
         "tuple element 1: expected u8 (0..255), got 256"),
        (t.OwnType("blob"), 3, "expected a Resource handle for blob, got int 3"),
        (t.ListType(t.ListType(POINT)), [[], [{"x": 1, "y": 2}, {"x": 1, "y": -2}]],
         "list element 1: list element 1: record point, field y: expected u8 (0..255), got -2"),
    ],
)
def test_error_messages(store: Store, ty: t.WitType, value: Any, message: str) -> None:
    c = ffi.wasmtime_component_val_t()
    with pytest.raises(WitValueError) as info:
        make_lowerer(ty)(store, value, c)
    assert str(info.value).startswith(message)
    assert c.kind == 0  # a failed lowering leaves the target as it was


def test_ints_accept_int_subclasses_and_floats_accept_ints(store: Store) -> None:
    import enum

    class Level(enum.IntEnum):
        HIGH = 7

    c = ffi.wasmtime_component_val_t()
    make_lowerer(P("u8"))(store, Level.HIGH, c)
    got = make_lifter(P("u8"))(c)
    assert got == 7 and type(got) is int
    make_lowerer(P("f64"))(store, 3, c)
    assert make_lifter(P("f64"))(c) == 3.0


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_no_leaks_on_success_or_failure(store: Store) -> None:
    ty = t.ListType(t.RecordType((
        ("name", P("string")), ("tags", t.ListType(P("string"))),
        ("v", t.VariantType((("a", t.OptionType(P("string"))), ("b", None)))),
        ("r", t.ResultType(t.ListType(P("u8")), P("string"))),
        ("f", t.FlagsType(("x", "y"))), ("e", t.EnumType(("p", "q"))),
    )))
    item = {"name": "n" * 50, "tags": ["t" * 30] * 4, "v": Case("a", "s" * 40),
            "r": Ok(b"b" * 200), "f": frozenset({"x"}), "e": "q"}
    good = [item] * 8
    bad = [item] * 7 + [{**item, "e": "zzz"}]
    lower, lift = make_lowerer(ty), make_lifter(ty)

    def cycle(n: int) -> None:
        for _ in range(n):
            c = ffi.wasmtime_component_val_t()
            lower(store, good, c)
            assert lift(c) == good
            with pytest.raises(WitValueError):
                lower(store, bad, c)

    cycle(300)
    gc.collect()
    before = _rss()
    cycle(3000)  # leaking just the payload boxes (3 per item) would grow by ~3 MB
    gc.collect()
    assert _rss() - before < 1 << 20


# --- real calls ---------------------------------------------------------------------------------


def _both(g: Guest, name: str, args: list[Any]) -> tuple[Any, Any]:
    """(fast result, stock result converted to Trellis values)"""
    stock_func = g.stock(name)
    ft = stock_func.type(g.store)
    stock_args = [to_stock(vt, a) for (_, vt), a in zip(ft.params, args, strict=True)]
    stock = stock_func(g.store, *stock_args)
    fast = g.fast(name).call(g.store, args)
    return fast, from_stock(ft.result, stock)


ECHOES = {
    "echo-bool": P("bool"), "echo-s8": P("s8"), "echo-u16": P("u16"), "echo-s32": P("s32"),
    "echo-u64": P("u64"), "echo-s64": P("s64"), "echo-f32": P("f32"), "echo-f64": P("f64"),
    "echo-char": P("char"), "echo-enum": t.EnumType(("red", "green", "blue")),
    "echo-flags": t.FlagsType(("read", "write", "exec")), "echo": P("string"),
    "echo-bytes": t.ListType(P("u8")), "echo-u32s": t.ListType(P("u32")),
    "echo-strings": t.ListType(P("string")),
    "echo-points": t.ListType(t.RecordType((("a", P("u32")), ("b", P("string"))))),
    "echo-rec": t.RecordType((("a", P("u32")), ("b", P("string")))),
    "echo-opt": t.OptionType(P("string")),
    "echo-res": t.ResultType(P("string"), P("string")),
    "echo-tuple": t.TupleType((P("u32"), P("string"))),
    "echo-shape": t.VariantType((("name", P("string")), ("size", P("u32")), ("none", None))),
}


def test_wat_types_are_what_the_tests_assume(shared_guest: Guest) -> None:
    funcs = {f.name: f for f in shared_guest.world.export_funcs}
    for name, ty in ECHOES.items():
        assert funcs[name].params[0][1] == ty and funcs[name].result == ty, name


@SETTINGS
@given(data=st.data())
def test_echo_calls_agree_with_stock(shared_guest: Guest, data: Any) -> None:
    name = data.draw(st.sampled_from(sorted(ECHOES)))
    v = data.draw(values(ECHOES[name]))
    if name == "echo-f32" or name == "echo-f64":
        assume(not math.isnan(v))  # wasm may canonicalise NaN payloads; equality is moot
    fast, stock = _both(shared_guest, name, [v])
    assert norm(fast, shared_guest.store) == norm(stock, shared_guest.store) == norm(
        v, shared_guest.store
    )


@SETTINGS
@given(a=st.integers(0, 2**32 - 1), b=st.integers(0, 2**32 - 1))
def test_add_agrees_with_stock(shared_guest: Guest, a: int, b: int) -> None:
    fast, stock = _both(shared_guest, "add", [a, b])
    assert fast == stock == (a + b) % 2**32


def test_large_bytes_echo(guest: Guest) -> None:
    payload = os.urandom(200_000)
    assert guest.fast("echo-bytes").call(guest.store, [payload]) == payload
    assert guest.fast("echo-u32s").call(guest.store, [list(range(20_000))]) == list(range(20_000))


def test_resources_through_calls(guest: Guest) -> None:
    owner = object()
    make, peek, take = guest.fast("make", owner), guest.fast("peek"), guest.fast("take")
    r = make.call(guest.store, [42])
    assert isinstance(r, Resource) and r.resource == "blob" and r.owner is owner
    assert r.handle.owned
    assert peek.call(guest.store, [r]) == 42
    assert peek.call(guest.store, [r]) == 42  # a borrow leaves the handle with us
    assert take.call(guest.store, [r]) == 42
    with pytest.raises(WitValueError, match="parameter b: the blob handle was already moved"):
        take.call(guest.store, [r])
    # stock and fast handles interoperate
    stock_handle = guest.stock("make")(guest.store, 7)
    assert take.call(guest.store, [Resource("blob", stock_handle, owner)]) == 7


def test_arity_and_argument_errors(guest: Guest) -> None:
    add = guest.fast("add")
    with pytest.raises(WitValueError, match=r"^add takes 2 arguments, got 1$"):
        add.call(guest.store, [1])
    with pytest.raises(WitValueError, match=r"^parameter b: expected u32 \(0..4294967295\)"):
        add.call(guest.store, [1, -1])
    echo = guest.fast("echo-rec")
    with pytest.raises(WitValueError, match="^parameter p: record point: missing field b$"):
        echo.call(guest.store, [{"a": 1}])
    assert add.call(guest.store, (2, 3)) == 5  # the instance is unharmed


def test_failed_lowering_frees_earlier_arguments(guest: Guest) -> None:
    """The first argument (a string) is built before the second fails; it must be deleted."""
    ty = t.FuncType("f", (("s", P("string")), ("n", P("u8"))), None)
    f = FastFunc(guest.stock("add"), ty)  # never reaches the call
    for _ in range(100):
        with pytest.raises(WitValueError, match="parameter n"):
            f.call(guest.store, ["x" * 1000, 256])


def test_traps_raise_wasmtime_error(guest: Guest) -> None:
    with pytest.raises(WasmtimeError, match="unreachable"):
        guest.fast("boom").call(guest.store, [])


def test_host_exceptions_propagate_like_stock(engine: Engine, tiny: Component) -> None:
    g = instantiate(engine, tiny)
    assert g.fast("call-host").call(g.store, [5]) == 6
    with pytest.raises(Unlucky):
        g.fast("call-host").call(g.store, [13])
    g2 = instantiate(engine, tiny)
    with pytest.raises(Unlucky):
        g2.stock("call-host")(g2.store, 13)


def test_post_return_is_a_harmless_no_op(guest: Guest) -> None:
    echo = guest.fast("echo")
    for _ in range(3):
        assert echo.call(guest.store, ["hi"]) == "hi"
    echo.post_return(guest.store)
    assert echo.call(guest.store, ["again"]) == "again"


def test_fastfunc_of_introspects(guest: Guest) -> None:
    f = FastFunc.of(guest.store, guest.stock("echo-points"), "echo-points")
    pts = [{"a": 1, "b": "x"}, {"a": 2, "b": ""}]
    assert f.call(guest.store, [pts]) == pts
    assert f.type.params[0][0] == "b"


def test_owns_memory() -> None:
    assert not owns_memory(P("u64")) and owns_memory(P("string"))
    assert owns_memory(t.EnumType(("a",))) and owns_memory(t.OptionType(P("u8")))


# --- benchmark (python tests/host/test_convert.py) ---------------------------------------------


def _best(fn: Callable[[], Any], number: int, repeat: int = 7) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def _bench() -> Iterator[str]:
    from wasmtime.component import Record

    engine = Engine()
    g = instantiate(engine, Component(engine, WAT))
    rec = Record()
    rec.a, rec.b = 5, "hello"
    data = os.urandom(65536)
    cases = [
        ("add(u32, u32) -> u32", "add", [2, 3], [2, 3], 5000),
        ("echo(string), 5 chars", "echo", ["hello"], ["hello"], 5000),
        ("echo-rec(record {a: u32, b: string})", "echo-rec", [rec], [{"a": 5, "b": "hello"}],
         5000),
        ("echo-bytes(list<u8>), 64 KB", "echo-bytes", [data], [data], 10),
    ]
    for label, name, stock_args, fast_args, number in cases:
        stock_func, fast_func = g.stock(name), g.fast(name)
        assert from_stock(stock_func.type(g.store).result, stock_func(g.store, *stock_args)) == (
            fast_func.call(g.store, fast_args)
        )
        stock = _best(lambda f=stock_func, a=stock_args: f(g.store, *a),
                      max(1, number // 5) if number < 100 else number, 3 if number < 100 else 7)
        fast = _best(lambda f=fast_func, a=fast_args: f.call(g.store, a), number)
        yield f"{label:40s} stock {stock:11.1f} µs   fast {fast:8.1f} µs   ×{stock / fast:.1f}"


if __name__ == "__main__":
    for line in _bench():
        print(line, flush=True)
