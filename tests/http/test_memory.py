"""Bodies stream with bounded host memory: a 50 MB upload and a 50 MB download through
``trellis serve`` (a separate process, so the client's buffers do not count) keep the server's
peak RSS under 200 MB; a client that goes away mid-body frees its instance at once."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from trellis.host.http.serve import ServeOptions, Serving
from trellis.host.runtime.instances import WasiOptions

MB = 2**20
SIZE = 50 * MB
PEAK_LIMIT = 200 * MB
BLOCK = 64 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(pid: int) -> dict[str, int]:
    """``Vm*`` lines of ``/proc/PID/status``, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Vm"):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) * 1024
    return out


@pytest.fixture
def server(http_hello_wasm: Path) -> Iterator[tuple[int, int]]:
    """``trellis serve`` in its own process: (port, pid)."""
    port = _free_port()
    argv = ["trellis", "serve", "--quiet", "--addr", f"127.0.0.1:{port}", str(http_hello_wasm)]
    proc = subprocess.Popen(
        [sys.executable, "-c",
         f"import sys; sys.argv = {argv!r}; from trellis.host.cli import main; main()"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"trellis serve exited {proc.returncode}: {err[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("trellis serve did not start listening")
                time.sleep(0.1)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


class _Reader:
    """A blocking HTTP/1.1 response reader that hashes the body as it streams past."""

    def __init__(self, sock: socket.socket) -> None:
        self.file = sock.makefile("rb")

    def reply(self) -> tuple[int, dict[str, str], int, str]:
        """(status, headers, body bytes, sha256 of the body)."""
        status_line = self.file.readline()
        headers: dict[str, str] = {}
        while (line := self.file.readline()) != b"\r\n":
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        digest = hashlib.sha256()
        n = 0
        if headers.get("transfer-encoding") == "chunked":
            while (size := int(self.file.readline().split(b";")[0], 16)):
                n += self._body(size, digest)
                assert self.file.read(2) == b"\r\n"
            while self.file.readline() != b"\r\n":
                pass
        else:
            n = self._body(int(headers["content-length"]), digest)
        return int(status_line.split()[1]), headers, n, digest.hexdigest()

    def _body(self, left: int, digest: Any) -> int:
        n = 0
        while left:
            data = self.file.read(min(left, MB))
            assert data, "the server closed the connection mid-body"
            digest.update(data)
            left -= len(data)
            n += len(data)
        return n


def _pattern(i: int) -> bytes:
    return bytes([i % 251]) * BLOCK


def up_and_down(port: int, prefix: str = "", *, streamed_echo: bool = False,
                after_upload: Callable[[], None] = lambda: None) -> None:
    """50 MB up to ``{prefix}/echo`` (chunked, generated on the fly: never 50 MB in one place),
    echoed back while it is still being sent, then 50 MB down from ``{prefix}/size/N``; every
    byte checked. ``streamed_echo``: the echo must come back chunked (not buffered)."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        reader = _Reader(sock)
        sent = hashlib.sha256()
        failure: list[BaseException] = []

        def upload() -> None:
            try:
                sock.sendall(f"POST {prefix}/echo HTTP/1.1\r\nhost: test\r\n".encode()
                             + b"content-type: application/octet-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
                for i in range(SIZE // BLOCK):
                    block = _pattern(i)
                    sent.update(block)
                    sock.sendall(b"%x\r\n%b\r\n" % (len(block), block))
                sock.sendall(b"0\r\n\r\n")
            except BaseException as exc:  # reported by the main thread
                failure.append(exc)

        writer = threading.Thread(target=upload)
        writer.start()
        status, headers, n, digest = reader.reply()
        writer.join(120)
        assert not failure, failure
        if streamed_echo:
            assert headers.get("transfer-encoding") == "chunked"
        assert (status, n, digest) == (200, SIZE, sent.hexdigest())
        after_upload()

        sock.sendall(f"GET {prefix}/size/{SIZE} HTTP/1.1\r\nhost: test\r\n\r\n".encode())
        status, headers, n, digest = reader.reply()
        assert (status, n, headers.get("content-length")) == (200, SIZE, str(SIZE))
        assert digest == hashlib.sha256(b"x" * SIZE).hexdigest()


@pytest.mark.timeout(300)
def test_50mb_up_and_down_with_bounded_server_memory(server: tuple[int, int]) -> None:
    port, pid = server
    after_up: list[dict[str, int]] = []
    up_and_down(port, after_upload=lambda: after_up.append(_status(pid)))
    peak = _status(pid)["VmHWM"]
    assert peak < PEAK_LIMIT, (f"server peak RSS {peak / MB:.0f} MB (after the upload "
                               f"{after_up[0]['VmHWM'] / MB:.0f} MB)")


async def test_a_client_gone_mid_body_frees_its_instance_at_once(
        http_hello_wasm: Path) -> None:
    """Without the cyclic GC: a failed call's exceptions hold its Store in reference cycles,
    which the server breaks, so a dead instance (grown by a streamed body) is freed now."""

    def abandon(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
            for i in range(32):
                block = _pattern(i)
                s.sendall(b"%x\r\n%b\r\n" % (len(block), block))
            got = 0
            while got < 4 * BLOCK:  # part of the echo, then hang up mid-body
                data = s.recv(BLOCK)
                assert data
                got += len(data)

    def stores() -> int:
        return sum(isinstance(o, wasmtime.Store) for o in gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        async with Serving(ServeOptions(file=http_hello_wasm, addr="127.0.0.1:0", timeout=10,
                                        wasi=WasiOptions())) as s:
            before = stores()
            await asyncio.to_thread(abandon, s.port)
            for _ in range(100):  # the guest fails on its next write, then the call ends
                await asyncio.sleep(0.05)
                assert s.server is not None
                if not s.server._conns and stores() <= before:
                    break
            assert stores() <= before
    finally:
        gc.enable()
