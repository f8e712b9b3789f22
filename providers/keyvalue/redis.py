"""``keyvalue-redis``: ``wasi:keyvalue`` on Redis (``redis.asyncio``).

A store is a key prefix: ``open("cart")`` reads and writes the Redis keys ``cart:<key>``
(after the optional ``key_prefix``). Config (provider, overridden by the link's target config):

- ``url=redis://127.0.0.1:6379`` — the server (``rediss://`` for TLS, ``/N`` for a database).
- ``key_prefix=`` — prepended to every key, e.g. ``app1:`` to share one Redis.
- ``timeout=5`` — seconds any Redis operation may take (connect included); past it the guest
  gets ``error::other``, so a Redis outage never hangs a component.
- ``page_size=1000`` — the ``COUNT`` hint of the ``SCAN`` behind ``list-keys``; the cursor is
  Redis's own ``SCAN`` cursor.

``increment`` is ``INCRBY``; ``cas``/``swap`` compare the value read at ``cas.new`` with a Lua
script (atomic on the server; a value changed and changed back counts as unchanged). Permission
errors map to ``access-denied``, every other Redis error to ``other``. See ``common.py`` for
the two WIT versions.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import redis.asyncio as aioredis
from redis import exceptions as rex

from ...lattice.wit.values import Case
from ..sdk import Health, Link, Provider, ProviderContext, ProviderError
from .common import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TIMEOUT,
    INTERFACES,
    Bucket,
    KvError,
    float_setting,
    implementation_for,
    int_setting,
    other,
    settings,
)

DEFAULT_URL = "redis://127.0.0.1:6379"

_CAS_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
"""

_GLOB = re.compile(r"([*?\[\]\\])")


class RedisBucket(Bucket):
    backend_errors: ClassVar[tuple[type[BaseException], ...]] = (rex.RedisError,)

    def __init__(self, identifier: str, client: aioredis.Redis, prefix: str,
                 **kwargs: Any) -> None:
        super().__init__(identifier, **kwargs)
        self._r = client
        self._prefix = prefix

    @classmethod
    def map_error(cls, exc: BaseException) -> Case | None:
        if isinstance(exc, (rex.NoPermissionError, rex.AuthenticationError)):
            return Case("access-denied")
        return super().map_error(exc)

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def _get(self, key: str) -> bytes | None:
        value = await self._r.get(self._k(key))
        return None if value is None else bytes(value)  # type: ignore[arg-type]

    async def _set(self, key: str, value: bytes) -> None:
        await self._r.set(self._k(key), value)

    async def _delete(self, key: str) -> None:
        await self._r.delete(self._k(key))

    async def _exists(self, key: str) -> bool:
        return bool(await self._r.exists(self._k(key)))

    async def _list(self, cursor: int) -> tuple[list[str], int | None]:
        pattern = _GLOB.sub(r"\\\1", self._prefix) + "*"
        cut = len(self._prefix.encode())
        keys: list[str] = []
        # SCAN may return empty batches before the end (other keys share the database):
        # keep going until a page has keys or the scan is over, so an empty page means done.
        while True:
            after, raw = await self._r.scan(cursor, match=pattern, count=self.page_size)
            keys += [bytes(k)[cut:].decode("utf-8", "replace")  # type: ignore[arg-type]
                     for k in raw]
            cursor = int(after)
            if keys or not cursor:
                return keys, cursor or None

    async def _increment(self, key: str, delta: int) -> int:
        try:
            return int(await self._r.incrby(self._k(key), delta))
        except rex.ResponseError as exc:
            raise KvError(other(f"cannot increment key {key!r}: {exc}")) from None

    async def _cas_read(self, key: str) -> tuple[bytes | None, bytes | None]:
        value = await self._get(key)
        return value, value

    async def _cas_write(self, key: str, token: bytes | None, value: bytes) -> bool:
        flag, expected = ("0", b"") if token is None else ("1", token)
        done = await self._r.eval(
            _CAS_SCRIPT, 1, self._k(key), flag, expected, value)
        return bool(done)


class RedisKeyValue(Provider):
    name = "keyvalue-redis"
    interfaces = INTERFACES

    def __init__(self, config: dict[str, str] | None = None) -> None:
        super().__init__(config)
        self._clients: dict[tuple[str, float], aioredis.Redis] = {}

    def _client(self, config: dict[str, str]) -> tuple[aioredis.Redis, float]:
        """One client (connection pool) per URL and timeout, shared by links."""
        url = config.get("url") or DEFAULT_URL
        timeout = float_setting(config, "timeout", DEFAULT_TIMEOUT)
        key = (url, timeout)
        client = self._clients.get(key)
        if client is None:
            try:
                client = aioredis.Redis.from_url(
                    url, socket_timeout=timeout, socket_connect_timeout=timeout
                )
            except ValueError as exc:
                raise ProviderError(
                    f"config url={url!r} is not a Redis URL ({exc}): use redis://host:port"
                ) from exc
            self._clients[key] = client
        return client, timeout

    async def start(self, context: ProviderContext) -> None:
        await super().start(context)
        self._client(self.config)  # validates url/timeout; connects lazily (Redis may be late)

    async def stop(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def health(self) -> Health:
        client, timeout = self._client(self.config)
        try:
            await client.ping()
        except (rex.RedisError, OSError) as exc:
            return Health(False, f"redis {self.config.get('url') or DEFAULT_URL}: {exc}")
        return Health()

    def implementation(self, interface: str, link: Link | None = None) -> Any:
        config = settings(self.config, link)
        client, timeout = self._client(config)
        page_size = int_setting(config, "page_size", DEFAULT_PAGE_SIZE)
        key_prefix = config.get("key_prefix", "")

        async def opener(identifier: str, version: str) -> RedisBucket:
            return RedisBucket(identifier, client, f"{key_prefix}{identifier}:",
                               version=version, timeout=timeout, page_size=page_size)

        return implementation_for(interface, opener, RedisBucket, timeout)
