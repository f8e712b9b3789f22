"""sql-postgres against the real PostgreSQL on 127.0.0.1:5432 (database ``test``, user postgres).

Each test gets a schema of its own (dropped afterwards), so runs never collide. The last tests
drive the provider from a componentize-py guest that only knows ``trellis:sql/query``.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from trellis.host.build import build_python_component
from trellis.host.runtime.imports import HostImports
from trellis.host.runtime.runtime import Runtime
from trellis.lattice.wit.values import Case, Err, Ok
from trellis.providers.registry import provider_class
from trellis.providers.sdk import Link, ProviderContext, ProviderError
from trellis.providers.sql import sql_wit_path
from trellis.providers.sql.postgres import PostgresSql

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SQL_APP_DIR = Path(__file__).resolve().parent.parent / "guests" / "sql-app"
LINK = Link(source="sql-app", target="sql", namespace="trellis", package="sql",
            interfaces=("query",))


async def _pg_available() -> bool:
    try:
        conn = await asyncpg.connect(PG_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A fresh schema for this test, dropped with everything in it afterwards."""
    if not await _pg_available():
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}")
    name = f"trellis_test_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
        yield name
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        await conn.close()


async def _started(**config: str) -> PostgresSql:
    provider = PostgresSql({"url": PG_URL, **config})
    await provider.start(ProviderContext(provider_id="sql-test"))
    return provider


@pytest.fixture
async def sql(schema: str) -> AsyncIterator[Any]:
    """The ``query`` implementation of a started provider."""
    provider = await _started(pool_min="1", pool_max="4")
    try:
        yield provider.implementation("query", LINK)
    finally:
        await provider.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def T(s: str) -> Case:  # noqa: N802 - reads like the WIT case
    return Case("text", s)


# -- config --------------------------------------------------------------------------------------

def test_registered_as_builtin() -> None:
    assert provider_class("sql-postgres") is PostgresSql


@pytest.mark.parametrize(("config", "setting"), [
    ({}, "url="),
    ({"url": "mysql://root@localhost/db"}, "url="),
    ({"url": PG_URL, "pool_max": "lots"}, "pool_max"),
    ({"url": PG_URL, "pool_min": "5", "pool_max": "2"}, "pool_min"),
    ({"url": PG_URL, "statement_timeout_ms": "0"}, "statement_timeout_ms"),
])
async def test_bad_config_names_the_setting(config: dict[str, str], setting: str) -> None:
    with pytest.raises(ProviderError, match=setting):
        await PostgresSql(config).start(ProviderContext(provider_id="sql-test"))


def test_wit_ships_with_the_package() -> None:
    text = sql_wit_path().read_text()
    assert "package trellis:sql@0.1.0;" in text
    assert "interface query" in text


# -- values --------------------------------------------------------------------------------------

ALL_TYPES = """(id serial PRIMARY KEY, b bool, i int8, f float8, t text, by bytea, j jsonb,
    ts timestamptz, tsn timestamp, d date, num numeric)"""
INSERT_ALL = "INSERT INTO {}.all_types (b, i, f, t, by, j, ts, tsn, d, num) " \
             "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
SELECT_ALL = "SELECT b, i, f, t, by, j, ts, tsn, d, num FROM {}.all_types ORDER BY id"


async def test_every_value_type_round_trips(sql: Any, schema: str) -> None:
    assert await sql.execute(f"CREATE TABLE {schema}.all_types {ALL_TYPES}", []) == Ok(0)
    values = [
        Case("bool", True), Case("int", 2**40 + 7), Case("float", 1.5), T("héllo ✓"),
        Case("bytes", b"\x00\xffbin"), Case("json", '{"a": [1, 2], "b": null}'),
        Case("timestamp", "2024-05-01T12:30:00+02:00"), Case("timestamp", "2024-05-01T12:30:00"),
        Case("timestamp", "2024-05-01"), Case("numeric", "12345678901234567890.0100"),
    ]
    assert await sql.execute(INSERT_ALL.format(schema), values) == Ok(1)
    assert await sql.execute(INSERT_ALL.format(schema), [Case("null")] * 10) == Ok(1)

    result = await sql.query(SELECT_ALL.format(schema), [])
    assert isinstance(result, Ok)
    got = result.value
    assert [(c["name"], c["type-name"]) for c in got["columns"]] == [
        ("b", "bool"), ("i", "int8"), ("f", "float8"), ("t", "text"), ("by", "bytea"),
        ("j", "jsonb"), ("ts", "timestamptz"), ("tsn", "timestamp"), ("d", "date"),
        ("num", "numeric"),
    ]
    first, nulls = got["rows"]
    assert first[:5] == values[:5]
    assert first[5].name == "json" and json.loads(first[5].value) == {"a": [1, 2], "b": None}
    assert first[6] == Case("timestamp", "2024-05-01T10:30:00+00:00")  # same instant, in UTC
    assert first[7] == Case("timestamp", "2024-05-01T12:30:00")
    assert first[8] == Case("timestamp", "2024-05-01")
    assert first[9] == Case("numeric", "12345678901234567890.0100")  # no precision lost
    assert nulls == [Case("null")] * 10


async def test_numbers_bind_to_the_column_type(sql: Any, schema: str) -> None:
    """An int or float sent to a numeric column, numeric text to float: what PostgreSQL would
    accept as a literal binds without casts in the statement."""
    await sql.execute(f"CREATE TABLE {schema}.n (num numeric, f float8, i int4)", [])
    assert await sql.execute(f"INSERT INTO {schema}.n VALUES ($1, $2, $3)",
                             [Case("int", 7), Case("numeric", "2.25"), Case("numeric", "3")]) \
        == Ok(1)
    assert await sql.execute(f"INSERT INTO {schema}.n VALUES ($1, $2, $3)",
                             [Case("float", 0.1), Case("int", 2), Case("int", 4)]) == Ok(1)
    result = await sql.query(f"SELECT num, f, i FROM {schema}.n", [])
    assert result.value["rows"] == [
        [Case("numeric", "7"), Case("float", 2.25), Case("int", 3)],
        [Case("numeric", "0.1"), Case("float", 2.0), Case("int", 4)],
    ]


async def test_other_types_stay_readable(sql: Any) -> None:
    result = await sql.query(
        "SELECT ARRAY[1, 2] AS arr, '00000000-0000-0000-0000-000000000001'::uuid AS id, "
        "'1 day'::interval AS span, 'NaN'::numeric AS nan", [])
    row = result.value["rows"][0]
    assert row[0] == Case("json", "[1, 2]")
    assert row[1] == T("00000000-0000-0000-0000-000000000001")
    assert row[2].name == "text"
    assert row[3] == Case("numeric", "NaN")


async def test_empty_result_still_has_columns(sql: Any) -> None:
    result = await sql.query("SELECT 1 AS one, 'x'::text AS two WHERE false", [])
    assert result == Ok({"columns": [{"name": "one", "type-name": "int4"},
                                     {"name": "two", "type-name": "text"}], "rows": []})


async def test_execute_counts_rows(sql: Any, schema: str) -> None:
    await sql.execute(f"CREATE TABLE {schema}.c (x int)", [])
    assert await sql.execute(f"INSERT INTO {schema}.c SELECT generate_series(1, $1)",
                             [Case("int", 5)]) == Ok(5)
    assert await sql.execute(f"UPDATE {schema}.c SET x = x + 1 WHERE x > $1",
                             [Case("int", 2)]) == Ok(3)
    assert await sql.execute(f"DELETE FROM {schema}.c", []) == Ok(5)


# -- injection -----------------------------------------------------------------------------------

async def test_parameters_are_bound_never_spliced(sql: Any, schema: str) -> None:
    await sql.execute(f"CREATE TABLE {schema}.users (id serial PRIMARY KEY, name text)", [])
    evil = f"x'); DROP TABLE {schema}.users; --"
    assert await sql.execute(f"INSERT INTO {schema}.users (name) VALUES ($1)", [T(evil)]) == Ok(1)
    or_true = "' OR '1'='1"
    result = await sql.query(f"SELECT name FROM {schema}.users WHERE name = $1", [T(or_true)])
    assert result.value["rows"] == []  # the quote trick matched nothing
    result = await sql.query(f"SELECT name FROM {schema}.users", [])
    assert result.value["rows"] == [[T(evil)]]  # stored literally; the table is still there


# -- errors --------------------------------------------------------------------------------------

async def test_syntax_error(sql: Any) -> None:
    result = await sql.query("SELEKT 1", [])
    assert isinstance(result, Err) and result.value.name == "syntax"
    assert "42601" in result.value.value


async def test_unique_violation_is_a_constraint_error(sql: Any, schema: str) -> None:
    await sql.execute(f"CREATE TABLE {schema}.u (k text UNIQUE)", [])
    assert await sql.execute(f"INSERT INTO {schema}.u VALUES ($1)", [T("a")]) == Ok(1)
    result = await sql.execute(f"INSERT INTO {schema}.u VALUES ($1)", [T("a")])
    assert isinstance(result, Err) and result.value.name == "constraint"
    assert "already exists" in result.value.value  # PostgreSQL's detail is kept


async def test_missing_table_is_not_found(sql: Any, schema: str) -> None:
    result = await sql.query(f"SELECT * FROM {schema}.nope", [])
    assert isinstance(result, Err) and result.value.name == "not-found"


async def test_wrong_parameter_count_or_type(sql: Any) -> None:
    result = await sql.query("SELECT $1::int + $2::int", [Case("int", 1)])
    assert result == Err(Case("other", result.value.value))
    assert "2 placeholder" in result.value.value
    result = await sql.query("SELECT $1::timestamptz", [Case("timestamp", "yesterday-ish")])
    assert result.value.name == "other" and "$1" in result.value.value


async def test_statement_timeout(schema: str) -> None:
    provider = await _started(statement_timeout_ms="200")
    try:
        started = time.monotonic()
        result = await provider.implementation("query", LINK).query("SELECT pg_sleep(5)", [])
        assert time.monotonic() - started < 3
        assert result.value.name == "other" and "statement_timeout_ms" in result.value.value
    finally:
        await provider.stop()


async def test_unreachable_database_is_a_quick_connection_error() -> None:
    provider = PostgresSql({"url": f"postgresql://postgres@127.0.0.1:{_free_port()}/test",
                            "connect_timeout_ms": "2000"})
    await provider.start(ProviderContext(provider_id="sql-test"))  # not fatal: it may come up
    try:
        started = time.monotonic()
        result = await provider.implementation("query", LINK).query("SELECT 1", [])
        assert time.monotonic() - started < 3
        assert isinstance(result, Err) and result.value.name == "connection"
        health = await provider.health()
        assert not health.ok and "127.0.0.1" in health.message
    finally:
        await provider.stop()


async def test_unknown_database_is_a_connection_error(schema: str) -> None:
    provider = await _started(url="postgresql://postgres@127.0.0.1:5432/no_such_db_trellis")
    try:
        result = await provider.implementation("query", LINK).execute("SELECT 1", [])
        assert isinstance(result, Err) and result.value.name == "connection"
        assert "no_such_db_trellis" in result.value.value
    finally:
        await provider.stop()


async def test_health(sql: Any, schema: str) -> None:
    provider = await _started()
    try:
        health = await provider.health()
        assert health.ok, health.message
    finally:
        await provider.stop()


# -- end to end: a component that only knows trellis:sql/query -----------------------------------

@pytest.fixture(scope="module")
def aot_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled-component cache per module: the 18 MB guest compiles once, not per test."""
    return tmp_path_factory.mktemp("aot")


@pytest.fixture(scope="module")
def sql_app_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sql-app guest, built against the WIT the installed provider ships (staged here, so
    no copy of ``sql.wit`` lives in the guest)."""
    wit = tmp_path_factory.mktemp("sql-app-wit")
    shutil.copytree(SQL_APP_DIR / "wit", wit, dirs_exist_ok=True)
    (wit / "deps" / "trellis-sql").mkdir(parents=True)
    shutil.copy(sql_wit_path(), wit / "deps" / "trellis-sql" / "sql.wit")
    return build_python_component(SQL_APP_DIR, wit=wit)


@pytest.fixture
async def sql_app(sql_app_wasm: Path, schema: str, aot_cache: Path) -> AsyncIterator[Any]:
    provider = await _started()
    imports = HostImports()
    imports.register("trellis:sql/query", provider.implementation("query", LINK))
    try:
        async with Runtime(imports=imports, cache_dir=aot_cache) as rt:
            yield rt.load(sql_app_wasm)
    finally:
        await provider.stop()


@pytest.mark.slow
async def test_component_round_trips_every_type(sql_app: Any, schema: str) -> None:
    assert await sql_app.invoke("run-execute", f"CREATE TABLE {schema}.all_types {ALL_TYPES}",
                                []) == Ok(0)
    values = [
        Case("bool", False), Case("int", -(2**62)), Case("float", -0.25), T("ünï"),
        Case("bytes", bytes(range(256))), Case("json", "[1, 2]"),
        Case("timestamp", "1999-12-31T23:59:59.250000+00:00"),
        Case("timestamp", "1999-12-31T23:59:59"), Case("timestamp", "1999-12-31"),
        Case("numeric", "-0.000001"),
    ]
    assert await sql_app.invoke("run-execute", INSERT_ALL.format(schema), values) == Ok(1)
    result = await sql_app.invoke("run-query", SELECT_ALL.format(schema), [])
    assert result.value["rows"] == [values]
    assert result.value["columns"][0] == {"name": "b", "type-name": "bool"}


@pytest.mark.slow
async def test_component_gets_typed_errors(sql_app: Any, schema: str) -> None:
    result = await sql_app.invoke("run-query", "SELEKT", [])
    assert isinstance(result, Err) and result.value.name == "syntax"
    result = await sql_app.invoke("run-query", f"SELECT * FROM {schema}.missing", [])
    assert isinstance(result, Err) and result.value.name == "not-found"


@pytest.mark.slow
async def test_component_cannot_be_injected(sql_app: Any, schema: str) -> None:
    table = f"{schema}.people"
    await sql_app.invoke("run-execute",
                         f"CREATE TABLE {table} (id serial PRIMARY KEY, name text UNIQUE)", [])
    evil = f"Robert'); DROP TABLE {table}; --"
    assert await sql_app.invoke("add-name", table, "Alice") == Ok(1)
    assert await sql_app.invoke("add-name", table, evil) == Ok(1)
    assert await sql_app.invoke("names", table) == Ok(["Alice", evil])
    result = await sql_app.invoke("add-name", table, "Alice")
    assert isinstance(result, Err) and result.value.startswith("Constraint: ")
