"""Loading: clear errors for bad input, and the persistent AOT cache across processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _wat import LIMITS
from trellis.host.runtime.cache import CompileCache
from trellis.host.runtime.engine import Engine
from trellis.host.runtime.loader import load_component
from trellis.host.runtime.runtime import Runtime
from trellis.lattice.errors import ComponentLoadError

CORE_MODULE = b"\0asm\x01\x00\x00\x00"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


@pytest.fixture
def limits_wasm(tmp_path: Path) -> Path:
    import wasmtime

    # A binary component file (not WAT): wasmtime's wat2wasm handles components too.
    p = tmp_path / "limits.wasm"
    p.write_bytes(wasmtime.wat2wasm(LIMITS))
    return p


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "too short"),
        (b"hello world, not wasm", "not a WebAssembly binary"),
        (CORE_MODULE, "core WebAssembly module, not a component"),
        (b"\0asm\x0e\x00\x01\x00rest", "unsupported WebAssembly encoding version"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path: Path, engine: Engine, content: bytes,
                                    message: str) -> None:
    p = tmp_path / "bad.wasm"
    p.write_bytes(content)
    with pytest.raises(ComponentLoadError, match=message) as info:
        load_component(engine, p)
    assert str(p) in str(info.value)


def test_truncated_component(tmp_path: Path, engine: Engine, limits_wasm: Path) -> None:
    data = limits_wasm.read_bytes()
    p = tmp_path / "trunc.wasm"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ComponentLoadError, match="cannot load") as info:
        load_component(engine, p)
    assert "truncated" in str(info.value)


def test_missing_file_and_directory(tmp_path: Path, engine: Engine) -> None:
    with pytest.raises(ComponentLoadError, match="no such file"):
        load_component(engine, tmp_path / "nope.wasm")
    with pytest.raises(ComponentLoadError, match="is a directory"):
        load_component(engine, tmp_path)


def test_cache_hit_in_second_process(tmp_path: Path, limits_wasm: Path) -> None:
    cache_dir = tmp_path / "cache"
    with Runtime(cache_dir=cache_dir) as rt:
        first = rt.load(limits_wasm)
        assert first.compiled.compile_seconds is not None
    script = (
        "import json,sys; from pathlib import Path\n"
        "from trellis.host.runtime.runtime import Runtime\n"
        f"rt = Runtime(cache_dir=Path({str(cache_dir)!r}))\n"
        f"c = rt.load(Path({str(limits_wasm)!r}))\n"
        "print(json.dumps({'compiled': c.compiled.compile_seconds, 'add': c.call('add', 2, 3)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True)
    got = json.loads(out.stdout)
    assert got == {"compiled": None, "add": 5}


@pytest.mark.parametrize("damage", ["flip", "truncate", "sidecar", "delete"])
def test_corrupt_cache_entry_is_recompiled(tmp_path: Path, limits_wasm: Path,
                                           damage: str) -> None:
    cache = CompileCache(tmp_path / "cache")
    engine = Engine()
    first = load_component(engine, limits_wasm, cache=cache)
    (art,) = (cache.root / engine.config.fingerprint()).glob("*.cwasm")
    meta = art.with_suffix(".json")
    data = bytearray(art.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        art.write_bytes(bytes(data))
    elif damage == "truncate":
        art.write_bytes(bytes(data[:100]))
    elif damage == "sidecar":
        meta.write_text("{not json")
    else:
        art.unlink()
    second = load_component(engine, limits_wasm, cache=cache)
    assert second.compile_seconds is not None, "damaged entry must be recompiled, not loaded"
    assert second.digest == first.digest
    third = load_component(engine, limits_wasm, cache=cache)
    assert third.compile_seconds is None, "the recompiled entry is cached again"


def test_damaged_cached_types_are_read_again(tmp_path: Path, limits_wasm: Path) -> None:
    cache = CompileCache(tmp_path / "cache")
    engine = Engine()
    first = load_component(engine, limits_wasm, cache=cache)
    (world_file,) = (cache.root / engine.config.fingerprint()).glob("*.world")
    world_file.write_bytes(b"not a pickle")
    second = load_component(engine, limits_wasm, cache=cache)
    assert second.compile_seconds is None
    assert second.world == first.world and set(second.functions) == set(first.functions)


def test_digest_memo_follows_file_changes(tmp_path: Path, limits_wasm: Path) -> None:
    import wasmtime

    cache = CompileCache(tmp_path / "cache")
    d1 = cache.file_digest(limits_wasm)
    assert cache.file_digest(limits_wasm) == d1
    limits_wasm.write_bytes(wasmtime.wat2wasm(LIMITS.replace("i32.add", "i32.sub", 1)))
    assert cache.file_digest(limits_wasm) != d1
