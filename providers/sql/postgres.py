"""``sql-postgres``: ``trellis:sql/query`` (``providers/wit/sql.wit``) on PostgreSQL via asyncpg.

Config (the provider's named config)::

    url=postgresql://user:password@host:5432/dbname   (required)
    pool_min=1  pool_max=10                          connections kept / allowed per provider
    statement_timeout_ms=30000                       PostgreSQL cancels longer statements
    connect_timeout_ms=5000                          opening one connection

Every statement is prepared and its parameters are *bound* (``$1``, ``$2``, …) with the types
PostgreSQL inferred for them; a parameter's text is never part of the SQL, so a value like
``'); DROP TABLE users; --`` is stored as exactly that string.

The pool is opened lazily: a database that is down when the provider starts (or goes away later)
turns calls into ``sql-error.connection`` answers, quickly, and the provider recovers on its own
once PostgreSQL is back, without a restart. One pool serves every link.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from ...lattice.wit.values import Case, Err, Ok
from ..sdk import Health, Link, Provider, ProviderContext, ProviderError
from ._errors import sql_error
from ._values import ParamError, to_params, to_value

__all__ = ["PostgresSql"]

_SCHEMES = ("postgresql", "postgres")
_GRACE_S = 1.0
"""Extra client-side wait beyond the server's statement timeout, so the server's own (clearer)
cancellation normally wins the race."""


def _int_setting(config: Mapping[str, str], key: str, default: int, minimum: int) -> int:
    raw = config.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ProviderError(f"sql-postgres: {key}={raw!r} is not an integer") from None
    if value < minimum:
        raise ProviderError(f"sql-postgres: {key}={value} must be at least {minimum}")
    return value


class PostgresSql(Provider):
    """One asyncpg pool per provider; ``implementation`` hands every link the same API."""

    name = "sql-postgres"
    interfaces = ("trellis:sql/query",)

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        super().__init__(config)
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._api = SqlQuery(self)

    def _configure(self) -> None:
        """Validate settings up front: bad config is a ``ProviderError`` naming the setting."""
        url = self.config.get("url", "").strip()
        if not url:
            raise ProviderError(
                "sql-postgres needs url=postgresql://user@host:5432/dbname in its config"
            )
        if urlsplit(url).scheme not in _SCHEMES:
            raise ProviderError(
                f"sql-postgres: url={url!r} must start with postgresql:// (or postgres://)"
            )
        self.url = url
        self.pool_min = _int_setting(self.config, "pool_min", 1, 0)
        self.pool_max = _int_setting(self.config, "pool_max", 10, 1)
        if self.pool_min > self.pool_max:
            raise ProviderError(
                f"sql-postgres: pool_min={self.pool_min} is larger than pool_max={self.pool_max}"
            )
        self.statement_timeout_ms = _int_setting(self.config, "statement_timeout_ms", 30_000, 1)
        self.connect_timeout_ms = _int_setting(self.config, "connect_timeout_ms", 5_000, 1)

    @property
    def deadline_s(self) -> float:
        """The longest one call may take: a connection, the statement, and some grace."""
        return (self.connect_timeout_ms + self.statement_timeout_ms) / 1000 + _GRACE_S

    async def start(self, context: ProviderContext) -> None:
        await super().start(context)
        self._configure()
        try:
            await self.pool()
        except Exception as exc:  # not fatal: calls answer sql-error.connection until it's up
            self.log.warning("sql-postgres: PostgreSQL not reachable yet at %s: %s",
                             _redacted(self.url), exc)

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self.connect_timeout_ms / 1000)
        except (TimeoutError, Exception):
            pool.terminate()

    async def health(self) -> Health:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.deadline_s):
                async with (await self.pool()).acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except Exception as exc:
            return Health(False, f"PostgreSQL at {_redacted(self.url)}: {exc}")
        return Health(True, f"SELECT 1 in {(time.monotonic() - started) * 1000:.1f} ms")

    def implementation(self, interface: str, link: Link) -> Any:
        return self._api

    async def pool(self) -> asyncpg.Pool:
        """The pool, opened on first use (and again after a failed attempt)."""
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                app = self.context.provider_id if self.context else self.name
                self._pool = await asyncpg.create_pool(
                    self.url,
                    min_size=self.pool_min,
                    max_size=self.pool_max,
                    timeout=self.connect_timeout_ms / 1000,
                    server_settings={
                        "statement_timeout": str(self.statement_timeout_ms),
                        "application_name": f"trellis:{app}"[:63],
                    },
                )
            return self._pool


class SqlQuery:
    """The ``query`` interface's functions, in the Trellis value model."""

    def __init__(self, provider: PostgresSql) -> None:
        self._p = provider

    async def query(self, statement: str, params: Sequence[Case]) -> Ok | Err:
        try:
            async with asyncio.timeout(self._p.deadline_s):
                async with (await self._p.pool()).acquire() as conn:
                    stmt = await conn.prepare(statement)
                    args = to_params(params, [t.name for t in stmt.get_parameters()])
                    rows = await stmt.fetch(*args)
                    attributes = stmt.get_attributes()  # only valid while we hold conn
        except Exception as exc:
            return Err(self._error(exc))
        types = [a.type.name for a in attributes]
        return Ok({
            "columns": [{"name": a.name, "type-name": a.type.name} for a in attributes],
            "rows": [[to_value(v, t) for v, t in zip(row, types, strict=True)] for row in rows],
        })

    async def execute(self, statement: str, params: Sequence[Case]) -> Ok | Err:
        try:
            async with asyncio.timeout(self._p.deadline_s):
                async with (await self._p.pool()).acquire() as conn:
                    if params:
                        stmt = await conn.prepare(statement)
                        args = to_params(params, [t.name for t in stmt.get_parameters()])
                        await stmt.fetch(*args)
                        status = stmt.get_statusmsg()
                    else:  # the simple protocol: DDL and multi-statement scripts work too
                        status = await conn.execute(statement)
        except Exception as exc:
            return Err(self._error(exc))
        return Ok(_rows_affected(status))

    def _error(self, exc: Exception) -> Case:
        if isinstance(exc, ParamError):
            return Case("other", str(exc))
        return sql_error(exc, timeout_ms=self._p.statement_timeout_ms)


def _rows_affected(status: str | None) -> int:
    """``INSERT 0 3`` → 3, ``UPDATE 2`` → 2, ``CREATE TABLE`` → 0."""
    last = (status or "").rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _redacted(url: str) -> str:
    """The URL without its password, for logs and health messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
