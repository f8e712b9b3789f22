"""The sql-app test guest: talks to PostgreSQL only through the ``trellis:sql/query`` import."""

from __future__ import annotations

import wit_world
from componentize_py_types import Err
from wit_world.imports import query
from wit_world.imports.query import PgValue_Text


def _describe(err: Err) -> str:
    case = err.value
    return f"{type(case).__name__.removeprefix('SqlError_')}: {case.value}"


class WitWorld(wit_world.WitWorld):
    def run_query(self, statement: str, params: list[query.PgValue]) -> query.ResultSet:
        return query.query(statement, params)  # an Err raised here is the export's Err

    def run_execute(self, statement: str, params: list[query.PgValue]) -> int:
        return query.execute(statement, params)

    def add_name(self, table: str, name: str) -> int:
        # The table name is the app's own (trusted); the user's name is always a parameter.
        try:
            return query.execute(f"INSERT INTO {table} (name) VALUES ($1)", [PgValue_Text(name)])
        except Err as err:
            raise Err(_describe(err)) from None

    def names(self, table: str) -> list[str]:
        try:
            result = query.query(f"SELECT name FROM {table} ORDER BY id", [])
        except Err as err:
            raise Err(_describe(err)) from None
        return [str(row[0].value) for row in result.rows]
