"""Persistent ahead-of-time compile cache, shared by every process on the machine.

Compiling an 18 MB componentize-py guest takes 7–15 s; loading its serialized form takes
~3 ms (wasmtime-host-notes Q3). Entries live at::

    $TRELLIS_CACHE_DIR/aot/<engine fingerprint>/<source sha256>.cwasm   (+ .json sidecar)

A serialized component is native code that wasmtime trusts, so a damaged entry must never
reach ``deserialize``: the sidecar records the artifact's size and CRC-32, written after the
artifact itself (both atomically), and is checked before every load. A mismatch, a missing
sidecar or a deserialize error means the entry is deleted and the source recompiled.

Hashing the source on every load would cost ~17 ms for an 18 MB guest, so the digest of a
*file* is remembered by (path, size, mtime_ns, inode), as build tools do.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import mmap
import os
import pickle
import tempfile
import zlib
from pathlib import Path

from wasmtime import WasmtimeError
from wasmtime import component as wc

from ...lattice.wit import types as t
from .engine import Engine

log = logging.getLogger("trellis.runtime.cache")


def default_cache_dir() -> Path:
    env = os.environ.get("TRELLIS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "trellis"


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes | bytearray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _crc32_file(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return 0, 0
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return size, zlib.crc32(m)


@functools.cache
def _types_stamp() -> str:
    """A digest of the type model's and the introspection's source: a pickled world never
    outlives a change to either."""
    from . import introspect

    h = hashlib.sha256()
    for mod in (t, introspect):
        h.update(Path(mod.__file__ or "").read_bytes())
    return h.hexdigest()[:12]


class CompileCache:
    """Compile-once storage of serialized components. Safe for concurrent processes."""

    def __init__(self, root: Path | None = None, *, enabled: bool = True) -> None:
        self.root = (root or default_cache_dir()) / "aot"
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    # -- source digests --------------------------------------------------------------

    def file_digest(self, path: Path, data: bytes | None = None) -> str:
        """sha256 of a file's content, remembered by its stat signature."""
        st = path.stat()
        sig = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
        memo = self.root / "digests" / (hashlib.sha256(sig.encode()).hexdigest()[:32] + ".txt")
        if self.enabled:
            try:
                digest = memo.read_text().strip()
                if len(digest) == 64:
                    return digest
            except OSError:
                pass
        digest = sha256_hex(data if data is not None else path.read_bytes())
        if self.enabled:
            with contextlib.suppress(OSError):
                _atomic_write(memo, digest.encode())
        return digest

    # -- artifacts ---------------------------------------------------------------------

    def _paths(self, engine: Engine, digest: str) -> tuple[Path, Path]:
        d = self.root / engine.config.fingerprint()
        return d / f"{digest}.cwasm", d / f"{digest}.json"

    def load(self, engine: Engine, digest: str) -> wc.Component | None:
        """The cached component, or ``None`` on a miss or a damaged entry (then removed)."""
        if not self.enabled:
            return None
        art, meta = self._paths(engine, digest)
        try:
            expected = json.loads(meta.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self._discard(art, meta, "unreadable sidecar")
            return None
        try:
            size, crc = _crc32_file(art)
        except OSError:
            self._discard(art, meta, "artifact missing")
            return None
        if size != expected.get("size") or crc != expected.get("crc32"):
            self._discard(art, meta, "checksum mismatch")
            return None
        try:
            component = wc.Component.deserialize_file(engine.wasmtime, str(art))
        except WasmtimeError as exc:
            self._discard(art, meta, f"deserialize failed: {exc}")
            return None
        self.hits += 1
        return component

    def _world_path(self, engine: Engine, digest: str) -> Path:
        art, _ = self._paths(engine, digest)
        return art.with_suffix(f".{_types_stamp()}.world")

    def load_world(self, engine: Engine, digest: str) -> t.WorldType | None:
        """The component's introspected types, if an earlier load stored them.

        A pickle, like the artifact it sits next to: this directory already holds native code
        that wasmtime runs, so it is trusted as much as a pickle needs."""
        if not self.enabled:
            return None
        path = self._world_path(engine, digest)
        try:
            world = pickle.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:  # stale format or damage: introspect again, rewrite it
            log.warning("cached types %s unreadable (%s); reading them again", path.name, exc)
            return None
        return world if isinstance(world, t.WorldType) else None

    def store_world(self, engine: Engine, digest: str, world: t.WorldType) -> None:
        if not self.enabled:
            return
        path = self._world_path(engine, digest)
        try:
            _atomic_write(path, pickle.dumps(world, protocol=5))
        except OSError as exc:
            log.warning("caching the types %s failed: %s", path.name, exc)

    def store(self, engine: Engine, digest: str, component: wc.Component) -> None:
        if not self.enabled:
            return
        art, meta = self._paths(engine, digest)
        data = component.serialize()
        try:
            _atomic_write(art, data)
            _atomic_write(meta, json.dumps(
                {"size": len(data), "crc32": zlib.crc32(data), "source": digest}
            ).encode())
        except OSError as exc:  # a read-only or full cache must not fail the load
            log.warning("AOT cache write to %s failed: %s", art.parent, exc)

    def _discard(self, art: Path, meta: Path, why: str) -> None:
        log.warning("AOT cache entry %s is damaged (%s); recompiling", art.name, why)
        for p in (meta, art):
            with contextlib.suppress(OSError):
                p.unlink()
