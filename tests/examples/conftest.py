"""Fixtures of the example tests: in-process hosts, a lattice client, the built examples."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# The in-process host factory is shared with the lattice tests (tests/lattice/_lattice.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lattice"))

from _examples import EXAMPLES, MESSAGING_WIT, build, installed_wit  # noqa: E402
from _lattice import Hosts  # noqa: E402
from trellis.host.runtime.cache import default_cache_dir  # noqa: E402
from trellis.lattice.client import LatticeClient  # noqa: E402


@pytest.fixture(scope="session")
def aot_dir() -> Path:
    """The machine's shared AOT cache (keyed by engine and source digest, written atomically):
    an 18 MB componentize-py example compiles once, not on every run."""
    return Path(default_cache_dir())


@pytest.fixture
async def hosts(nats_url: str, lattice: str, tmp_path: Path, aot_dir: Path
                ) -> AsyncIterator[Hosts]:
    """``await hosts.start("id")`` starts an in-process host; all stop at the end."""
    h = Hosts(nats_url, lattice, tmp_path, aot_dir=aot_dir)
    try:
        yield h
    finally:
        await h.aclose()


@pytest.fixture
async def lc(nats_url: str, lattice: str) -> AsyncIterator[LatticeClient]:
    async with LatticeClient(nats_url, lattice, timeout=5.0) as c:
        yield c


@pytest.fixture(scope="session")
def kv_counter_wasm() -> Path:
    return build(EXAMPLES / "kv-counter", wit_deps=[installed_wit("keyvalue-2024-10-17")])


@pytest.fixture(scope="session")
def pipeline_wasm() -> dict[str, Path]:
    """Both stages, built from the example's one WIT package (a world each)."""
    root = EXAMPLES / "pipeline"
    return {stage: build(root / stage, wit=root / "wit", world=stage)
            for stage in ("front", "upper")}


@pytest.fixture(scope="session")
def messaging_wasm() -> Path:
    return build(EXAMPLES / "messaging", wit_deps=[MESSAGING_WIT])
