"""Print a ``WorldType`` as WIT text, in the shape ``wasm-tools component wit`` gives a component.

The output is a ``package root:component;`` with one world, followed by a ``package ns:pkg@v
{ interface … }`` block for every named interface the world imports or exports, so it can be fed
back to any WIT parser. The type model carries less than the binary (no docs, no alias names at
use sites, no names for world-level records), so where a name is missing one is made up from where
the type is first used (``f-arg`` for a parameter ``arg`` of ``f``); any type a signature names
but the model does not define is defined alongside it, so the text always resolves.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .types import (
    NAMED_TYPES,
    BorrowType,
    EnumType,
    FlagsType,
    FuncType,
    InterfaceType,
    OwnType,
    RecordType,
    VariantType,
    WitType,
    WorldType,
    type_label,
)

ROOT_PACKAGE = "root:component"
KEYWORDS = frozenset(
    "use type func u8 u16 u32 u64 s8 s16 s32 s64 f32 f64 float32 float64 char bool string "
    "resource own borrow record flags variant enum option result future stream error-context "
    "list tuple as from static interface world import export package constructor include with "
    "async map".split()
)
_INDENT = "  "
_FUNC_NAME = re.compile(r"\[(constructor|method|static)\]([^.]+)(?:\.(.+))?")


def ident(name: str) -> str:
    """A WIT identifier, ``%``-escaped when it collides with a keyword (``%type``)."""
    return f"%{name}" if name in KEYWORDS else name


def split_interface(full: str) -> tuple[str, str] | None:
    """``wasi:io/streams@0.2.0`` → (``wasi:io@0.2.0``, ``streams``); None for world-inline
    interfaces, which have a plain name."""
    m = re.fullmatch(r"([^/@]+:[^/@]+)/([^/@]+)(?:@(.+))?", full)
    if m is None:
        return None
    package, name, version = m.groups()
    return (f"{package}@{version}" if version else package), name


def _to_ident(hint: str) -> str:
    """Make a valid kebab-case identifier out of a hint (words must start with a letter)."""
    words = [w.lower() for w in re.split(r"[^A-Za-z0-9]+", hint) if w]
    words = [w if w[0].isalpha() else f"n{w}" for w in words]
    return "-".join(words) or "anon"


@dataclass(frozen=True)
class _Func:
    kind: str  # "free", "constructor", "method" or "static"
    resource: str | None
    name: str
    func: FuncType


def _classify(f: FuncType) -> _Func:
    m = _FUNC_NAME.fullmatch(f.name)
    if m is None:
        return _Func("free", None, f.name, f)
    kind, resource, short = m.groups()
    return _Func(kind, resource, short or resource, f)


class _Scope:
    """The types one interface (or the world) can name, plus what rendering had to add to them.

    Signatures are rendered through ``label``, which adds a definition for every named type or
    resource the scope lacks and makes up names for anonymous records, variants, enums, flags.
    """

    def __init__(
        self, types: dict[str, WitType], uses: dict[str, tuple[str, str]], package: str | None,
        taken: Iterable[str] = (),
    ) -> None:
        self.types = dict(types)
        self.uses = {n: o for n, o in uses.items() if n in self.types}
        self.package = package
        self.extra: dict[str, WitType] = {}
        self.taken = set(taken)  # other names in the same namespace (functions, interfaces)

    def _get(self, name: str) -> WitType | None:
        return self.types.get(name, self.extra.get(name))

    def _fresh(self, hint: str) -> str:
        base = name = _to_ident(hint)
        n = 1
        while self._get(name) is not None or name in self.taken:
            n += 1
            name = f"{base}-n{n}"
        return name

    def label(self, ty: WitType | None, hint: str) -> str:
        """``type_label`` with the printer's naming: escaped identifiers, resources and named
        types registered (or given a made-up name) so the printed WIT always parses."""

        def name_of(t: WitType) -> str | None:
            if isinstance(t, OwnType):
                return ident(self._resource(t.resource))
            if isinstance(t, BorrowType):
                return f"borrow<{ident(self._resource(t.resource))}>"
            assert isinstance(t, NAMED_TYPES)
            return ident(self._named(t, hint))

        return type_label(ty, name_of)

    def _resource(self, name: str) -> str:
        if self._get(name) is None:
            self.extra[name] = OwnType(name)
        return name

    def _named(self, ty: RecordType | VariantType | EnumType | FlagsType, hint: str) -> str:
        if ty.name is not None:
            have = self._get(ty.name)
            if have is None:
                self.extra[ty.name] = ty
                return ty.name
            if _same(have, ty):
                return ty.name
        for name, have in (*self.types.items(), *self.extra.items()):
            if _same(have, ty):
                return name
        name = self._fresh(ty.name or hint)
        self.extra[name] = dataclasses.replace(ty, name=name)
        return name

    def ref(self, iface: str) -> str:
        """How to name interface ``iface`` in a ``use`` from this scope."""
        split = split_interface(iface)
        if split is not None and split[0] == self.package:
            return ident(split[1])
        return iface

    # -- rendering -------------------------------------------------------------------------

    def signature(self, f: FuncType, hint: str, *, method: bool = False) -> str:
        params = f.params
        if method and params and params[0][0] == "self":
            params = params[1:]
        ps = ", ".join(f"{ident(n)}: {self.label(ty, f'{hint}-{n}')}" for n, ty in params)
        result = "" if f.result is None else f" -> {self.label(f.result, f'{hint}-result')}"
        return f"({ps}){result}"

    def use_lines(self) -> list[str]:
        grouped: dict[str, list[str]] = {}
        for local, (iface, name) in self.uses.items():
            item = ident(name) if name == local else f"{ident(name)} as {ident(local)}"
            grouped.setdefault(iface, []).append(item)
        return [f"use {self.ref(iface)}.{{{', '.join(items)}}};"
                for iface, items in grouped.items()]

    def typedef(self, name: str, ty: WitType, methods: list[_Func]) -> list[str]:
        if isinstance(ty, OwnType) and ty.resource == name:
            if not methods:
                return [f"resource {ident(name)};"]
            body = [_INDENT + self._member(m) for m in methods]
            return [f"resource {ident(name)} {{", *body, "}"]
        if isinstance(ty, NAMED_TYPES) and ty.name in (None, name):
            return self._definition(name, ty)
        return [f"type {ident(name)} = {self.label(ty, name)};"]

    def _definition(
        self, name: str, ty: RecordType | VariantType | EnumType | FlagsType
    ) -> list[str]:
        if isinstance(ty, RecordType):
            kind = "record"
            rows = [f"{ident(n)}: {self.label(f, f'{name}-{n}')}," for n, f in ty.fields]
        elif isinstance(ty, VariantType):
            kind = "variant"
            rows = [ident(n) + ("," if c is None else f"({self.label(c, f'{name}-{n}')}),")
                    for n, c in ty.cases]
        elif isinstance(ty, EnumType):
            kind, rows = "enum", [f"{ident(n)}," for n in ty.cases]
        else:
            kind, rows = "flags", [f"{ident(n)}," for n in ty.names]
        return [f"{kind} {ident(name)} {{", *(_INDENT + r for r in rows), "}"]

    def _member(self, m: _Func) -> str:
        hint = f"{m.resource}-{m.name}"
        if m.kind == "constructor":
            f = m.func
            own = f.result is None or f.result == OwnType(m.resource or "")
            shown = dataclasses.replace(f, result=None) if own else f
            return f"constructor{self.signature(shown, hint)};"
        static = "static " if m.kind == "static" else ""
        sig = self.signature(m.func, hint, method=m.kind == "method")
        return f"{ident(m.name)}: {static}func{sig};"

    def body(self, funcs: list[FuncType]) -> _Body:
        """Render ``funcs`` and every type definition they (and the scope) need."""
        methods: dict[str, list[_Func]] = {}
        free: list[tuple[int, str]] = []
        stray: list[str] = []
        classified = [_classify(f) for f in funcs]
        self.taken |= {m.name for m in classified if m.resource is None}
        for i, m in enumerate(classified):
            if m.resource is None:
                free.append((i, f"{ident(m.name)}: func{self.signature(m.func, m.name)};"))
            elif m.resource in self.uses:  # WIT has no place for methods of a used resource
                stray.append(m.func.name)
            else:
                methods.setdefault(self._resource(m.resource), []).append(m)
        defs: list[list[str]] = []
        done: set[str] = set()
        for name, ty in self.types.items():
            if name not in self.uses:
                defs.append(self.typedef(name, ty, methods.get(name, [])))
                done.add(name)
        # Rendering an added definition can add more (a made-up record inside another).
        while pending := [n for n in self.extra if n not in done]:
            for name in pending:
                defs.append(self.typedef(name, self.extra[name], methods.get(name, [])))
                done.add(name)
        uses = self.use_lines()
        if stray:
            uses.append("// functions of used resources: " + ", ".join(stray))
        return _Body(uses, defs, free)


@dataclass
class _Body:
    uses: list[str]
    defs: list[list[str]]  # one entry (of lines) per type definition
    funcs: list[tuple[int, str]]  # free functions: position in the input, rendered line

    def items(self) -> list[list[str]]:
        return ([self.uses] if self.uses else []) + self.defs + [[line] for _, line in self.funcs]


def _same(a: WitType, b: WitType) -> bool:
    return type(a) is type(b) and a == b


def _indent(lines: list[str], depth: int = 1) -> list[str]:
    return [(_INDENT * depth + line) if line else "" for line in lines]


def _join_items(items: list[list[str]]) -> list[str]:
    """Items separated by blank lines, as wasm-tools prints an interface body."""
    out: list[str] = []
    for i, item in enumerate(items):
        if i:
            out.append("")
        out.extend(item)
    return out


def _interface_body(iface: InterfaceType, package: str | None) -> list[str]:
    scope = _Scope(iface.types, iface.uses, package)
    return _join_items(scope.body(list(iface.functions.values())).items())


def _world_item(side: str, iface: InterfaceType) -> list[str]:
    if split_interface(iface.name) is not None:
        return [f"{side} {iface.name};"]
    body = _interface_body(iface, None)
    return [f"{side} {ident(iface.name)}: interface {{", *_indent(body), "}"]


def _world_body(world: WorldType) -> list[str]:
    inline = [i.name for i in (*world.imports, *world.exports) if split_interface(i.name) is None]
    types = {**world.import_types, **world.export_types}
    scope = _Scope(types, world.uses, ROOT_PACKAGE, inline)
    body = scope.body([*world.import_funcs, *world.export_funcs])
    n = len(world.import_funcs)
    imports = [f"import {line}" for i, line in body.funcs if i < n]
    exports = [f"export {line}" for i, line in body.funcs if i >= n]
    lines: list[str] = []
    for iface in world.imports:
        lines.extend(_world_item("import", iface))
    lines.extend(_join_items(([body.uses] if body.uses else []) + body.defs))
    if (body.uses or body.defs) and imports:
        lines.append("")
    lines.extend(imports)
    if lines and (exports or world.exports):
        lines.append("")
    lines.extend(exports)
    for iface in world.exports:
        lines.extend(_world_item("export", iface))
    return lines


def _packages(world: WorldType) -> dict[str, dict[str, InterfaceType]]:
    """Named interfaces grouped by package, a package after those it ``use``s from (as
    wasm-tools orders them), otherwise in order of appearance."""
    found: dict[str, dict[str, InterfaceType]] = {}
    for iface in (*world.imports, *world.exports):
        if (split := split_interface(iface.name)) is not None:
            found.setdefault(split[0], {}).setdefault(split[1], iface)
    ordered: dict[str, dict[str, InterfaceType]] = {}

    def visit(package: str) -> None:
        if package in ordered:
            return
        ordered[package] = {}  # placeholder: marks it visited (breaks cycles)
        for iface in found[package].values():
            for origin, _ in iface.uses.values():
                dep = split_interface(origin)
                if dep is not None and dep[0] in found and dep[0] != package:
                    visit(dep[0])
        del ordered[package]
        ordered[package] = found[package]

    for package in found:
        visit(package)
    return ordered


def render_world(world: WorldType, *, name: str = "root") -> str:
    """The world of a component as WIT text, laid out the way ``wasm-tools component wit`` does:
    ``package root:component; world root { import …; export …; }`` then a package block for
    every named interface. An interface both imported and exported is defined once."""
    out = [f"package {ROOT_PACKAGE};", "", f"world {ident(name)} {{",
           *_indent(_world_body(world)), "}"]
    for package, ifaces in _packages(world).items():
        out.extend(["", f"package {package} {{"])
        for short, iface in ifaces.items():
            body = _interface_body(iface, package)
            out.extend(_indent([f"interface {ident(short)} {{", *_indent(body), "}"]))
        out.append("}")
    return "\n".join(out) + "\n"
