"""The wasi:keyvalue@0.2.0-draft2 test guest: thin wrappers over store, atomics and batch.

Store errors propagate as exceptions (the call traps), except in ``open_error``, which reports
the error case so tests can check the mapping.
"""

from __future__ import annotations

import wit_world
from componentize_py_types import Err
from wit_world.imports import atomics, batch, store


class WitWorld(wit_world.WitWorld):
    def hit(self, store_id: str, key: str) -> int:
        with store.open(store_id) as bucket:
            return atomics.increment(bucket, key, 1)

    def put(self, store_id: str, key: str, value: str) -> None:
        with store.open(store_id) as bucket:
            bucket.set(key, value.encode())

    def get(self, store_id: str, key: str) -> str | None:
        with store.open(store_id) as bucket:
            value = bucket.get(key)
            return None if value is None else value.decode()

    def keys(self, store_id: str) -> list[str]:
        found: list[str] = []
        cursor: str | None = None
        with store.open(store_id) as bucket:
            while True:
                page = bucket.list_keys(cursor)
                found += page.keys
                cursor = page.cursor
                if cursor is None:
                    return found

    def swap(self, store_id: str, key: str, expected: str | None, value: str) -> bool:
        with store.open(store_id) as bucket:
            cas = atomics.Cas.new(bucket, key)
            current = cas.current()
            if (None if current is None else current.decode()) != expected:
                cas.__exit__(None, None, None)
                return False
            try:
                atomics.swap(cas, value.encode())
            except Err as exc:
                if isinstance(exc.value, atomics.CasError_CasFailed):
                    return False
                raise
            return True

    def get_many(self, store_id: str, keys: list[str]) -> list[str | None]:
        with store.open(store_id) as bucket:
            pairs = batch.get_many(bucket, keys)
            return [None if v is None else v.decode() for _, v in pairs]

    def set_many(self, store_id: str, pairs: list[tuple[str, str]]) -> None:
        with store.open(store_id) as bucket:
            batch.set_many(bucket, [(k, v.encode()) for k, v in pairs])

    def open_error(self, store_id: str) -> str:
        try:
            store.open(store_id).__exit__(None, None, None)
        except Err as exc:
            return type(exc.value).__name__
        return "ok"
