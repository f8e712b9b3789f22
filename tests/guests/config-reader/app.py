"""A guest that reads runtime config through ``wasi:config/store`` and returns what it got."""

from __future__ import annotations

import wit_world
from componentize_py_types import Err
from wit_world.imports import store


def _describe(exc: Err) -> str:
    """``upstream: …`` or ``io: …`` for the store's error variant."""
    error = exc.value
    return f"{type(error).__name__.removeprefix('Error_').lower()}: {error.value}"


class WitWorld(wit_world.WitWorld):
    def lookup(self, key: str) -> str | None:
        try:
            return store.get(key)
        except Err as exc:
            raise Err(_describe(exc)) from None

    def all(self) -> list[tuple[str, str]]:
        try:
            return store.get_all()
        except Err as exc:
            raise Err(_describe(exc)) from None
