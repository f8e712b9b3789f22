"""Helpers of the example tests: where the examples live and building them (waiting on links:
``_lattice.eventually``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from trellis.host.build import build_python_component

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
