"""The guest components the benchmarks call, written by hand so the numbers measure the host.

``ECHO`` is a tiny component whose functions do (almost) nothing in wasm: ``add`` adds, and
the ``echo-*`` functions return their argument by pointing the return area at the bytes the
host just lowered into linear memory. Every microsecond measured is therefore host-side
lowering, lifting and call overhead, not guest work.

WIT equivalent::

    record item { id: u32, name: string, score: f64 }
    add: func(a: u32, b: u32) -> u32;
    echo-string: func(s: string) -> string;
    echo-record: func(r: item) -> item;
    echo-bytes: func(b: list<u8>) -> list<u8>;

Memory layout: 0..24 is the return area (8-aligned for the record's ``f64``); the bump heap
starts at 1024, is handed out by ``cabi_realloc`` and reset by the post-return function, so a
pooled instance never grows past what one call needs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GREETER_DIR = REPO / "examples" / "greeter"
GREETER_FUNC = "example:greeter/greet@0.1.0#greet"
"""The greeter's one export, in Trellis's ``iface#func`` spelling."""

ECHO = r"""
(component
  (core module $m
    (memory (export "memory") 1)
    (global $heap_base i32 (i32.const 1024))
    (global $next (mut i32) (i32.const 1024))

    ;; Bump allocator, as in examples/calc-wat/calc.wat: grows memory on demand, never frees.
    (func $realloc (export "cabi_realloc")
      (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $ptr i32) (local $end i32) (local $have i32)
      (if (i32.and (i32.ne (local.get $old) (i32.const 0))
                   (i32.le_u (local.get $size) (local.get $old_size)))
        (then (return (local.get $old))))
      (local.set $ptr
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $ptr) (local.get $size)))
      (local.set $have (i32.shl (memory.size) (i32.const 16)))
      (if (i32.gt_u (local.get $end) (local.get $have))
        (then
          (if (i32.eq
                (memory.grow
                  (i32.shr_u
                    (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 0xffff))
                    (i32.const 16)))
                (i32.const -1))
            (then unreachable))))
      (global.set $next (local.get $end))
      (if (i32.ne (local.get $old) (i32.const 0))
        (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
      (local.get $ptr))

    (func (export "add") (param i32 i32) (result i32)
      (i32.add (local.get 0) (local.get 1)))

    ;; string and list<u8> flatten to (ptr, len); returning them means writing (ptr, len) to
    ;; the return area and returning its address. The bytes stay where the host put them.
    (func $echo_ptr_len (export "echo-ptr-len") (param i32 i32) (result i32)
      (i32.store (i32.const 0) (local.get 0))
      (i32.store (i32.const 4) (local.get 1))
      (i32.const 0))

    ;; item flattens to (id: i32, name.ptr: i32, name.len: i32, score: f64); its memory layout
    ;; is id@0, name@4 (ptr, len), score@16.
    (func (export "echo-record") (param i32 i32 i32 f64) (result i32)
      (i32.store (i32.const 0) (local.get 0))
      (i32.store (i32.const 4) (local.get 1))
      (i32.store (i32.const 8) (local.get 2))
      (f64.store (i32.const 16) (local.get 3))
      (i32.const 0))

    (func (export "cabi_post_reset") (param i32)
      (global.set $next (global.get $heap_base)))
  )

  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $mem))
  (alias core export $i "cabi_realloc" (core func $realloc))
  (alias core export $i "cabi_post_reset" (core func $post))

  (type $item' (record (field "id" u32) (field "name" string) (field "score" f64)))
  (export $item "item" (type $item'))

  (func (export "add") (param "a" u32) (param "b" u32) (result u32)
    (canon lift (core func $i "add")))
  (func (export "echo-string") (param "s" string) (result string)
    (canon lift (core func $i "echo-ptr-len") (memory $mem) (realloc $realloc)
      string-encoding=utf8 (post-return $post)))
  (func (export "echo-record") (param "r" $item) (result $item)
    (canon lift (core func $i "echo-record") (memory $mem) (realloc $realloc)
      string-encoding=utf8 (post-return $post)))
  (func (export "echo-bytes") (param "b" (list u8)) (result (list u8))
    (canon lift (core func $i "echo-ptr-len") (memory $mem) (realloc $realloc)
      (post-return $post)))
)
"""


def build_greeter(progress: Callable[[str], None] | None = None) -> Path:
    """The examples/greeter component (componentize-py; cached by source digest)."""
    from trellis.host.build import build_python_component

    return Path(build_python_component(GREETER_DIR, progress=progress))
