"""``bench/http.py --quick`` runs to the end and prints its figures and targets, (d) through
the lattice included.

Only that the benchmark works is tested: its timings depend on the machine and its load, so
whether a target is met is reported by the benchmark, never asserted here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "http.py"


@pytest.mark.timeout(300)
def test_http_bench_quick_run() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:] + done.stdout[-2000:]
    out = done.stdout
    for server in ("(a) trellis serve, fresh", "(b) trellis serve --pooled",
                   "(c) wasmtime serve -S cli=y", "(d) through the lattice"):
        rows = re.findall(rf"^  {re.escape(server)} +(1|32) +\d+ ", out, re.MULTILINE)
        assert sorted(rows) == ["1", "32"], out[-4000:]
    # (d): the provider in the up host, the component on the other host only
    assert re.search(r"^\(d\) lattice .*provider on host bench-a.*\n +http-hello on host "
                     r"bench-b only", out, re.MULTILINE), out[-4000:]
    for ratio in ("a/c", "b/c", "d/a"):
        assert len(re.findall(rf"^    {ratio} at +(?:1|32) connections? +[\d.]+x$", out,
                              re.MULTILINE)) == 2, out[-4000:]
    assert "\ntargets\n" in out, out[-4000:]
    targets = out.split("\ntargets\n", 1)[1]
    assert len(re.findall(r"^  (?:PASS|MISS)  ", targets, re.MULTILINE)) == 6, targets
    assert len(re.findall(r"^  (?:PASS|MISS)  \(d\) through the lattice at (?:1|32) conn: .*"
                          r">= 0\.6x \(a\)", targets, re.MULTILINE)) == 2, targets
    assert re.search(r"^  \d+/6 targets met", targets, re.MULTILINE), targets


def test_python_client_counts_keep_alive_answers() -> None:
    """The fallback load generator (used when wrk is not installed) against a tiny server."""
    import asyncio
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_http", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_http"] = bench
    try:
        spec.loader.exec_module(bench)

        async def main() -> dict[str, object]:
            async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    while await reader.readuntil(b"\r\n\r\n"):
                        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                except asyncio.IncompleteReadError:
                    pass
                writer.close()

            server = await asyncio.start_server(answer, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            try:
                result: dict[str, object] = await bench.client(f"http://127.0.0.1:{port}/", 4,
                                                               0.3)
                return result
            finally:
                server.close()
                await server.wait_closed()

        result = asyncio.run(main())
    finally:
        del sys.modules["bench_http"]
    latencies = result["latencies"]
    assert isinstance(latencies, list) and len(latencies) > 10
    assert result["errors"] == 0
