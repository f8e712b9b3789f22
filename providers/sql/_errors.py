"""asyncpg exceptions → ``trellis:sql/query`` ``sql-error`` cases.

PostgreSQL classifies every error by SQLSTATE; the class (first two characters) decides the
case, so errors asyncpg has no dedicated exception for still land in the right one.
"""

from __future__ import annotations

import asyncio

import asyncpg

from ...lattice.wit.values import Case

_NOT_FOUND = {"42P01", "42703", "42883", "42704", "3F000", "42P02"}
"""Undefined table, column, function, object, schema, parameter."""
_CONNECTION_CLASSES = {"08", "28", "3D", "57"}
"""Connection exception, bad login, unknown database, operator intervention (server shutting
down); ``57014`` (statement timeout) is excluded below."""


def sql_error(exc: BaseException, *, timeout_ms: int) -> Case:
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        text = _describe(exc, state)
        if state == "57014":
            return Case("other", f"statement cancelled after {timeout_ms} ms "
                                 f"(statement_timeout_ms): {text}")
        if state in _NOT_FOUND:
            return Case("not-found", text)
        klass = state[:2]
        if klass == "23":
            return Case("constraint", text)
        if klass == "42":
            return Case("syntax", text)
        if klass in _CONNECTION_CLASSES or state == "53300":  # 53300: too many connections
            return Case("connection", text)
        return Case("other", text)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return Case("other", f"no answer from PostgreSQL within {timeout_ms} ms")
    if isinstance(exc, OSError):  # refused, unreachable, DNS: before PostgreSQL said anything
        return Case("connection", f"{type(exc).__name__}: {exc}")
    return Case("other", f"{type(exc).__name__}: {exc}")


def _describe(exc: asyncpg.PostgresError, state: str) -> str:
    detail = getattr(exc, "detail", None)
    text = f"{exc} (SQLSTATE {state})" if state else str(exc)
    return f"{text}: {detail}" if detail else text
