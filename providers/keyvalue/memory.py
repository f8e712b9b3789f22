"""``keyvalue-memory``: ``wasi:keyvalue`` in the provider's memory, for tests and development.

Every link of one provider instance sees the same stores (a store per ``open`` identifier);
nothing survives a restart. Config (provider or link target config):

- ``stores=a,b`` — only these identifiers open; others get ``no-such-store`` (default: any).
- ``page_size=1000`` — keys per ``list-keys`` page.

All operations run on the host's event loop without awaiting in between, so each is atomic:
``increment`` and ``swap`` need no lock. CAS compares a per-key version counter. See
``common.py`` for the two WIT versions (``implementation("store@0.2.0-draft", link)``).
"""

from __future__ import annotations

import itertools
from typing import Any

from ..sdk import Link, Provider
from .common import (
    DEFAULT_PAGE_SIZE,
    INTERFACES,
    Bucket,
    implementation_for,
    int_setting,
    no_such_store,
    parse_counter,
    settings,
)

_Data = dict[str, tuple[bytes, int]]
"""key → (value, version)."""


class MemoryBucket(Bucket):
    def __init__(self, identifier: str, data: _Data, versions: itertools.count[int],
                 **kwargs: Any) -> None:
        super().__init__(identifier, **kwargs)
        self._data = data
        self._versions = versions

    def _put(self, key: str, value: bytes) -> None:
        self._data[key] = (value, next(self._versions))

    async def _get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        return None if entry is None else entry[0]

    async def _set(self, key: str, value: bytes) -> None:
        self._put(key, value)

    async def _delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def _exists(self, key: str) -> bool:
        return key in self._data

    async def _list(self, cursor: int) -> tuple[list[str], int | None]:
        keys = sorted(self._data)
        end = cursor + self.page_size
        return keys[cursor:end], (end if end < len(keys) else None)

    async def _increment(self, key: str, delta: int) -> int:
        entry = self._data.get(key)
        value = parse_counter(None if entry is None else entry[0], f"key {key!r}") + delta
        self._put(key, str(value).encode())
        return value

    async def _cas_read(self, key: str) -> tuple[bytes | None, int]:
        entry = self._data.get(key)
        return (None, 0) if entry is None else entry

    async def _cas_write(self, key: str, token: int, value: bytes) -> bool:
        entry = self._data.get(key)
        if (0 if entry is None else entry[1]) != token:
            return False
        self._put(key, value)
        return True


class MemoryKeyValue(Provider):
    name = "keyvalue-memory"
    interfaces = INTERFACES

    def __init__(self, config: dict[str, str] | None = None) -> None:
        super().__init__(config)
        self._stores: dict[str, _Data] = {}
        self._versions = itertools.count(1)
        int_setting(self.config, "page_size", DEFAULT_PAGE_SIZE)  # fail early on bad config

    def implementation(self, interface: str, link: Link | None = None) -> Any:
        config = settings(self.config, link)
        allowed = {s.strip() for s in config.get("stores", "").split(",") if s.strip()}
        page_size = int_setting(config, "page_size", DEFAULT_PAGE_SIZE)

        async def opener(identifier: str, version: str) -> MemoryBucket:
            if allowed and identifier not in allowed:
                raise no_such_store()
            data = self._stores.setdefault(identifier, {})
            return MemoryBucket(identifier, data, self._versions, version=version,
                                page_size=page_size)

        return implementation_for(interface, opener, MemoryBucket)
