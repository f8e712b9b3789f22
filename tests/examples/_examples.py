"""Helpers of the example tests: where the examples live, building them, waiting on links."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from trellis.host.build import build_python_component
from trellis.lattice.errors import LinkTargetUnavailable, NoLink

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
MESSAGING_WIT = REPO / "tests" / "guests" / "messaging-app" / "wit" / "deps" / "wasmcloud-messaging"
"""Our own wasmcloud:messaging@0.2.0 test fixture (no installable package ships that WIT)."""


def installed_wit(package_dir: str) -> Path:
    """A WIT package directory from spin-sdk's installed ``wit/deps`` (never copied here)."""
    spec = importlib.util.find_spec("spin_sdk")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("spin-sdk is not installed: it provides the standard WASI WIT")
    return Path(next(iter(spec.submodule_search_locations))) / "wit" / "deps" / package_dir


def build(src: Path, **kw: Any) -> Path:
    return Path(build_python_component(src, **kw))


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    """Retry ``check`` until it stops raising or ``timeout`` passes (then raise its error):
    link changes reach hosts within about a second."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except (AssertionError, NoLink, LinkTargetUnavailable):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
