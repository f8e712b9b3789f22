"""The WIT type model: the one description of component types that every layer shares.

The host builds it from wasmtime's component types (``trellis.host.runtime.introspect``); the
WAVE syntax (``wave.py``), the WIT printer (``printer.py``) and the lattice codec are all driven
by it, so none of them import wasmtime.

Map::

    WitType = Primitive | ListType | RecordType | TupleType | VariantType | EnumType
            | OptionType | ResultType | FlagsType | OwnType | BorrowType
    FuncType(name, params, result)
    InterfaceType(name, types, functions)     # an imported or exported instance
    WorldType(imports, exports)                # a whole component

Type names (``RecordType.name`` …) are for printing only: equality is structural, as in the
Component Model, so two records with the same fields are the same type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Union

PRIMITIVES = (
    "bool", "s8", "u8", "s16", "u16", "s32", "u32", "s64", "u64", "f32", "f64", "char", "string",
)
INT_RANGES: dict[str, tuple[int, int]] = {
    "s8": (-(2**7), 2**7 - 1),
    "u8": (0, 2**8 - 1),
    "s16": (-(2**15), 2**15 - 1),
    "u16": (0, 2**16 - 1),
    "s32": (-(2**31), 2**31 - 1),
    "u32": (0, 2**32 - 1),
    "s64": (-(2**63), 2**63 - 1),
    "u64": (0, 2**64 - 1),
}


@dataclass(frozen=True)
class Primitive:
    """bool, s8…u64, f32, f64, char or string."""

    kind: str

    def __post_init__(self) -> None:
        if self.kind not in PRIMITIVES:
            raise ValueError(f"unknown primitive WIT type {self.kind!r}")


@dataclass(frozen=True)
class ListType:
    element: WitType


@dataclass(frozen=True)
class RecordType:
    fields: tuple[tuple[str, WitType], ...]
    name: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TupleType:
    elements: tuple[WitType, ...]


@dataclass(frozen=True)
class VariantType:
    cases: tuple[tuple[str, WitType | None], ...]
    name: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EnumType:
    cases: tuple[str, ...]
    name: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class OptionType:
    inner: WitType


@dataclass(frozen=True)
class ResultType:
    ok: WitType | None
    err: WitType | None


@dataclass(frozen=True)
class FlagsType:
    names: tuple[str, ...]
    name: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class OwnType:
    """An owned handle to a resource; ``resource`` is its WIT name (e.g. ``counter``)."""

    resource: str


@dataclass(frozen=True)
class BorrowType:
    resource: str


WitType = Union[  # noqa: UP007 - a runtime alias; `|` cannot combine forward references
    Primitive, ListType, RecordType, TupleType, VariantType, EnumType, OptionType, ResultType,
    FlagsType, OwnType, BorrowType,
]
NAMED_TYPES = (RecordType, VariantType, EnumType, FlagsType)


@dataclass(frozen=True)
class FuncType:
    """A component function. ``name`` is the export/import name within its instance, e.g.
    ``greet``, ``[constructor]counter``, ``[method]counter.inc`` or ``[static]counter.zero``."""

    name: str
    params: tuple[tuple[str, WitType], ...]
    result: WitType | None = None


@dataclass(frozen=True)
class InterfaceType:
    """An instance imported or exported by a component, e.g. ``wasi:cli/stdout@0.2.0``.

    ``types`` maps the type names the instance exports (records, enums, resources …) to their
    definitions; resources map to ``OwnType`` of themselves. ``uses`` marks the ones that come
    from another interface (local name → (interface, name there)) so printed WIT can say ``use``.
    """

    name: str
    types: dict[str, WitType] = field(default_factory=dict, compare=False)
    functions: dict[str, FuncType] = field(default_factory=dict)
    resources: tuple[str, ...] = ()
    uses: dict[str, tuple[str, str]] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class WorldType:
    """Everything a component imports and exports. Root-level functions sit in ``*_funcs``,
    world-level types (resources, ``use``d types) in ``*_types``; ``uses`` is as for interfaces."""

    imports: tuple[InterfaceType, ...] = ()
    exports: tuple[InterfaceType, ...] = ()
    import_funcs: tuple[FuncType, ...] = ()
    export_funcs: tuple[FuncType, ...] = ()
    import_types: dict[str, WitType] = field(default_factory=dict, compare=False)
    export_types: dict[str, WitType] = field(default_factory=dict, compare=False)
    uses: dict[str, tuple[str, str]] = field(default_factory=dict, compare=False)


def u8_list(ty: WitType) -> bool:
    """True for ``list<u8>``, which travels as ``bytes`` everywhere in Trellis."""
    return isinstance(ty, ListType) and ty.element == Primitive("u8")


def type_label(ty: WitType | None, name_of: Callable[[WitType], str | None] | None = None) -> str:
    """The WIT spelling of a type, as used in error messages and printed WIT.

    ``name_of`` may name records, variants, enums, flags and resources its own way (the WIT
    printer escapes and disambiguates names); returning ``None`` falls back to the default.
    """
    if ty is None:
        return "_"
    if isinstance(ty, Primitive):
        return ty.kind
    if name_of is not None and isinstance(ty, (*NAMED_TYPES, OwnType, BorrowType)):
        named = name_of(ty)
        if named is not None:
            return named
    if isinstance(ty, NAMED_TYPES) and ty.name:
        return ty.name

    def sub(t: WitType | None) -> str:
        return type_label(t, name_of)

    if isinstance(ty, ListType):
        return f"list<{sub(ty.element)}>"
    if isinstance(ty, OptionType):
        return f"option<{sub(ty.inner)}>"
    if isinstance(ty, TupleType):
        return f"tuple<{', '.join(sub(t) for t in ty.elements)}>"
    if isinstance(ty, ResultType):
        if ty.ok is None and ty.err is None:
            return "result"
        if ty.err is None:
            return f"result<{sub(ty.ok)}>"
        return f"result<{sub(ty.ok)}, {sub(ty.err)}>"
    if isinstance(ty, OwnType):
        return ty.resource
    if isinstance(ty, BorrowType):
        return f"borrow<{ty.resource}>"
    if isinstance(ty, RecordType):
        return "record { " + ", ".join(f"{n}: {sub(t)}" for n, t in ty.fields) + " }"
    if isinstance(ty, VariantType):
        cases = (n if t is None else f"{n}({sub(t)})" for n, t in ty.cases)
        return "variant { " + ", ".join(cases) + " }"
    if isinstance(ty, EnumType):
        return "enum { " + ", ".join(ty.cases) + " }"
    if isinstance(ty, FlagsType):
        return "flags { " + ", ".join(ty.names) + " }"
    raise TypeError(f"not a WIT type: {ty!r}")
