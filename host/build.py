"""Build Python guest components with componentize-py, cached by a digest of their sources.

A componentize-py build takes about ten seconds and writes an ~18 MB file (it embeds CPython), so
results are kept outside the repository in ``$TRELLIS_CACHE_DIR/guests`` (default
``~/.cache/trellis/guests``), named by a digest of everything that can change the output: the
app's ``.py`` files, the WIT directory, the world, interface renames and the componentize-py
version. An unchanged guest is therefore never rebuilt, across runs and across checkouts.

Builds run in a scratch directory from a copy of exactly the hashed files, so what is cached is
what was hashed, and componentize-py's ``__pycache__`` never lands in the source tree. The result
is renamed into the cache atomically, under a per-digest lock, so concurrent builders (xdist
workers, two terminals) build once and never see half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from ..lattice.errors import TrellisError

try:  # POSIX advisory locks; without them concurrent builders merely duplicate work.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "APP_MODULE",
    "BuildError",
    "DEFAULT_TIMEOUT",
    "build_python_component",
    "find_componentize_py",
    "guest_cache_dir",
    "source_digest",
    "trellis_cache_dir",
]

APP_MODULE = "app"
"""The module componentize-py wraps: every guest directory has an ``app.py``."""

DEFAULT_TIMEOUT = 600.0
"""Seconds a single componentize-py run may take; ~10 s is normal, minutes mean it hangs."""

_FORMAT = "trellis-guest-build/1"
"""Salted into every digest; bump it when the way guests are built changes."""

_FILE_MODE = 0o644
_COMPONENT_HEADER = b"\0asm\x0d\x00\x01\x00"
_INSTALL_HINT = "install the dev extras: pip install -e '.[dev]'"


class BuildError(TrellisError):
    """A guest could not be built. ``stderr`` holds componentize-py's diagnostics, if it ran."""

    def __init__(self, source: str, reason: str, stderr: str = "") -> None:
        self.source, self.reason, self.stderr = source, reason, stderr
        msg = f"cannot build {source}: {reason}"
        super().__init__(f"{msg}\n{stderr.strip()}" if stderr.strip() else msg)


def trellis_cache_dir() -> Path:
    """Trellis's cache root: ``$TRELLIS_CACHE_DIR``, else ``~/.cache/trellis``."""
    env = os.environ.get("TRELLIS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "trellis"


def guest_cache_dir() -> Path:
    return trellis_cache_dir() / "guests"


def find_componentize_py() -> Path:
    """The componentize-py of this interpreter's environment, else the first on ``PATH``.

    The venv's copy comes first so an unactivated ``.venv/bin/pytest`` uses the pinned version.
    """
    bindir = Path(sys.executable).parent
    for name in ("componentize-py", "componentize-py.exe"):
        candidate = bindir / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("componentize-py")
    if found:
        return Path(found)
    raise BuildError("a Python guest", f"componentize-py is not installed ({_INSTALL_HINT})")


@lru_cache(maxsize=8)
def _tool_version(exe: str, mtime_ns: int) -> str:
    """``componentize-py --version``, memoized per binary (mtime invalidates on upgrade)."""
    try:
        done = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError("a Python guest", f"cannot run {exe} --version: {exc}") from exc
    if done.returncode != 0 or not done.stdout.strip():
        raise BuildError("a Python guest", f"{exe} --version failed", done.stderr)
    return done.stdout.strip()


def _componentize_py_version(exe: Path) -> str:
    return _tool_version(str(exe), exe.stat().st_mtime_ns)


def _is_skipped(rel: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in rel.parts)


def _app_files(src: Path, wit: Path) -> list[Path]:
    """The app's ``.py`` files, relative to ``src``; the WIT dir is hashed on its own."""
    files: list[Path] = []
    for path in src.rglob("*.py"):
        rel = path.relative_to(src)
        if _is_skipped(rel) or path.is_relative_to(wit) or not path.is_file():
            continue
        files.append(rel)
    return sorted(files)


def _wit_files(wit: Path) -> list[Path]:
    if wit.is_file():
        return [Path(wit.name)]
    return sorted(
        p.relative_to(wit)
        for p in wit.rglob("*")
        if p.is_file() and not _is_skipped(p.relative_to(wit))
    )


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_digest(
    src: Path,
    *,
    wit: Path | None = None,
    world: str | None = None,
    export_names: Mapping[str, str] | None = None,
    tool_version: str,
    wit_deps: Sequence[Path] = (),
) -> str:
    """Hex digest of every input of a build; equal digests mean interchangeable components."""
    src = src.resolve()
    wit = (wit or src / "wit").resolve()
    wit_root = wit.parent if wit.is_file() else wit
    lines = [_FORMAT, f"tool\0{tool_version}", f"world\0{world or ''}", f"app\0{APP_MODULE}"]
    lines += [f"export-name\0{k}\0{v}" for k, v in sorted((export_names or {}).items())]
    lines += [f"py\0{rel.as_posix()}\0{_file_digest(src / rel)}" for rel in _app_files(src, wit)]
    lines += [f"wit\0{rel.as_posix()}\0{_file_digest(wit_root / rel)}" for rel in _wit_files(wit)]
    for dep in wit_deps:  # staged as wit/deps/<name>/…: hashed under that same relative path
        dep = Path(dep).resolve()
        lines += [f"wit\0deps/{dep.name}/{rel.as_posix()}\0{_file_digest(dep / rel)}"
                  for rel in _wit_files(dep)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it (shorter messages)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


@contextlib.contextmanager
def _locked(
    lock_path: Path, deadline: float, source: str, on_wait: Callable[[], None]
) -> Iterator[bool]:
    """Hold an exclusive lock on ``lock_path``; yields whether we had to wait for it."""
    if fcntl is None:  # pragma: no cover - no advisory locks: atomic rename still keeps us safe
        yield False
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    waited = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BuildError(
                        source, f"timed out waiting for another build (lock {lock_path})"
                    ) from None
                if not waited:
                    on_wait()
                    waited = True
                time.sleep(0.1)
        yield waited
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _deliver(cached: Path, out: Path | None) -> Path:
    if out is None:
        return cached
    _atomic_copy(cached, Path(out))
    return out


def build_python_component(
    src: Path,
    *,
    world: str | None = None,
    wit: Path | None = None,
    out: Path | None = None,
    progress: Callable[[str], None] | None = None,
    export_names: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    wit_deps: Sequence[Path] = (),
) -> Path:
    """Build the guest in directory ``src`` (its ``app.py`` plus WIT) and return the component.

    ``wit`` defaults to ``src/wit``; ``world`` to the WIT package's only world. ``export_names``
    maps exported interfaces to Python module names (componentize-py
    ``--export-interface-name``), needed when an interface is named like a stdlib module, as
    ``types`` is. ``wit_deps`` are WIT package directories (e.g. from spin-sdk's installed
    ``wit/deps``) staged as ``deps/<dir name>`` next to the guest's own WIT, so standard WIT is
    never copied into the repository; they count in the digest. The returned path is in the
    shared cache (treat it as read-only) unless ``out`` is given, in which case the component
    is copied there. ``progress`` receives human-readable status lines.
    """
    say = progress or (lambda _line: None)
    src = Path(src)
    source = _display(src)
    if not src.is_dir():
        raise BuildError(source, "not a directory (expected a guest with app.py and wit/)")
    if not (src / f"{APP_MODULE}.py").is_file():
        raise BuildError(source, f"no {APP_MODULE}.py: componentize-py wraps the `app` module")
    wit = Path(wit) if wit is not None else src / "wit"
    if not wit.exists():
        raise BuildError(source, f"no WIT at {_display(wit)}")
    wit_deps = [Path(d) for d in wit_deps]
    for dep in wit_deps:
        if not dep.is_dir():
            raise BuildError(source, f"WIT dependency {_display(dep)} is not a directory")
    if wit_deps and not wit.is_dir():
        raise BuildError(source, "wit_deps need a WIT directory, not a single file")

    exe = find_componentize_py()
    version = _componentize_py_version(exe)
    digest = source_digest(
        src, wit=wit, world=world, export_names=export_names, tool_version=version,
        wit_deps=wit_deps,
    )
    cache = guest_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    name = src.resolve().name or "guest"
    target = cache / f"{name}-{digest[:32]}.wasm"
    if target.is_file():
        say(f"cached: {target}")
        return _deliver(target, out)

    lock = cache / f"{target.name}.lock"

    def on_wait() -> None:
        say(f"waiting for a concurrent build of {source}…")

    with _locked(lock, time.monotonic() + timeout, source, on_wait) as waited:
        if target.is_file():  # another builder finished while we waited
            say(f"cached: {target}" + (" (built by a concurrent build)" if waited else ""))
            return _deliver(target, out)
        say(f"building {source} with componentize-py (≈10 s)…")
        started = time.monotonic()
        deadline = started + timeout
        with _staged_wit(wit, wit_deps) as staged:
            _run_componentize(exe, src, staged, world, export_names, target, deadline, source)
        say(f"built {target} in {time.monotonic() - started:.1f} s")
    return _deliver(target, out)


@contextlib.contextmanager
def _staged_wit(wit: Path, deps: Sequence[Path]) -> Iterator[Path]:
    """``wit`` itself, or with ``deps`` a scratch copy of it plus ``deps/<name>`` copies."""
    if not deps:
        yield wit
        return
    with tempfile.TemporaryDirectory(prefix="trellis-wit-") as scratch:
        staged = Path(scratch) / "wit"
        shutil.copytree(wit, staged, ignore=shutil.ignore_patterns(".*", "__pycache__"))
        for dep in deps:
            shutil.copytree(dep, staged / "deps" / dep.name, dirs_exist_ok=True)
        yield staged


def _run_componentize(
    exe: Path,
    src: Path,
    wit: Path,
    world: str | None,
    export_names: Mapping[str, str] | None,
    target: Path,
    deadline: float,
    source: str,
) -> None:
    """One componentize-py run in a scratch dir; the output is renamed onto ``target``."""
    src, wit = src.resolve(), wit.resolve()
    with tempfile.TemporaryDirectory(prefix="trellis-build-") as scratch_name:
        scratch = Path(scratch_name)
        app_dir = scratch / "app"
        for rel in _app_files(src, wit):
            (app_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, app_dir / rel)
        # componentize-py appends $VIRTUAL_ENV's site-packages (or the `python3` on PATH's) to
        # the guest's path and merges any WIT it finds there (spin-sdk ships some), which makes
        # world selection fail and the output depend on the environment. An empty fake venv
        # keeps the build hermetic.
        fake_venv = scratch / "no-venv"
        (fake_venv / "lib" / "site-packages").mkdir(parents=True)
        env = dict(os.environ, VIRTUAL_ENV=str(fake_venv), RUST_BACKTRACE="0")
        env.pop("PYTHONPATH", None)

        fd, partial_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".partial", dir=target.parent
        )
        os.close(fd)
        partial = Path(partial_name)
        cmd = [str(exe), "-d", str(wit)]
        if world:
            cmd += ["-w", world]
        for iface, module in sorted((export_names or {}).items()):
            cmd += ["--export-interface-name", f"{iface}={module}"]
        cmd += ["componentize", "-p", str(app_dir), APP_MODULE, "-o", str(partial)]
        try:
            try:
                done = subprocess.run(
                    cmd,
                    cwd=scratch,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=max(1.0, deadline - time.monotonic()),
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise BuildError(
                    source,
                    f"componentize-py did not finish within {exc.timeout:.0f} s",
                    _text(exc.stderr),
                ) from None
            except OSError as exc:
                raise BuildError(source, f"cannot run {exe}: {exc}") from exc
            if done.returncode != 0:
                raise BuildError(
                    source, f"componentize-py failed (exit {done.returncode})", done.stderr
                )
            with partial.open("rb") as fh:
                header = fh.read(len(_COMPONENT_HEADER))
            if header != _COMPONENT_HEADER:
                raise BuildError(source, "componentize-py wrote no component", done.stderr)
            os.chmod(partial, _FILE_MODE)  # mkstemp made it 0600; the cache is shared
            os.replace(partial, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
