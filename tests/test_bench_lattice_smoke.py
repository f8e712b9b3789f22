"""``bench/lattice.py --quick`` runs to the end and prints its targets.

Only that the benchmark works is tested: its timings depend on the machine and its load, so
whether a target is met is reported by the benchmark, never asserted here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "lattice.py"


@pytest.mark.timeout(300)
def test_lattice_bench_quick_run() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    for path in ("in-process Component.invoke", "raw nats-py request/reply",
                 "trellis call across hosts"):
        assert path in out, out[-4000:]
    assert "\ntargets\n" in out, out[-4000:]
    targets = out.split("\ntargets\n", 1)[1]
    assert len(re.findall(r"^  (?:PASS|MISS)  ", targets, re.MULTILINE)) >= 2, targets
    assert re.search(r"^  \d+/\d+ targets met$", targets, re.MULTILINE), targets
    assert re.search(r"^  uvloop: ", targets, re.MULTILINE), targets
