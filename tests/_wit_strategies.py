"""Hypothesis strategies shared by the tests: random WIT types and random values of them.

``wit_types(...)`` builds types from the model in ``trellis.lattice.wit.types``; ``values_of(ty,
...)`` draws Python values of a type in the model of ``trellis.lattice.wit.values``. Both take
parameters so each test file keeps its own sizes, names and exclusions.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from hypothesis import strategies as st
from trellis.lattice.wit.types import (
    INT_RANGES,
    PRIMITIVES,
    BorrowType,
    EnumType,
    FlagsType,
    ListType,
    OptionType,
    OwnType,
    Primitive,
    RecordType,
    ResultType,
    TupleType,
    VariantType,
    WitType,
)
from trellis.lattice.wit.values import Case, Err, Ok, Some

U8 = Primitive("u8")
BYTES = ListType(U8)
SCALARS = st.characters(codec="utf-8")  # every Unicode scalar value, no surrogates
LABELS = st.sampled_from(["a", "b", "c", "x-y", "name", "v2", "ok", "err", "none", "some"])


def names(
    labels: st.SearchStrategy[str] = LABELS, *, min_size: int = 1, max_size: int = 4
) -> st.SearchStrategy[tuple[str, ...]]:
    """A tuple of distinct labels (field, case, enum or flag names)."""
    return st.lists(labels, min_size=min_size, max_size=max_size, unique=True).map(tuple)


def wit_types(  # noqa: PLR0913 - one knob per way the test files differ
    *,
    labels: st.SearchStrategy[str] = LABELS,
    max_leaves: int = 10,
    max_tuple: int = 4,
    min_record_fields: int = 1,
    type_names: st.SearchStrategy[str | None] | None = None,
    record_names: st.SearchStrategy[str | None] | None = None,
    flag_names: st.SearchStrategy[tuple[str, ...]] | None = None,
    enum_names: st.SearchStrategy[tuple[str, ...]] | None = None,
    bytes_leaf: bool = False,
    resources: Sequence[str] = (),
) -> st.SearchStrategy[WitType]:
    """Random WIT types of at most ``max_leaves`` leaves.

    ``type_names`` names enums, flags and variants (default: unnamed); ``record_names`` names
    records (default: as ``type_names``); ``flag_names`` and ``enum_names`` draw the names of
    flags and the cases of enums (default: 1-4 labels); ``bytes_leaf`` adds ``list<u8>`` as a
    leaf; ``resources`` adds ``own``/``borrow`` leaves of those resource names.
    """
    tnames = st.none() if type_names is None else type_names
    rnames = tnames if record_names is None else record_names
    fnames = names(labels) if flag_names is None else flag_names
    enames = names(labels) if enum_names is None else enum_names

    def compound(children: st.SearchStrategy[WitType]) -> st.SearchStrategy[WitType]:
        maybe = st.none() | children
        return st.one_of(
            children.map(ListType),
            children.map(OptionType),
            st.builds(ResultType, maybe, maybe),
            st.lists(children, min_size=1, max_size=max_tuple).map(lambda ts: TupleType(tuple(ts))),
            st.tuples(names(labels, min_size=min_record_fields), rnames).flatmap(
                lambda ln: st.tuples(*(children for _ in ln[0])).map(
                    lambda ts: RecordType(tuple(zip(ln[0], ts, strict=True)), name=ln[1]))),
            st.tuples(names(labels), tnames).flatmap(
                lambda ln: st.tuples(*(maybe for _ in ln[0])).map(
                    lambda ts: VariantType(tuple(zip(ln[0], ts, strict=True)), name=ln[1]))),
        )

    leaves: st.SearchStrategy[WitType] = st.sampled_from([Primitive(k) for k in PRIMITIVES])
    if bytes_leaf:
        leaves |= st.just(BYTES)
    leaves |= st.builds(EnumType, enames, name=tnames)
    leaves |= st.builds(FlagsType, fnames, name=tnames)
    if resources:
        leaves |= st.sampled_from(list(resources)).map(OwnType)
        leaves |= st.sampled_from(list(resources)).map(BorrowType)
    return st.recursive(leaves, compound, max_leaves=max_leaves)


def values_of(  # noqa: C901, PLR0911, PLR0913 - one branch per WIT type, one knob per size
    ty: WitType,
    *,
    max_list: int = 4,
    max_text: int = 8,
    long_text: tuple[int, int] | None = None,
    max_bytes: int = 8,
    long_bytes: tuple[int, int] | None = None,
    resources: st.SearchStrategy[Any] | None = None,
) -> st.SearchStrategy[Any]:
    """Random values of ``ty``. ``long_text``/``long_bytes`` add a second band of sizes
    ``(min, max)`` for strings and ``list<u8>`` (to cross length-prefix boundaries);
    ``resources`` draws the values of ``own``/``borrow`` types (without it they are refused)."""
    of = partial(values_of, max_list=max_list, max_text=max_text, long_text=long_text,
                 max_bytes=max_bytes, long_bytes=long_bytes, resources=resources)
    if isinstance(ty, Primitive):
        if ty.kind in INT_RANGES:
            return st.integers(*INT_RANGES[ty.kind])
        if ty.kind == "string":
            text = st.text(SCALARS, max_size=max_text)
            if long_text is not None:
                text |= st.text(SCALARS, min_size=long_text[0], max_size=long_text[1])
            return text
        return {
            "bool": st.booleans(),
            "f32": st.floats(width=32),
            "f64": st.floats(),
            "char": SCALARS,
        }[ty.kind]
    if isinstance(ty, ListType):
        if ty.element == U8:
            data = st.binary(max_size=max_bytes)
            if long_bytes is not None:
                data |= st.binary(min_size=long_bytes[0], max_size=long_bytes[1])
            return data
        return st.lists(of(ty.element), max_size=max_list)
    if isinstance(ty, OptionType):
        inner = of(ty.inner)
        return st.none() | (inner.map(Some) if isinstance(ty.inner, OptionType) else inner)
    if isinstance(ty, ResultType):
        ok = st.none() if ty.ok is None else of(ty.ok)
        err = st.none() if ty.err is None else of(ty.err)
        return ok.map(Ok) | err.map(Err)
    if isinstance(ty, TupleType):
        return st.tuples(*(of(t) for t in ty.elements))
    if isinstance(ty, RecordType):
        return st.fixed_dictionaries({n: of(t) for n, t in ty.fields})
    if isinstance(ty, VariantType):
        return st.one_of(*(
            st.just(Case(n)) if t is None else of(t).map(partial(Case, n))
            for n, t in ty.cases
        ))
    if isinstance(ty, EnumType):
        return st.sampled_from(ty.cases)
    if isinstance(ty, (OwnType, BorrowType)) and resources is not None:
        return resources
    assert isinstance(ty, FlagsType), f"no value strategy for {ty!r}"
    return st.frozensets(st.sampled_from(ty.names)) if ty.names else st.just(frozenset())


def typed_values(
    types: st.SearchStrategy[WitType], **sizes: Any
) -> st.SearchStrategy[tuple[WitType, Any]]:
    """Pairs ``(type, value of that type)``; ``sizes`` go to ``values_of``."""
    return types.flatmap(lambda ty: st.tuples(st.just(ty), values_of(ty, **sizes)))
