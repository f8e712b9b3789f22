"""The lattice CLI end to end, in real processes: `trellis up`, `host`, `component`, `call`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CALC = ROOT / "examples" / "calc-wat" / "calc.wat"
TRELLIS = [sys.executable, "-m", "trellis.host.cli"]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRELLIS, *args], capture_output=True, text=True, timeout=timeout)


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 60) -> list[str]:
    """Lines of stderr until one contains ``needle`` (stdout is read after)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not seen; stderr so far: {''.join(seen)}")


def test_up_serves_calls_and_stops_cleanly_on_ctrl_c(lattice: str) -> None:
    with subprocess.Popen(
        [*TRELLIS, "up", "--nats-port", "0", "--lattice", lattice, "--start", f"calc={CALC}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TRELLIS_NATS_URL": ""},
    ) as proc:
        _up_session(proc, lattice)


def _up_session(proc: subprocess.Popen[str], lattice: str) -> None:
    try:
        wait_for_line(proc, "ready")
        assert proc.stdout is not None
        head = [proc.stdout.readline() for _ in range(4)]
        url = head[0].split()[1]
        assert head[1].split() == ["lattice:", lattice]
        assert head[3].startswith("started: calc")
        where = ["--nats-url", url, "--lattice", lattice]
        out = cli("call", *where, "calc", "add(2, 40)")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "42"
        out = cli("call", *where, "calc", "greet", "CLI")
        assert out.stdout.strip() == '"Hello, CLI!"'
        hosts = json.loads(cli("host", "list", *where, "--json").stdout)
        assert len(hosts) == 1
        inv = json.loads(cli("get", "inventory", *where, "--json").stdout)
        assert [c["component_id"] for c in inv[0]["components"]] == ["calc"]
        missing = cli("call", *where, "nope", "f()")
        assert missing.returncode == 1 and "NoSuchComponent" in missing.stderr
        assert "Traceback" not in missing.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_host_process_component_start_call_stop(nats_url: str, lattice: str) -> None:
    where = ["--nats-url", nats_url, "--lattice", lattice]
    log = open(os.devnull, "w")  # noqa: SIM115 - closed by the with below
    with log, subprocess.Popen([*TRELLIS, "host", *where, "--label", "zone=a"],
                               stdout=log, stderr=log, text=True) as host:
        _host_session(host, where)


def _host_session(host: subprocess.Popen[str], where: list[str]) -> None:
    try:
        listed = cli("host", "list", *where, "--expect", "1", "--timeout", "20")
        assert listed.returncode == 0, listed.stderr
        assert "zone=a" in listed.stdout
        started = cli("component", "start", str(CALC), "--id", "calc", *where)
        assert started.returncode == 0, started.stderr
        assert "calc running on" in started.stdout
        assert cli("call", *where, "calc", "calc#add(1, 2)").stdout.strip() == "3"
        stopped = cli("component", "stop", "calc", *where)
        assert stopped.returncode == 0, stopped.stderr
        gone = cli("call", *where, "calc", "add(1, 2)")
        assert gone.returncode == 1 and "NoSuchComponent" in gone.stderr
        host.send_signal(signal.SIGTERM)
        assert host.wait(timeout=30) == 0
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()


def test_bad_pool_settings_stop_only_the_daemon(nats_url: str, lattice: str) -> None:
    """TRELLIS_POOL_* belong to `trellis host` the daemon: a bad one is a usage error there,
    and no business of `trellis host list`."""
    env = {**os.environ, "TRELLIS_POOL_INSTANCES": "lots"}
    where = ["--nats-url", nats_url, "--lattice", lattice]
    listed = subprocess.run([*TRELLIS, "host", "list", *where, "--timeout", "0.5"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    daemon = subprocess.run([*TRELLIS, "host", *where], env=env, capture_output=True,
                            text=True, timeout=60)
    assert daemon.returncode == 2 and "TRELLIS_POOL_INSTANCES" in daemon.stderr
    assert "Traceback" not in daemon.stderr
