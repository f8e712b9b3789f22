"""``trellis:sql/query`` values ⇄ what asyncpg binds and returns.

Parameters are converted by the *parameter's* type, which PostgreSQL infers when the statement
is prepared: ``numeric("1.50")`` binds as a ``Decimal`` to a numeric column and ``timestamp(…)``
as the datetime flavour the column wants, so guests send WIT values without knowing asyncpg's
Python types. Results are converted by Python type; anything without a case of its own (arrays
and composites → ``json``, uuid, inet, interval → ``text``) stays readable rather than failing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ...lattice.wit.values import Case

_S64 = range(-(1 << 63), 1 << 63)
_FLOATS = {"float4", "float8"}
_INTS = {"int2", "int4", "int8", "oid"}
_TIMES = {"timestamp", "timestamptz", "date", "time", "timetz"}
_JSON = {"json", "jsonb"}


class ParamError(ValueError):
    """A parameter cannot be bound to its placeholder's type."""


def to_params(values: Sequence[Case], types: Sequence[str]) -> list[Any]:
    """Bind-ready Python values for ``$1…$n``; ``types`` are the prepared parameter types."""
    if len(values) != len(types):
        raise ParamError(
            f"the statement has {len(types)} placeholder(s) ($1…) but {len(values)} "
            "parameter(s) were given"
        )
    out = []
    for i, (value, type_name) in enumerate(zip(values, types, strict=True), 1):
        try:
            out.append(_to_param(value, type_name))
        except (ValueError, ArithmeticError) as exc:
            raise ParamError(f"parameter ${i} ({type_name}): {exc}") from None
    return out


def _to_param(value: Case, type_name: str) -> Any:
    kind, v = value.name, value.value
    if kind == "null":
        return None
    if kind == "int" and type_name == "numeric":
        return Decimal(v)
    if kind in ("int", "numeric") and type_name in _FLOATS:
        return float(v)
    if kind == "float" and type_name == "numeric":
        return Decimal(repr(v))
    if kind == "numeric":
        if type_name in _INTS:
            return int(Decimal(v).to_integral_exact())
        return Decimal(v) if type_name == "numeric" else v
    if kind in ("timestamp", "text") and type_name in _TIMES:
        return _parse_time(v, type_name)
    if kind == "bytes":
        return bytes(v)
    return v  # bool, int, float, text, json: asyncpg's own codecs take them as they are


def _parse_time(text: str, type_name: str) -> Any:
    """ISO 8601 → the datetime flavour of the column. An offset given to a ``timestamp``
    (without time zone) is converted to UTC; a ``timestamptz`` without one is taken as UTC."""
    if type_name in ("time", "timetz"):
        t = dt.time.fromisoformat(text)
        return t.replace(tzinfo=None) if type_name == "time" else t
    stamp = dt.datetime.fromisoformat(text)
    if type_name == "date":
        return stamp.date()
    if type_name == "timestamp":
        return stamp.astimezone(dt.UTC).replace(tzinfo=None) if stamp.tzinfo else stamp
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def to_value(value: Any, type_name: str) -> Case:
    """One result cell as a ``pg-value``."""
    if value is None:
        return Case("null")
    if isinstance(value, bool):
        return Case("bool", value)
    if isinstance(value, int):
        return Case("int", value) if value in _S64 else Case("numeric", str(value))
    if isinstance(value, float):
        return Case("float", value)
    if isinstance(value, Decimal):
        return Case("numeric", str(value))
    if isinstance(value, str):
        return Case("json" if type_name in _JSON else "text", value)
    if isinstance(value, bytes | bytearray | memoryview):
        return Case("bytes", bytes(value))
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return Case("timestamp", value.isoformat())
    if isinstance(value, list | tuple):  # arrays; composites arrive as asyncpg Records (tuples)
        return Case("json", json.dumps(list(value), default=_json_default))
    return Case("text", str(value))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)  # Decimal, UUID, inet, interval: their text form
