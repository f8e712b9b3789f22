"""``bench/providers.py --quick`` runs to the end and prints its target.

Only that the benchmark works is tested: its timings depend on the machine and its load, so
whether the target is met is reported by the benchmark, never asserted here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "providers.py"


@pytest.mark.timeout(180)
def test_providers_bench_quick_run() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True, text=True, timeout=150, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    for path in ("nats-py kv.get", "in-process provider get-n", "standalone provider get-n",
                 "c2c same host", "c2c across hosts"):
        assert path in out, out[-4000:]
    assert "\ntargets\n" in out, out[-4000:]
    targets = out.split("\ntargets\n", 1)[1]
    lines = re.findall(r"^  (?:PASS|MISS)  in-process provider (?:get|set) from a component ",
                       targets, re.MULTILINE)
    assert len(lines) == 2, targets
    assert re.search(r"^  \d+/2 targets met$", targets, re.MULTILINE), targets
