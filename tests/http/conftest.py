"""Fixtures for the wasi:http tests: the http-hello example built from the repo with spin-sdk's
installed WASI WIT staged at build time (never copied into the repo)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from trellis.host.build import build_python_component

REPO = Path(__file__).resolve().parents[2]
HTTP_HELLO = REPO / "examples" / "http-hello"
WASI_HTTP_PACKAGES = ("http", "io", "clocks", "random", "cli", "filesystem", "sockets")


def installed_wasi_deps() -> list[Path]:
    spec = importlib.util.find_spec("spin_sdk")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("spin-sdk is not installed: it provides the WASI WIT for http-hello")
    deps = Path(next(iter(spec.submodule_search_locations))) / "wit" / "deps"
    return [deps / p for p in WASI_HTTP_PACKAGES]


@pytest.fixture(scope="session")
def http_hello_wasm() -> Path:
    return build_python_component(HTTP_HELLO, wit_deps=installed_wasi_deps())


@pytest.fixture(scope="session")
def http_fetch_wasm() -> Path:
    """The outgoing-HTTP test guest (tests/guests/http-fetch)."""
    return build_python_component(REPO / "tests" / "guests" / "http-fetch",
                                  wit_deps=installed_wasi_deps())
