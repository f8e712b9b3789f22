"""Rewriting the resource handles inside a WIT value, driven by its type.

Handles cannot travel as such (between a guest and a Python provider, or to a provider in
another process), so each crossing swaps them for something that can: a provider's object, a
number. ``map_resources(ty, leaf)`` builds, once per type, a function that rebuilds a value with
every ``own``/``borrow`` leaf passed through ``leaf(type)(ctx, value)`` and shares everything
else (types without resources map to the identity).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import types as t
from .values import Case, Err, Ok, Some

Mapper = Callable[[Any, Any], Any]


def has_resources(ty: t.WitType | None) -> bool:
    if ty is None:
        return False
    if isinstance(ty, (t.OwnType, t.BorrowType)):
        return True
    if isinstance(ty, t.ListType):
        return has_resources(ty.element)
    if isinstance(ty, t.OptionType):
        return has_resources(ty.inner)
    if isinstance(ty, t.ResultType):
        return has_resources(ty.ok) or has_resources(ty.err)
    if isinstance(ty, t.TupleType):
        return any(has_resources(e) for e in ty.elements)
    if isinstance(ty, t.RecordType):
        return any(has_resources(f) for _, f in ty.fields)
    if isinstance(ty, t.VariantType):
        return any(has_resources(c) for _, c in ty.cases)
    return False


Leaf = Callable[[t.OwnType | t.BorrowType], Mapper]


def map_resources(ty: t.WitType | None, leaf: Leaf) -> Mapper:
    """A function rewriting the resource leaves of a value of type ``ty`` (identity elsewhere)."""
    if ty is None or not has_resources(ty):
        return lambda _ctx, v: v
    if isinstance(ty, (t.OwnType, t.BorrowType)):
        return leaf(ty)
    if isinstance(ty, t.ListType):
        el = map_resources(ty.element, leaf)
        return lambda ctx, v: [el(ctx, x) for x in v]
    if isinstance(ty, t.OptionType):
        inner = map_resources(ty.inner, leaf)
        nested = isinstance(ty.inner, t.OptionType)

        def option(ctx: int, v: Any) -> Any:
            if v is None:
                return None
            if nested and isinstance(v, Some):
                return Some(inner(ctx, v.value))
            return inner(ctx, v)
        return option
    if isinstance(ty, t.ResultType):
        ok, err = map_resources(ty.ok, leaf), map_resources(ty.err, leaf)

        def result(ctx: int, v: Any) -> Any:
            if isinstance(v, Err):
                return Err(err(ctx, v.value))
            if isinstance(v, Ok):
                return Ok(ok(ctx, v.value))
            return Ok(ok(ctx, v))  # a provider may return the ok value bare
        return result
    if isinstance(ty, t.TupleType):
        els = [map_resources(e, leaf) for e in ty.elements]
        return lambda ctx, v: tuple(f(ctx, x) for f, x in zip(els, v, strict=True))
    if isinstance(ty, t.RecordType):
        fields = [(n, map_resources(f, leaf)) for n, f in ty.fields]
        return lambda ctx, v: {n: f(ctx, v[n]) for n, f in fields}
    if isinstance(ty, t.VariantType):
        cases = {n: map_resources(c, leaf) for n, c in ty.cases}
        return lambda ctx, v: Case(v.name, cases[v.name](ctx, v.value))
    raise TypeError(f"unexpected WIT type {ty!r}")




def without_resources(ty: t.WitType | None) -> t.WitType | None:
    """``ty`` with every ``own``/``borrow`` replaced by ``u32`` (a handle number on the wire)."""
    if ty is None or not has_resources(ty):
        return ty
    if isinstance(ty, (t.OwnType, t.BorrowType)):
        return t.Primitive("u32")
    if isinstance(ty, t.ListType):
        return t.ListType(without_resources(ty.element))  # type: ignore[arg-type]
    if isinstance(ty, t.OptionType):
        return t.OptionType(without_resources(ty.inner))  # type: ignore[arg-type]
    if isinstance(ty, t.ResultType):
        return t.ResultType(without_resources(ty.ok), without_resources(ty.err))
    if isinstance(ty, t.TupleType):
        return t.TupleType(tuple(without_resources(e) for e in ty.elements))  # type: ignore[misc]
    if isinstance(ty, t.RecordType):
        return t.RecordType(tuple((n, without_resources(f)) for n, f in ty.fields),  # type: ignore[misc]
                            ty.name)
    if isinstance(ty, t.VariantType):
        return t.VariantType(tuple((n, without_resources(c)) for n, c in ty.cases), ty.name)
    return ty
