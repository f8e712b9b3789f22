"""The ``counter`` resource of ``test:kitchen/types``.

componentize-py looks up an exported resource's class in a top-level module named after the
interface. ``types`` would be the standard library module, so the build maps the interface to
``kitchen_types`` (``--export-interface-name``) and the class lives here.
"""

from __future__ import annotations

from wit_world.exports import kitchen_types


class Counter(kitchen_types.Counter):
    def __init__(self, start: int) -> None:
        self.value = start

    def inc(self) -> int:
        self.value = (self.value + 1) & 0xFFFFFFFF
        return self.value

    def get(self) -> int:
        return self.value
