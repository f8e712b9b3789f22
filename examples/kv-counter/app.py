"""kv-counter: one more hit per call, counted in the ``hits`` store of the linked key-value.

The component names no backend: a link decides whether ``store.open`` reaches NATS JetStream
KV, Redis or memory, and relinking switches it between two calls, with no restart.
"""

from __future__ import annotations

import wit_world
from wit_world.imports import atomics, store

STORE = "hits"


class WitWorld(wit_world.WitWorld):
    def hit(self, key: str) -> int:
        with store.open(STORE) as bucket:
            return atomics.increment(bucket, key, 1)
