"""The distribution installs the three folders as trellis.host/lattice/providers (DESIGN §1)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv_and_imports(tmp_path: Path) -> None:
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(dist), str(src)],
        check=True, timeout=300, capture_output=True,
    )
    (wheel,) = dist.glob("trellis-*.whl")
    env_dir = tmp_path / "venv"
    # System site-packages is off: only the wheel and its declared dependencies are visible.
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # Dependencies come from the machine's pip cache/registry; the wheel itself is local.
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600,
                   capture_output=True)
    probe = (
        "import trellis.host, trellis.lattice, trellis.providers, trellis.host.runtime.runtime;"
        "import trellis.lattice.wit.wave, trellis.host.cli;"
        "print(trellis.host.Runtime.__name__)"
    )
    out = subprocess.run([str(py), "-c", probe], check=True, timeout=120, capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.stdout.strip() == "Runtime"
    cli = subprocess.run([str(env_dir / "bin" / "trellis"), "--help"], check=True, timeout=60,
                         capture_output=True, text=True)
    assert "inspect" in cli.stdout and "run" in cli.stdout


def test_public_surface() -> None:
    import trellis.host as host

    assert set(host.__all__) >= {"Runtime", "Component", "ComponentConfig", "Limits",
                                 "InstancePolicy", "HostImports", "Invocation", "WasiOptions"}
    for name in host.__all__:
        assert getattr(host, name) is not None


def test_test_modules_have_unique_names() -> None:
    """pytest imports test files by basename (rootdir conftest, no packages): two folders with
    a test_x.py each stop collection for the whole suite."""
    from collections import Counter

    names = Counter(p.name for p in Path(__file__).parent.rglob("test_*.py"))
    assert [n for n, count in names.items() if count > 1] == []
