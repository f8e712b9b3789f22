"""Turn bytes on disk into a compiled, introspected component — or a clear error.

Order of checks, cheapest first: the 8-byte preamble (garbage, core module, unknown
version), then the AOT cache, then a compile (minutes for big guests, so it reports
progress). Every wasmtime complaint becomes a ``ComponentLoadError`` naming the source.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wasmtime import WasmtimeError
from wasmtime import component as wc

from ...lattice.errors import AmbiguousFunction, ComponentLoadError, FunctionNotFound
from ...lattice.wit import types as t
from .cache import CompileCache, sha256_hex
from .engine import Engine
from .introspect import world_type

Progress = Callable[[str], None]

WASM_MAGIC = b"\0asm"
CORE_VERSION = b"\x01\x00\x00\x00"
COMPONENT_VERSION = b"\x0d\x00\x01\x00"

# Substrings of wasmtime errors that mean "this needs a feature we do not enable".
_FEATURE_HINTS = {
    "async": "component-model async (WASI 0.3) is not supported by wasmtime-py yet",
    "requires the": "the component uses a WebAssembly proposal this host does not enable",
    "not enabled": "the component uses a WebAssembly proposal this host does not enable",
    "shared memory": "threads/shared memory are not supported",
}


@dataclass(frozen=True)
class ExportedFunction:
    """One callable export: ``key`` is ``func`` or ``ns:pkg/iface@ver#func``."""

    key: str
    interface: str | None
    name: str
    type: t.FuncType
    path: tuple[wc.ExportIndex, ...] = field(compare=False, repr=False)


@dataclass
class CompiledComponent:
    """A compiled component: safe to instantiate any number of times, from any thread."""

    name: str
    digest: str
    size: int
    wasmtime: wc.Component
    world: t.WorldType
    functions: dict[str, ExportedFunction]
    compile_seconds: float | None  # None: came from the AOT cache

    @property
    def ref(self) -> str:
        return f"sha256:{self.digest}"

    def resolve(self, name: str) -> ExportedFunction:
        """Find an export by ``func``, ``iface#func`` or ``ns:pkg/iface@ver#func``."""
        if name in self.functions:
            return self.functions[name]
        if "#" not in name and "/" in name:
            name = _wasmtime_style(name)
        if "#" in name:
            iface, func = name.rsplit("#", 1)
            matches = [f for f in self.functions.values()
                       if f.interface and f.name == func and _iface_matches(f.interface, iface)]
        else:
            matches = [f for f in self.functions.values() if f.name == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise AmbiguousFunction(self.name, name, sorted(f.key for f in matches))
        raise FunctionNotFound(self.name, name, sorted(self.functions))


def _wasmtime_style(name: str) -> str:
    """``ns:pkg/iface.func@ver`` (the wasmtime CLI's spelling) → ``ns:pkg/iface@ver#func``."""
    base, at, ver = name.partition("@")
    head, _, tail = base.rpartition("/")
    iface, dot, func = tail.partition(".")
    if not dot:
        return name
    return f"{head}/{iface}{at}{ver}#{func}"


def _iface_matches(full: str, given: str) -> bool:
    """``given`` may be the full name, the name without version, or the bare interface."""
    unversioned = full.split("@", 1)[0]
    short = unversioned.rsplit("/", 1)[-1]
    return given in (full, unversioned, short)


def _looks_like_wat(data: bytes) -> bool:
    """UTF-8 text whose first token, after blank lines and ``;;`` comments, is ``(``."""
    for line in data[:4096].splitlines():
        line = line.strip()
        if not line or line.startswith(b";;"):
            continue
        if not line.startswith(b"("):
            return False  # a binary, mostly: its first line starts with b"\x00asm"
        try:  # binary that happens to hold a ``(`` early on is not text
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True
    return False


def check_preamble(data: bytes, source: str) -> None:
    """Reject what is not a component before wasmtime sees it."""
    if _looks_like_wat(data):
        return  # WAT text: wasmtime parses it (handy for tests and hand-written examples)
    if len(data) < 8:
        raise ComponentLoadError(source, f"file is too short to be WebAssembly ({len(data)} bytes)")
    if data[:4] != WASM_MAGIC:
        raise ComponentLoadError(
            source, f"not a WebAssembly binary (starts with {data[:4]!r}, expected b'\\x00asm')"
        )
    if data[4:8] == CORE_VERSION:
        raise ComponentLoadError(
            source, "this is a core WebAssembly module, not a component",
            "wrap it with `wasm-tools component new` (plus a WASI adapter if it uses WASI)",
        )
    if data[4:8] != COMPONENT_VERSION:
        raise ComponentLoadError(
            source, f"unsupported WebAssembly encoding version {data[4:8].hex()}",
            "this host runs Component Model binaries (version 0d 00 01 00)",
        )


def _load_error(source: str, exc: WasmtimeError) -> ComponentLoadError:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else "compile failed"
    hint = next((h for k, h in _FEATURE_HINTS.items() if k in text.lower()), None)
    if "unexpected end" in text.lower():
        hint = "the file looks truncated; rebuild or re-download it"
    rest = text.splitlines()[1:4]
    detail = f"{first} ({' / '.join(rest)})" if rest else first
    return ComponentLoadError(source, detail, hint)


def _compile(engine: Engine, data: bytes, source: str, progress: Progress | None) -> wc.Component:
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["ok"] = wc.Component(engine.wasmtime, data)
        except BaseException as exc:  # carried to the caller's thread below
            result["err"] = exc

    if progress is None or len(data) < 1_000_000:
        work()
    else:
        progress(f"compiling {source} ({len(data) / 1e6:.1f} MB, once; cached afterwards)…")
        th = threading.Thread(target=work, name="trellis-compile", daemon=True)
        started = time.monotonic()
        th.start()
        while th.is_alive():
            th.join(3.0)
            if th.is_alive():
                progress(f"  still compiling {source}: {time.monotonic() - started:.0f}s")
    if "err" in result:
        err = result["err"]
        if isinstance(err, WasmtimeError):
            raise _load_error(source, err) from err
        raise err  # type: ignore[misc]
    return result["ok"]  # type: ignore[return-value]


def _index_functions(component: wc.Component, world: t.WorldType) -> dict[str, ExportedFunction]:
    funcs: dict[str, ExportedFunction] = {}
    for ft in world.export_funcs:
        idx = component.get_export_index(ft.name)
        if idx is not None:
            funcs[ft.name] = ExportedFunction(ft.name, None, ft.name, ft, (idx,))
    for iface in world.exports:
        iidx = component.get_export_index(iface.name)
        if iidx is None:
            continue
        for fname, ft in iface.functions.items():
            fidx = component.get_export_index(fname, iidx)
            if fidx is not None:
                key = f"{iface.name}#{fname}"
                funcs[key] = ExportedFunction(key, iface.name, fname, ft, (iidx, fidx))
    return funcs


_HEAD = 4096  # enough for check_preamble (it looks at most at the first 4 KiB of WAT)


def _read(path: Path, label: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ComponentLoadError(label, exc.strerror or str(exc)) from exc


def load_component(
    engine: Engine,
    source: str | Path | bytes,
    *,
    cache: CompileCache | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> CompiledComponent:
    """Read, validate, compile (or fetch from the AOT cache) and introspect a component.

    Raises:
        ComponentLoadError: unreadable file, garbage, a core module, a truncated binary or a
            feature this host does not support — the message names the source and the fix.
    """
    data: bytes | None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        size = len(data)
        label = name or "<bytes>"
        check_preamble(data, label)
        digest = sha256_hex(data)
    else:
        path = Path(source)
        label = name or str(path)
        # Only the head is needed to vet the file; the whole of it (18 MB for a Python guest)
        # only to hash it on a digest-memo miss or to compile it on a cache miss.
        data = None
        try:
            with path.open("rb") as f:
                head = f.read(_HEAD)
                size = os.fstat(f.fileno()).st_size
                if size <= _HEAD or cache is None:
                    data = head + f.read()
        except FileNotFoundError:
            raise ComponentLoadError(label, "no such file") from None
        except IsADirectoryError:
            raise ComponentLoadError(label, "is a directory, expected a .wasm file") from None
        except OSError as exc:
            raise ComponentLoadError(label, exc.strerror or str(exc)) from exc
        check_preamble(head, label)
        if cache:
            digest = cache.file_digest(path)
        else:
            assert data is not None  # read in full above when there is no cache
            digest = sha256_hex(data)

    compiled = cache.load(engine, digest) if cache else None
    seconds: float | None = None
    if compiled is None:
        if data is None:
            data = _read(path, label)
        started = time.monotonic()
        compiled = _compile(engine, data, label, progress)
        seconds = time.monotonic() - started
        if cache:
            cache.misses += 1
            cache.store(engine, digest, compiled)
        if progress and seconds > 1:
            progress(f"compiled {label} in {seconds:.1f}s")
    # Reading the types back from wasmtime costs ~20 ms for a WASI guest; they depend only
    # on the component and the wasmtime version, so they are cached next to the artifact.
    world = cache.load_world(engine, digest) if cache else None
    if world is None:
        try:
            world = world_type(compiled, engine.wasmtime)
        except (TypeError, WasmtimeError) as exc:
            raise ComponentLoadError(label, f"cannot read its types: {exc}") from exc
        if cache:
            cache.store_world(engine, digest, world)
    short = name or (Path(source).stem if not isinstance(source, (bytes, bytearray, memoryview))
                     else f"sha256:{digest[:12]}")
    return CompiledComponent(
        name=short, digest=digest, size=size, wasmtime=compiled, world=world,
        functions=_index_functions(compiled, world), compile_seconds=seconds,
    )
