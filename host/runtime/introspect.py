"""Read a compiled component's imports and exports into the shared WIT type model.

wasmtime's component types are structural: a record type does not know it is called ``point``.
Names come from the type exports of each instance (``type point = record {…}`` shows up as an
item of kind *type*), so we collect those first and name structurally equal types after them.
Resources are matched the same way against the instance's resource exports.

Which types an interface ``use``s from another is not recorded either, so it is inferred. A
resource is used from another interface if wasmtime says the two are identical, which proves the
dependency. Any other type only counts as used if an interface proven to be a dependency this
way (transitively) exports it under the same name and shape: matching all interfaces would link
unrelated packages that happen to share a ``record point``, and can even yield WIT that does not
resolve (an exported interface reaching another both as import and as export).
World-level functions see no type exports besides resources, so their records and variants are
named after a structurally equal type of an imported interface (as a world-level ``use``), or
stay anonymous for the printer to name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from wasmtime import Engine
from wasmtime import component as wc

from ...lattice.wit import types as t

_PRIMITIVES = (wc.Bool, wc.S8, wc.U8, wc.S16, wc.U16, wc.S32, wc.U32, wc.S64, wc.U64, wc.F32,
               wc.F64, wc.Char, wc.String)
_NAMED = (wc.RecordType, wc.VariantType, wc.EnumType, wc.FlagsType)
_NOT_TYPES = (wc.FuncType, wc.ComponentType, wc.ModuleType, wc.ComponentInstanceType)


@dataclass(frozen=True)
class _Known:
    """A type an already converted interface exports, so later ones can ``use`` it."""

    iface: str
    name: str
    item: Any  # a ValType or a ResourceType
    origin: tuple[str, str]  # the interface and name that define it


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _is_named_interface(name: str) -> bool:
    """Only ``ns:pkg/iface`` interfaces can be ``use``d; world-inline ones cannot."""
    return ":" in name and "/" in name


class _Names:
    """Type and resource names visible while converting one instance (or the root).

    ``known`` (the root only) lets anonymous types adopt the name of a structurally equal type
    from an imported interface; ``adopted`` records those as world-level ``use``s.
    """

    def __init__(self, known: Sequence[_Known] = ()) -> None:
        self.types: list[tuple[Any, str]] = []
        self.resources: list[tuple[wc.ResourceType, str]] = []
        self.adopted: dict[str, tuple[Any, tuple[str, str]]] = {}
        self._known = known

    def _taken(self, name: str) -> bool:
        return any(n == name for _, n in self.types) or any(n == name for _, n in self.resources)

    def _adopt(self, item: Any) -> str | None:
        for k in self._known:
            if _same(k.item, item) and not self._taken(k.name):
                self.adopted[k.name] = (item, k.origin)
                return k.name
        return None

    def type_name(self, vt: Any) -> str | None:
        for known, name in self.types:
            if _same(known, vt):
                return name
        adopted = self._adopt(vt)
        if adopted is not None:
            self.types.append((vt, adopted))
        return adopted

    def resource_name(self, rt: wc.ResourceType) -> str:
        for known, name in self.resources:
            if known == rt:
                return name
        adopted = self._adopt(rt)
        if adopted is None:
            return "resource"  # nothing names it (a lone function type): keep the placeholder
        self.resources.append((rt, adopted))
        return adopted


def wit_type(vt: Any, names: _Names | None = None) -> t.WitType:
    """Convert one wasmtime-py ``ValType`` into a ``WitType``."""
    names = names or _Names()
    if isinstance(vt, _PRIMITIVES):
        return t.Primitive(type(vt).__name__.lower())
    if isinstance(vt, wc.ListType):
        return t.ListType(wit_type(vt.element, names))
    if isinstance(vt, wc.RecordType):
        return t.RecordType(
            tuple((n, wit_type(f, names)) for n, f in vt.fields), name=names.type_name(vt)
        )
    if isinstance(vt, wc.TupleType):
        return t.TupleType(tuple(wit_type(e, names) for e in vt.elements))
    if isinstance(vt, wc.VariantType):
        return t.VariantType(
            tuple((n, None if c is None else wit_type(c, names)) for n, c in vt.cases),
            name=names.type_name(vt),
        )
    if isinstance(vt, wc.EnumType):
        return t.EnumType(tuple(vt.names), name=names.type_name(vt))
    if isinstance(vt, wc.OptionType):
        return t.OptionType(wit_type(vt.payload, names))
    if isinstance(vt, wc.ResultType):
        ok, err = vt.ok, vt.err
        return t.ResultType(
            None if ok is None else wit_type(ok, names),
            None if err is None else wit_type(err, names),
        )
    if isinstance(vt, wc.FlagsType):
        return t.FlagsType(tuple(vt.names), name=names.type_name(vt))
    if isinstance(vt, wc.OwnType):
        return t.OwnType(names.resource_name(vt.ty))
    if isinstance(vt, wc.BorrowType):
        return t.BorrowType(names.resource_name(vt.ty))
    raise TypeError(f"unsupported component value type {type(vt).__name__}")


def func_type(name: str, ft: wc.FuncType, names: _Names | None = None) -> t.FuncType:
    names = names or _Names()
    return t.FuncType(
        name,
        tuple((pn, wit_type(pt, names)) for pn, pt in ft.params),
        None if (r := ft.result) is None else wit_type(r, names),
    )


def _collect_names(items: Iterable[tuple[str, Any]], names: _Names) -> None:
    for name, item in items:
        if isinstance(item, wc.ResourceType):
            names.resources.append((item, name))
        elif isinstance(item, _NAMED):
            names.types.append((item, name))


def _definition(name: str, item: Any, names: _Names) -> t.WitType:
    """The type exported as ``name``; a record or variant is defined under that very name even
    if an earlier export has the same shape (two same-shaped records, not an alias)."""
    if isinstance(item, wc.ResourceType):
        return t.OwnType(names.resource_name(item))
    ty = wit_type(item, names)
    return dataclasses.replace(ty, name=name) if isinstance(ty, t.NAMED_TYPES) else ty


def _origin(name: str, item: Any, known: Sequence[_Known]) -> tuple[str, str] | None:
    """Where a type exported as ``name`` is ``use``d from, if an earlier interface has it."""
    for k in known:
        if _same(k.item, item) and (k.name == name or isinstance(item, wc.ResourceType)):
            return k.origin
    return None


def _reach(items: Iterable[tuple[str, Any]], known: Sequence[_Known],
           deps: dict[str, set[str]]) -> set[str]:
    """Interfaces ``items`` provably depend on: where their resources come from, transitively."""
    reach: set[str] = set()
    for name, item in items:
        if isinstance(item, wc.ResourceType) and (origin := _origin(name, item, known)):
            reach |= {origin[0], *deps.get(origin[0], ())}
    return reach


def _interface(
    name: str, it: wc.ComponentInstanceType, engine: Engine, known: Sequence[_Known],
    deps: dict[str, set[str]],
) -> tuple[t.InterfaceType, list[_Known]]:
    items = [(n, ext.ty) for n, ext in it.exports(engine).items()]
    names = _Names()
    _collect_names(items, names)
    visible = [k for k in known if k.iface != name]
    reach = _reach(items, visible, deps)
    candidates = [k for k in visible if k.iface in reach or isinstance(k.item, wc.ResourceType)]
    types: dict[str, t.WitType] = {}
    funcs: dict[str, t.FuncType] = {}
    resources: list[str] = []
    uses: dict[str, tuple[str, str]] = {}
    mine: list[_Known] = []
    for item_name, item in items:
        if isinstance(item, wc.FuncType):
            funcs[item_name] = func_type(item_name, item, names)
            continue
        if isinstance(item, _NOT_TYPES):
            continue
        try:
            types[item_name] = _definition(item_name, item, names)
        except TypeError:
            continue
        if isinstance(item, wc.ResourceType):
            resources.append(item_name)
        origin = _origin(item_name, item, candidates)
        if origin is not None:
            uses[item_name] = origin
        mine.append(_Known(name, item_name, item, origin or (name, item_name)))
    iface = t.InterfaceType(name, types, funcs, tuple(resources), uses)
    if not _is_named_interface(name):
        return iface, []
    deps[name] = reach
    return iface, mine


def interface_type(name: str, it: wc.ComponentInstanceType, engine: Engine) -> t.InterfaceType:
    """One imported or exported instance on its own (no ``use``s: there is nothing to match)."""
    return _interface(name, it, engine, (), {})[0]


def _root_types(
    items: list[tuple[str, Any]], names: _Names, known: Sequence[_Known],
    uses: dict[str, tuple[str, str]],
) -> dict[str, t.WitType]:
    types: dict[str, t.WitType] = {}
    for name, item in items:
        if isinstance(item, _NOT_TYPES):
            continue
        try:
            types[name] = _definition(name, item, names)
        except TypeError:
            continue
        if (origin := _origin(name, item, known)) is not None:
            uses[name] = origin
    return types


def world_type(component: wc.Component, engine: Engine) -> t.WorldType:
    """The whole import/export surface of ``component`` as a ``WorldType``, in its order."""
    ctype = component.type
    imports = [(n, ext.ty) for n, ext in ctype.imports(engine).items()]
    exports = [(n, ext.ty) for n, ext in ctype.exports(engine).items()]

    known: list[_Known] = []
    deps: dict[str, set[str]] = {}
    imp_ifaces: list[t.InterfaceType] = []
    for name, item in imports:
        if isinstance(item, wc.ComponentInstanceType):
            iface, mine = _interface(name, item, engine, known, deps)
            imp_ifaces.append(iface)
            known.extend(mine)

    # World-level items: only resources show up as items. Other types are named after a type
    # of an imported interface, preferring those the world provably uses resources from.
    reach = _reach(imports + exports, known, deps)
    imported = sorted(known, key=lambda k: k.iface not in reach)  # stable: keeps order
    names = _Names(imported)
    _collect_names(imports + exports, names)
    uses: dict[str, tuple[str, str]] = {}
    imp_types = _root_types(imports, names, imported, uses)
    exp_types = _root_types(exports, names, imported, uses)
    imp_funcs = tuple(func_type(n, i, names) for n, i in imports if isinstance(i, wc.FuncType))
    exp_funcs = tuple(func_type(n, i, names) for n, i in exports if isinstance(i, wc.FuncType))
    for name, (item, origin) in names.adopted.items():
        imp_types[name] = _definition(name, item, names)
        uses[name] = origin

    exp_ifaces: list[t.InterfaceType] = []
    for name, item in exports:
        if isinstance(item, wc.ComponentInstanceType):
            iface, mine = _interface(name, item, engine, known, deps)
            exp_ifaces.append(iface)
            known.extend(mine)

    return t.WorldType(
        imports=tuple(imp_ifaces), exports=tuple(exp_ifaces), import_funcs=imp_funcs,
        export_funcs=exp_funcs, import_types=imp_types, export_types=exp_types, uses=uses,
    )
