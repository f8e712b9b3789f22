"""Built-in providers by name (``trellis provider list``), imported only when started."""

from __future__ import annotations

import importlib
from typing import Any

from .sdk import Provider

BUILTINS: dict[str, str] = {
    "keyvalue-nats": "trellis.providers.keyvalue.nats:NatsKeyValue",
    "keyvalue-redis": "trellis.providers.keyvalue.redis:RedisKeyValue",
    "keyvalue-memory": "trellis.providers.keyvalue.memory:MemoryKeyValue",
    "blobstore-fs": "trellis.providers.blobstore.fs:FsBlobstore",
    "blobstore-nats": "trellis.providers.blobstore.nats:NatsBlobstore",
    "messaging-nats": "trellis.providers.messaging.nats:NatsMessaging",
    "logging": "trellis.providers.logging:LoggingProvider",
    "config": "trellis.providers.config:ConfigProvider",
    "sql-postgres": "trellis.providers.sql.postgres:PostgresSql",
    "http-server": "trellis.providers.http_server:HttpServerProvider",
}


class UnknownProvider(LookupError):
    def __init__(self, name: str) -> None:
        known = ", ".join(sorted(BUILTINS))
        super().__init__(
            f"no provider named {name!r}: use a built-in ({known}) or 'package.module:Class'"
        )


def provider_class(name_or_ref: str) -> type[Provider]:
    """A built-in name, or ``package.module:Class`` for any provider on the Python path."""
    ref = BUILTINS.get(name_or_ref, name_or_ref)
    module, _, attr = ref.partition(":")
    if not attr:
        raise UnknownProvider(name_or_ref)
    try:
        cls: Any = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownProvider(name_or_ref) from exc
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise UnknownProvider(name_or_ref)
    return cls
