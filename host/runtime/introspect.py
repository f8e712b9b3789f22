"""Read a compiled component's imports and exports into the shared WIT type model.

wasmtime's component types are structural: a record type does not know it is called ``point``.
Names come from the type exports of each instance (``type point = record {…}`` shows up as an
item of kind *type*), so we collect those first and name structurally equal types after them.
Resources are matched the same way against the instance's resource exports.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wasmtime import Engine
from wasmtime import component as wc

from ...lattice.wit import types as t


class _Names:
    """Type and resource names visible while converting one instance (or the root)."""

    def __init__(self) -> None:
        self.types: list[tuple[Any, str]] = []
        self.resources: list[tuple[wc.ResourceType, str]] = []

    def type_name(self, vt: Any) -> str | None:
        for known, name in self.types:
            if type(known) is type(vt) and known == vt:
                return name
        return None

    def resource_name(self, rt: wc.ResourceType) -> str:
        for known, name in self.resources:
            if known == rt:
                return name
        return "resource"


def wit_type(vt: Any, names: _Names | None = None) -> t.WitType:
    """Convert one wasmtime-py ``ValType`` into a ``WitType``."""
    names = names or _Names()
    if isinstance(vt, (wc.Bool, wc.S8, wc.U8, wc.S16, wc.U16, wc.S32, wc.U32, wc.S64, wc.U64,
                       wc.F32, wc.F64, wc.Char, wc.String)):
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
    for name, ext in items:
        item = ext.ty
        if isinstance(item, wc.ResourceType):
            names.resources.append((item, name))
        elif isinstance(item, (wc.RecordType, wc.VariantType, wc.EnumType, wc.FlagsType)):
            names.types.append((item, name))


def interface_type(name: str, it: wc.ComponentInstanceType, engine: Engine) -> t.InterfaceType:
    items = list(it.exports(engine).items())
    names = _Names()
    _collect_names(items, names)
    types: dict[str, t.WitType] = {}
    funcs: dict[str, t.FuncType] = {}
    resources: list[str] = []
    for item_name, ext in items:
        item = ext.ty
        if isinstance(item, wc.FuncType):
            funcs[item_name] = func_type(item_name, item, names)
        elif isinstance(item, wc.ResourceType):
            resources.append(item_name)
        elif isinstance(item, (wc.ComponentType, wc.ModuleType, wc.ComponentInstanceType)):
            continue
        else:
            try:
                types[item_name] = wit_type(item, names)
            except TypeError:
                continue
    return t.InterfaceType(name, types, funcs, tuple(resources))


def _side(items: list[tuple[str, Any]], engine: Engine) -> tuple[
    tuple[t.InterfaceType, ...], tuple[t.FuncType, ...], dict[str, t.WitType]
]:
    names = _Names()
    _collect_names(items, names)
    ifaces: list[t.InterfaceType] = []
    funcs: list[t.FuncType] = []
    types: dict[str, t.WitType] = {}
    for name, ext in items:
        item = ext.ty
        if isinstance(item, wc.ComponentInstanceType):
            ifaces.append(interface_type(name, item, engine))
        elif isinstance(item, wc.FuncType):
            funcs.append(func_type(name, item, names))
        elif isinstance(item, (wc.ResourceType, wc.ComponentType, wc.ModuleType)):
            continue
        else:
            try:
                types[name] = wit_type(item, names)
            except TypeError:
                continue
    return tuple(ifaces), tuple(funcs), types


def world_type(component: wc.Component, engine: Engine) -> t.WorldType:
    """The whole import/export surface of ``component`` as a ``WorldType``."""
    ctype = component.type
    imp_ifaces, imp_funcs, imp_types = _side(list(ctype.imports(engine).items()), engine)
    exp_ifaces, exp_funcs, exp_types = _side(list(ctype.exports(engine).items()), engine)
    return t.WorldType(
        imports=imp_ifaces, exports=exp_ifaces, import_funcs=imp_funcs, export_funcs=exp_funcs,
        import_types=imp_types, export_types=exp_types,
    )
