"""Large HTTP bodies stream through the lattice with bounded memory: the ``http-server``
provider in one ``trellis host`` process (a), http-hello in another (b), a 50 MB upload and a
50 MB download through NATS, each byte checked by digest, and both processes' peak RSS under
200 MB (separate processes, so neither the test's buffers nor the other host's count)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _client import request
from test_lattice_http import http_link, until
from test_memory import BLOCK, MB, PEAK_LIMIT, _free_port, _pattern, _status, up_and_down
from trellis.host.host import Host
from trellis.host.runtime.cache import default_cache_dir
from trellis.lattice.client import LatticeClient
from trellis.providers.http_server import HttpServerProvider

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lattice"))
from _lattice import Hosts  # noqa: E402

pytestmark = pytest.mark.slow
TRELLIS = [sys.executable, "-m", "trellis.host.cli"]


@dataclass
class Split:
    """The provider host (a) and the component host (b) as processes, and the HTTP port."""

    port: int
    pids: dict[str, int]
    logs: Path


@pytest.fixture
async def split(nats_url: str, lattice: str, tmp_path: Path,
                http_hello_wasm: Path) -> AsyncIterator[Split]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for host_id in ("a", "b"):  # the default cache dir: http-hello is compiled there already
            with open(tmp_path / f"{host_id}.log", "wb") as log:
                procs[host_id] = subprocess.Popen(
                    [*TRELLIS, "host", "--nats-url", nats_url, "--lattice", lattice,
                     "--host-id", host_id], stdout=log, stderr=subprocess.STDOUT,
                    env=dict(os.environ))
        port = _free_port()
        async with LatticeClient(nats_url, lattice, timeout=30.0) as lc:
            await lc.wait_for_hosts(2, timeout=120)
            await lc.start_component(http_hello_wasm, "hello", host_id="b", timeout=300,
                                     max_instances=2)
            await lc.put_config("web", {"addr": f"127.0.0.1:{port}", "timeout": "60",
                                        "max_body": str(64 * MB)})
            await lc.put_config("hello-route", {"path": "/hello", "strip_prefix": "true"})
            await lc.start_provider("http-server", "web", host_id="a", config="web")
            await lc.put_link(http_link("web", "hello", "hello", "hello-route"))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:  # the route reaches the provider within about a second
            with contextlib.suppress(OSError):
                if (await request(url, path="/hello/")).status == 200:
                    break
            assert time.monotonic() < deadline, "the route never answered"
            await asyncio.sleep(0.1)
        yield Split(port, {k: p.pid for k, p in procs.items()}, tmp_path)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(600)
async def test_50mb_up_and_down_through_the_lattice_with_bounded_memory(split: Split) -> None:
    before = {h: _status(pid)["VmRSS"] for h, pid in split.pids.items()}
    started = time.monotonic()
    await asyncio.to_thread(up_and_down, split.port, "/hello", streamed_echo=True)
    took = time.monotonic() - started
    peaks = {h: _status(pid)["VmHWM"] for h, pid in split.pids.items()}
    report = ", ".join(f"host {h}: {before[h] / MB:.0f} MB before, peak {peaks[h] / MB:.0f} MB"
                       for h in sorted(peaks))
    print(f"\n100 MB through the lattice in {took:.1f}s; {report}")
    assert all(p < PEAK_LIMIT for p in peaks.values()), report


# -- no leaks when a client goes away mid-body -------------------------------------------------


@dataclass
class Pair:
    url: str
    a: Host
    b: Host

    def subscriptions(self) -> tuple[int, int]:
        return len(self.a.nc._subs), len(self.b.nc._subs)  # type: ignore[attr-defined]


@pytest.fixture
async def pair(nats_url: str, lattice: str, tmp_path: Path,
               http_hello_wasm: Path) -> AsyncIterator[Pair]:
    """In-process hosts: http-server on a, http-hello on b (fresh instances)."""
    hosts = Hosts(nats_url, lattice, tmp_path, aot_dir=Path(default_cache_dir()))
    try:
        a = await hosts.start("a")
        b = await hosts.start("b")
        async with LatticeClient(nats_url, lattice, timeout=10.0) as lc:
            await lc.start_component(http_hello_wasm, "hello", host_id="b", timeout=300)
            await lc.put_config("web", {"addr": "127.0.0.1:0", "timeout": "5"})
            await lc.put_config("hello-route", {"path": "/hello", "strip_prefix": "true"})
            await lc.start_provider("http-server", "web", host_id="a", config="web")
            await lc.put_link(http_link("web", "hello", "hello", "hello-route"))
            provider = a.providers.local("web")
            assert isinstance(provider, HttpServerProvider)
            await until(lambda: provider.routes)
            yield Pair(provider.url, a, b)
    finally:
        await hosts.aclose()


def _abandon_upload(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /hello/echo HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (20 * MB))
        for i in range(48):  # 3 MB of 20, then hang up
            s.sendall(_pattern(i))


def _abandon_download(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /hello/size/%d HTTP/1.1\r\nhost: x\r\n\r\n" % (50 * MB))
        got = 0
        while got < 3 * MB:
            data = s.recv(BLOCK)
            assert data
            got += len(data)


async def test_a_client_gone_mid_body_leaves_no_stream_behind(pair: Pair) -> None:
    assert (await request(pair.url, path="/hello/")).status == 200
    baseline = pair.subscriptions()
    port = int(pair.url.rsplit(":", 1)[1])
    started = time.monotonic()
    await asyncio.to_thread(_abandon_upload, port)
    await asyncio.to_thread(_abandon_download, port)
    await until(lambda: pair.subscriptions() == baseline, timeout=8)
    assert time.monotonic() - started < 8  # ends well before the request deadline at most
    assert not pair.b.http._tasks  # every request task on the host is over
    r = await request(pair.url, "POST", "/hello/echo", b"y" * (3 * MB))
    assert (r.status, r.body) == (200, b"y" * (3 * MB))  # and both keep serving
    await until(lambda: pair.subscriptions() == baseline, timeout=5)
