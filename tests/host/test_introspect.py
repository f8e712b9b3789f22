"""`world_type` + `render_world` against `wasm-tools component wit`, the reference printer.

Components are dummies built from WIT with wasm-tools (no guest toolchain). Both printers' output
is parsed back by wasm-tools into its JSON resolve and reduced to plain facts (interfaces, type
definitions and function signatures, with aliases and `use`s resolved to their structure), so the
test checks that the same information comes out, and that ours is WIT a parser accepts, without
depending on layout, docs or which alias name a signature spells.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from trellis.host.runtime.introspect import func_type, interface_type, wit_type, world_type
from trellis.lattice.wit import types as t
from trellis.lattice.wit.printer import render_world
from wasmtime import Engine
from wasmtime import component as wc

WASM_TOOLS = Path(sys.executable).with_name("wasm-tools")
if not WASM_TOOLS.exists():
    WASM_TOOLS = Path(shutil.which("wasm-tools") or WASM_TOOLS)
pytestmark = pytest.mark.skipif(not WASM_TOOLS.exists(), reason="wasm-tools CLI not installed")

KINDS_WIT = """\
package test:kinds@0.1.0;

interface types {
  record point { x: s32, y: s32 }
  variant shape { circle(f64), rect(point), empty }
  enum color { red, green, blue }
  flags perms { read, write, exec }
  record keywords { %type: string, %flags: perms, %list: list<u32> }
  type size = u64;
  type pair = tuple<u32, u32>;
  type corner = point;

  resource counter {
    constructor(start: u32);
    inc: func(by: u32) -> u32;
    get: func() -> u32;
    zero: static func() -> counter;
    merge: func(other: borrow<counter>, into: counter) -> option<point>;
  }
  resource token;

  primitives: func(a: bool, b: s8, c: u8, d: s16, e: u16, f: s32, g: u32, h: s64, i: u64,
                   j: f32, k: f64, l: char, m: string) -> string;
  compound: func(a: list<u8>, b: list<list<string>>, c: tuple<u32, string, bool>,
                 d: option<option<s32>>, e: result<u32, string>, f: result, g: result<u32>,
                 h: result<_, color>) -> tuple<string>;
  named: func(p: point, s: shape, c: color, f: perms, k: keywords, z: size, q: pair,
              r: corner) -> list<shape>;
  handles: func(c: borrow<counter>, t: token) -> result<token, counter>;
  nothing: func();
  %stream: func(%type: u8) -> u8;
}

interface geometry {
  use types.{point, counter as ctr, color, size};
  record vec2 { x: s32, y: s32 }
  variant hit { miss, at(vec2), counted(ctr) }
  translate: func(p: point, by: vec2) -> point;
  paint: func(c: borrow<ctr>, col: color, s: size) -> hit;
}

world kinds {
  import types;
  import geometry;
  import logging: interface {
    use types.{color};
    enum level { debug, info, warn }
    log: func(l: level, c: color, msg: string);
  }
  use types.{point, token};
  record config { name: string, retries: u8 }
  enum mode { fast, safe }
  variant outcome { done(config), failed(string) }
  flags opts { a, b }
  resource session {
    constructor(cfg: config);
    run: func(m: mode) -> outcome;
    open: static func() -> session;
  }
  import now: func() -> u64;
  import configure: func(c: config, p: point, o: opts) -> mode;
  export start: func(args: list<string>, t: token, s: borrow<session>) -> result<outcome, string>;
  export stop: func();
  export geometry;
  export admin: interface {
    use geometry.{vec2};
    record stats { calls: u64, last: option<vec2> }
    get-stats: func() -> stats;
  }
}
"""

SHAPES_WIT = """\
package test:shapes;

/// Same names and shapes as test:kinds/types, defined independently.
interface flat {
  record point { x: s32, y: s32 }
  enum color { red, green, blue }
  resource counter { constructor(start: u32); }
  centre: func(p: point) -> color;
  fresh: func() -> counter;
}
"""

TOP_WIT = """\
package test:top;

world top {
  include test:kinds/kinds@0.1.0;
  import test:shapes/flat;
  export test:shapes/flat;
}
"""

WASI_WIT = """\
package test:wasi;

world wasi {
  include wasi:cli/imports@0.2.0;
  include wasi:http/proxy@0.2.0;
  export run: func() -> result;
}
"""

WASI_DEPS = ("cli", "clocks", "filesystem", "http", "io", "random", "sockets")


def wasm_tools(*args: str | Path) -> str:
    proc = subprocess.run([str(WASM_TOOLS), *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def build(root: Path, world: str, wit: dict[str, str], deps: tuple[str, ...] = ()) -> Path:
    """A dummy component of ``world`` (a core module with stub bodies, wrapped by wit-component).
    ``wit`` maps paths under ``wit/`` to their text; ``deps`` are WASI packages to copy in."""
    wit_dir = root / "wit"
    (wit_dir / "deps").mkdir(parents=True)
    for name, text in wit.items():
        (wit_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (wit_dir / name).write_text(text)
    if deps:
        spec = importlib.util.find_spec("spin_sdk")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("spin-sdk (source of the WASI WIT files) not installed")
        source = Path(spec.submodule_search_locations[0]) / "wit" / "deps"
        for dep in deps:
            shutil.copytree(source / dep, wit_dir / "deps" / dep)
    wasm_tools("component", "embed", "--dummy", wit_dir, "-w", world, "-o", root / "core.wasm")
    wasm_tools("component", "new", root / "core.wasm", "-o", root / "comp.wasm")
    return root / "comp.wasm"


# -- facts: what a Resolve (wasm-tools JSON) says, independent of how it was spelt ----------


def facts(resolve: dict[str, Any]) -> dict[str, Any]:
    """Imports and exports of the ``root`` world as comparable facts.

    Types are reduced to structure (aliases and ``use``s followed; a resource is identified by
    the interface that defines it), so ``use a.{x}`` vs a local copy, an alias name vs its
    target, or a made-up name for a world-level record all compare equal; type *names* are
    still compared wherever an interface exports them.
    """
    world = next(w for w in resolve["worlds"] if w["name"] == "root")
    types, ifaces, packages = resolve["types"], resolve["interfaces"], resolve["packages"]
    labels: dict[int, str] = {}
    for side in ("imports", "exports"):
        for key, item in world[side].items():
            if "interface" in item:
                iface = ifaces[item["interface"]["id"]]
                if iface["name"] is None:
                    labels[item["interface"]["id"]] = key
                else:
                    package, _, version = packages[iface["package"]]["name"].partition("@")
                    full = f"{package}/{iface['name']}" + (f"@{version}" if version else "")
                    labels[item["interface"]["id"]] = full

    def owner(o: dict[str, int] | None) -> str:
        return labels[o["interface"]] if o and "interface" in o else "world"

    def canon(ref: int | str | None) -> str:
        if ref is None:
            return "_"
        if isinstance(ref, str):
            return ref
        ty = types[ref]
        if ty["kind"] == "resource":
            return f"resource {owner(ty['owner'])}#{ty['name']}"
        ((kind, v),) = ty["kind"].items()
        if kind == "type":
            return canon(v)
        if kind == "record":
            fields = (f"{f['name']}:{canon(f['type'])}" for f in v["fields"])
            return "record{" + ",".join(fields) + "}"
        if kind == "variant":
            cases = (c["name"] + ("" if c["type"] is None else f"({canon(c['type'])})")
                     for c in v["cases"])
            return "variant{" + ",".join(cases) + "}"
        if kind == "enum":
            return "enum{" + ",".join(c["name"] for c in v["cases"]) + "}"
        if kind == "flags":
            return "flags{" + ",".join(f["name"] for f in v["flags"]) + "}"
        if kind == "handle":
            ((how, res),) = v.items()
            return f"{how}<{canon(res)}>"
        if kind in ("list", "option"):
            return f"{kind}<{canon(v)}>"
        if kind == "result":
            return f"result<{canon(v['ok'])},{canon(v['err'])}>"
        if kind == "tuple":
            return "tuple<" + ",".join(canon(e) for e in v["types"]) + ">"
        raise AssertionError(f"unexpected type kind {kind}")

    def func(f: dict[str, Any]) -> tuple[Any, ...]:
        params = tuple((p["name"], canon(p["type"])) for p in f["params"])
        return params, canon(f.get("result"))

    out: dict[str, Any] = {}
    for side in ("imports", "exports"):
        items: dict[str, Any] = {}
        world_types: list[str] = []
        for key, item in world[side].items():
            if "interface" in item:
                iface = ifaces[item["interface"]["id"]]
                items[labels[item["interface"]["id"]]] = {
                    "types": {n: canon(ty) for n, ty in iface["types"].items()},
                    "functions": {n: func(f) for n, f in iface["functions"].items()},
                }
            elif "function" in item:
                items[f"func {key}"] = func(item["function"])
            else:
                world_types.append(canon(item["type"]))
        items["world types"] = sorted(world_types)
        out[side] = items
    return out


def resolve_of(path: Path) -> dict[str, Any]:
    resolve: dict[str, Any] = json.loads(wasm_tools("component", "wit", "--json", path))
    return resolve


def printed(world: t.WorldType, root: Path) -> tuple[str, dict[str, Any]]:
    """Our WIT for ``world`` and wasm-tools' parse of it (which fails the test if invalid)."""
    text = render_world(world)
    path = root / "printed.wit"
    path.write_text(text)
    return text, resolve_of(path)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wit = {"top.wit": TOP_WIT, "deps/kinds/kinds.wit": KINDS_WIT,
           "deps/shapes/shapes.wit": SHAPES_WIT}
    return build(tmp_path_factory.mktemp("kinds"), "top", wit)


@pytest.fixture(scope="module")
def wasi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("wasi"), "wasi", {"world.wit": WASI_WIT}, WASI_DEPS)


def _name(ty: t.WitType | None) -> str | None:
    return ty.name if isinstance(ty, t.NAMED_TYPES) else None


def _load(path: Path, engine: Engine) -> t.WorldType:
    return world_type(wc.Component.from_file(engine, str(path)), engine)


# -- differential tests --------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["kinds", "wasi"])
def test_same_information_as_wasm_tools(
    fixture: str, request: pytest.FixtureRequest, engine: Engine, tmp_path: Path
) -> None:
    comp: Path = request.getfixturevalue(fixture)
    _, ours = printed(_load(comp, engine), tmp_path)
    assert facts(ours) == facts(resolve_of(comp))


def test_kinds_layout(kinds: Path, engine: Engine, tmp_path: Path) -> None:
    text, _ = printed(_load(kinds, engine), tmp_path)
    lines = [line.strip() for line in text.splitlines()]
    assert text.startswith("package root:component;\n\nworld root {\n")
    for expected in [
        "import test:kinds/types@0.1.0;",
        "import logging: interface {",
        "use test:kinds/types@0.1.0.{token, point};",
        "import now: func() -> u64;",
        "export start: func(args: list<string>, t: token, s: borrow<session>) "
        "-> result<start-result, string>;",  # made-up name
        "export stop: func();",
        "export test:kinds/geometry@0.1.0;",
        "export admin: interface {",
        "package test:kinds@0.1.0 {",
        "use types.{point, counter as ctr, color, size};",
        "resource counter {",
        "constructor(start: u32);",
        "inc: func(by: u32) -> u32;",
        "zero: static func() -> counter;",
        "merge: func(other: borrow<counter>, into: counter) -> option<point>;",
        "resource token;",
        "resource session {",
        "open: static func() -> session;",
        "record vec2 {",
        "%type: string,",
        "%stream: func(%type: u8) -> u8;",
        "type size = u64;",
        "type pair = tuple<u32, u32>;",
        "record corner {",  # really `type corner = point`: see test_types_and_functions…
        "nothing: func();",
        "compound: func(a: list<u8>, b: list<list<string>>, c: tuple<u32, string, bool>, "
        "d: option<option<s32>>, e: result<u32, string>, f: result, g: result<u32>, "
        "h: result<_, color>) -> tuple<string>;",
    ]:
        assert expected in lines, expected
    # No resource ties `admin` to geometry, so its `vec2` is a local copy, not a `use`.
    admin = lines[lines.index("export admin: interface {"):]
    assert admin[1] == "record vec2 {"
    # Imported and exported: defined once.
    assert lines.count("interface geometry {") == 1
    assert lines.count("interface flat {") == 1


def test_wasi_layout(wasi: Path, engine: Engine, tmp_path: Path) -> None:
    text, _ = printed(_load(wasi, engine), tmp_path)
    lines = [line.strip() for line in text.splitlines()]
    for expected in [
        "import wasi:cli/environment@0.2.0;",
        "export wasi:http/incoming-handler@0.2.0;",
        "export run: func() -> result;",
        "use wasi:io/streams@0.2.0.{input-stream};",
        "use wasi:io/error@0.2.0.{error as io-error};",
        "use types.{incoming-request, response-outparam};",
        "%stream: func() -> result<input-stream>;",
        "type filesize = u64;",
        "type headers = fields;",
    ]:
        assert expected in lines, expected
    # Packages come after the ones they use, as wasm-tools orders them.
    order = [line for line in lines if line.startswith("package ")]
    assert order.index("package wasi:io@0.2.0 {") < order.index("package wasi:cli@0.2.0 {")


# -- the model itself ----------------------------------------------------------------------


def test_world_type_keeps_order_and_finds_uses(wasi: Path, engine: Engine) -> None:
    comp = wc.Component.from_file(engine, str(wasi))
    world = world_type(comp, engine)
    wanted = [n for n, e in comp.type.imports(engine).items()
              if isinstance(e.ty, wc.ComponentInstanceType)]
    assert [i.name for i in world.imports] == wanted
    by_name = {i.name: i for i in world.imports}

    streams = by_name["wasi:io/streams@0.2.0"]
    assert streams.types["input-stream"] == t.OwnType("input-stream")
    assert streams.uses == {"error": ("wasi:io/error@0.2.0", "error"),
                            "pollable": ("wasi:io/poll@0.2.0", "pollable")}
    assert by_name["wasi:cli/stdin@0.2.0"].uses == {
        "input-stream": ("wasi:io/streams@0.2.0", "input-stream")}
    http = by_name["wasi:http/types@0.2.0"]
    assert http.uses["io-error"] == ("wasi:io/error@0.2.0", "error")
    # No resource links wasi:http/types to the clocks: `duration` is defined in place.
    assert "duration" not in http.uses and http.types["duration"] == t.Primitive("u64")
    assert "headers" not in http.uses and http.types["headers"] == t.OwnType("fields")
    handler = world.exports[0]
    assert handler.name == "wasi:http/incoming-handler@0.2.0"
    assert handler.uses["incoming-request"] == ("wasi:http/types@0.2.0", "incoming-request")
    assert [f.name for f in world.export_funcs] == ["run"]


def test_world_level_items(kinds: Path, engine: Engine) -> None:
    world = _load(kinds, engine)
    assert world.uses == {"token": ("test:kinds/types@0.1.0", "token"),
                          "point": ("test:kinds/types@0.1.0", "point")}
    assert world.import_types["session"] == t.OwnType("session")
    names = [f.name for f in world.import_funcs]
    assert "[constructor]session" in names and "[static]session.open" in names
    start = next(f for f in world.export_funcs if f.name == "start")
    assert start.params[1:] == (("t", t.OwnType("token")), ("s", t.BorrowType("session")))
    # A world-level record's name is not in the component: it stays anonymous in the model.
    configure = next(f for f in world.import_funcs if f.name == "configure")
    assert configure.params[0][1] == t.RecordType(
        (("name", t.Primitive("string")), ("retries", t.Primitive("u8"))))
    assert _name(configure.params[1][1]) == "point"
    # Same names and shapes in an unrelated package are not taken for uses either way.
    flat = next(i for i in world.imports if i.name == "test:shapes/flat")
    types_ = next(i for i in world.imports if i.name == "test:kinds/types@0.1.0")
    assert flat.uses == {} and types_.uses == {}


def test_types_and_functions_per_interface(kinds: Path, engine: Engine) -> None:
    world = _load(kinds, engine)
    types_ = next(i for i in world.imports if i.name == "test:kinds/types@0.1.0")
    point = t.RecordType((("x", t.Primitive("s32")), ("y", t.Primitive("s32"))), name="point")
    assert types_.types["point"] == point and _name(types_.types["point"]) == "point"
    assert types_.types["size"] == t.Primitive("u64")
    # An alias of a record is indistinguishable from a record of the same shape: wasmtime's
    # types are structural. The model defines it under its own name.
    assert types_.types["corner"] == point and _name(types_.types["corner"]) == "corner"
    assert types_.resources == ("token", "counter")
    merge = types_.functions["[method]counter.merge"]
    assert merge.params == (("self", t.BorrowType("counter")),
                            ("other", t.BorrowType("counter")), ("into", t.OwnType("counter")))
    assert merge.result == t.OptionType(point)
    geometry = next(i for i in world.imports if i.name == "test:kinds/geometry@0.1.0")
    # The resource proves geometry depends on types, so same-named records come from there.
    assert geometry.uses == {n: ("test:kinds/types@0.1.0", o) for n, o in [
        ("point", "point"), ("ctr", "counter"), ("color", "color"), ("size", "size")]}
    assert "vec2" not in geometry.uses and _name(geometry.types["vec2"]) == "vec2"
    # The exported copy of an imported interface gets its own resources, not a use of them.
    exported = next(i for i in world.exports if i.name == "test:shapes/flat")
    assert "counter" not in exported.uses


def test_public_helpers_work_without_names(kinds: Path, engine: Engine) -> None:
    comp = wc.Component.from_file(engine, str(kinds))
    inst = comp.type.imports(engine)["test:kinds/types@0.1.0"].ty
    assert isinstance(inst, wc.ComponentInstanceType)
    items = {n: e.ty for n, e in inst.exports(engine).items()}
    assert wit_type(items["size"]) == t.Primitive("u64")
    shape = wit_type(items["shape"])
    assert isinstance(shape, t.VariantType) and shape.name is None
    nothing = items["nothing"]
    assert isinstance(nothing, wc.FuncType)
    assert func_type("nothing", nothing) == t.FuncType("nothing", (), None)
    iface = interface_type("test:kinds/types@0.1.0", inst, engine)
    assert _name(iface.types["shape"]) == "shape" and iface.uses == {}


# -- printing hand-made models ------------------------------------------------------------


def test_render_fills_in_what_the_model_lacks(tmp_path: Path) -> None:
    anon = t.RecordType((("a", t.Primitive("u32")), ("b", t.EnumType(("x", "y")))))
    world = t.WorldType(
        imports=(t.InterfaceType("ns:pkg/api@1.0.0", functions={
            "get": t.FuncType("get", (("key", t.Primitive("string")),), t.OptionType(anon)),
            "[method]blob.size": t.FuncType(
                "[method]blob.size", (("self", t.BorrowType("blob")),), t.Primitive("u64")),
            "put": t.FuncType("put", (("v", t.FlagsType(("on",), name="unit")),
                                      ("b", t.OwnType("blob")))),
        }),),
        export_funcs=(t.FuncType("result", (("type", anon),), anon),),
    )
    text, resolve = printed(world, tmp_path)
    lines = [line.strip() for line in text.splitlines()]
    assert "export %result: func(%type: result-type) -> result-type;" in lines
    assert "resource blob {" in lines and "size: func() -> u64;" in lines
    assert "record get-result {" in lines and "b: get-result-b," in lines
    got = facts(resolve)
    api = got["imports"]["ns:pkg/api@1.0.0"]
    assert api["functions"]["get"] == (
        (("key", "string"),), "option<record{a:u32,b:enum{x,y}}>")
    assert set(api["types"]) == {"get-result", "get-result-b", "blob", "unit"}


def test_render_name_parameter(tmp_path: Path) -> None:
    text, resolve = printed(t.WorldType(), tmp_path)
    assert text == "package root:component;\n\nworld root {\n}\n"
    assert render_world(t.WorldType(), name="app").splitlines()[2] == "world app {"


def test_made_up_names_avoid_functions(tmp_path: Path) -> None:
    anon = t.RecordType((("a", t.Primitive("u32")),))
    world = t.WorldType(
        imports=(t.InterfaceType("x:y/z", functions={
            "get": t.FuncType("get", (), anon),
            "get-result": t.FuncType("get-result", ()),
        }),),
        export_funcs=(t.FuncType("f", (("p", anon),)),),
        exports=(t.InterfaceType("f-p"),),
    )
    text, resolve = printed(world, tmp_path)  # types and functions share one namespace
    assert "get: func() -> get-result-n2;" in text and "export f: func(p: f-p-n2);" in text
    assert facts(resolve)["exports"]["func f"] == ((("p", "record{a:u32}"),), "_")
