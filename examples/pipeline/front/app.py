"""Pipeline stage A (world ``front``): calls the linked ``transform`` and frames its answer.

The component does not know where stage B runs: on this host or another, the link
``front -> upper example:pipeline --interface transform`` decides, and calls cross the
lattice when B is elsewhere.
"""

from __future__ import annotations

import wit_world
from wit_world.imports import transform


class WitWorld(wit_world.WitWorld):
    def run(self, text: str) -> str:
        return f"pipeline: {transform.process(text)}"
