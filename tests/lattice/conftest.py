"""Fixtures of the lattice tests: a session AOT cache, in-process hosts, a connected client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _lattice import Hosts
from trellis.lattice.client import LatticeClient


@pytest.fixture(scope="session")
def aot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One AOT cache for the session: each WAT component compiles once."""
    return tmp_path_factory.mktemp("aot")


@pytest.fixture
async def hosts(nats_url: str, lattice: str, tmp_path: Path, aot_dir: Path
                ) -> AsyncIterator[Hosts]:
    """Start in-process hosts with ``await hosts.start("id", **config)``; stopped at the end."""
    h = Hosts(nats_url, lattice, tmp_path, aot_dir=aot_dir)
    try:
        yield h
    finally:
        await h.aclose()


@pytest.fixture
async def lc(nats_url: str, lattice: str) -> AsyncIterator[LatticeClient]:
    async with LatticeClient(nats_url, lattice, timeout=5.0) as c:
        yield c
