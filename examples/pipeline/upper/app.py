"""Pipeline stage B (world ``upper``): upper-cases the text and counts its words."""

from __future__ import annotations

from wit_world import exports


class Transform(exports.Transform):
    def process(self, input: str) -> str:
        words = len(input.split())
        return f"{input.upper()} ({words} word{'' if words == 1 else 's'})"
