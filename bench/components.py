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


# --- bench/providers.py -------------------------------------------------------------------------

KV_LOOP = r"""
(component
  (import "wasi:keyvalue/store@0.2.0-draft" (instance $kv
    (type $e (variant (case "no-such-store") (case "access-denied") (case "other" string)))
    (export "error" (type $err (eq $e)))
    (export "bucket" (type $b (sub resource)))
    (export "open" (func (param "identifier" string) (result (result (own $b) (error $err)))))
    (export "[method]bucket.get" (func (param "self" (borrow $b)) (param "key" string)
      (result (result (option (list u8)) (error $err)))))
    (export "[method]bucket.set" (func (param "self" (borrow $b)) (param "key" string)
      (param "value" (list u8)) (result (result (error $err)))))))
  (alias export $kv "bucket" (type $bucket))
  (core module $alloc
    (memory (export "memory") 1)
    (global $next (export "next") (mut i32) (i32.const 1024))
    (func (export "realloc")
      (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $ptr i32) (local $end i32) (local $have i32)
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
      (local.get $ptr))
    (func (export "reset") (param i32) (global.set $next (i32.const 1024))))
  (core instance $a (instantiate $alloc))
  (alias core export $a "memory" (core memory $mem))
  (alias core export $a "realloc" (core func $realloc))
  (alias core export $a "reset" (core func $reset))
  (core func $open (canon lower (func $kv "open") (memory $mem) (realloc $realloc)))
  (core func $get (canon lower (func $kv "[method]bucket.get") (memory $mem) (realloc $realloc)))
  (core func $set (canon lower (func $kv "[method]bucket.set") (memory $mem) (realloc $realloc)))
  (core func $drop (canon resource.drop $bucket))
  (core module $m
    (import "a" "memory" (memory 1))
    (import "a" "next" (global $next (mut i32)))
    (import "h" "open" (func $open (param i32 i32 i32)))
    (import "h" "get" (func $get (param i32 i32 i32 i32)))
    (import "h" "set" (func $set (param i32 i32 i32 i32 i32 i32)))
    (import "h" "drop" (func $drop (param i32)))
    ;; Return areas: open's result<own<bucket>, error> at 16 (tag, handle at 20); get's
    ;; result<option<list<u8>>, error> at 32 (tag, option tag at 36, list at 40/44); set's at 64.
    (func $bucket (param $p i32) (param $l i32) (result i32)
      (call $open (local.get $p) (local.get $l) (i32.const 16))
      (if (result i32) (i32.load8_u (i32.const 16))
        (then (i32.const -1)) (else (i32.load (i32.const 20)))))
    (func $gets (export "get-n") (param $ip i32) (param $il i32) (param $kp i32) (param $kl i32)
      (param $n i32) (result i32)
      (local $h i32) (local $mark i32) (local $total i32)
      (local.set $h (call $bucket (local.get $ip) (local.get $il)))
      (if (i32.eq (local.get $h) (i32.const -1)) (then (return (i32.const -1))))
      (local.set $mark (global.get $next))
      (block $done
        (loop $again
          (br_if $done (i32.eqz (local.get $n)))
          (call $get (local.get $h) (local.get $kp) (local.get $kl) (i32.const 32))
          (if (i32.load8_u (i32.const 32))
            (then (call $drop (local.get $h)) (return (i32.const -1))))
          (if (i32.load8_u (i32.const 36))
            (then (local.set $total (i32.add (local.get $total) (i32.load (i32.const 44))))))
          (global.set $next (local.get $mark))  ;; forget the value the host just lowered
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br $again)))
      (call $drop (local.get $h))
      (local.get $total))
    (func (export "get") (param i32 i32 i32 i32) (result i32)
      (call $gets (local.get 0) (local.get 1) (local.get 2) (local.get 3) (i32.const 1)))
    (func $sets (export "set-n") (param $ip i32) (param $il i32) (param $kp i32) (param $kl i32)
      (param $vp i32) (param $vl i32) (param $n i32) (result i32)
      (local $h i32) (local $done i32)
      (local.set $h (call $bucket (local.get $ip) (local.get $il)))
      (if (i32.eq (local.get $h) (i32.const -1)) (then (return (i32.const -1))))
      (block $out
        (loop $again
          (br_if $out (i32.eq (local.get $done) (local.get $n)))
          (call $set (local.get $h) (local.get $kp) (local.get $kl) (local.get $vp)
            (local.get $vl) (i32.const 64))
          (if (i32.load8_u (i32.const 64))
            (then (call $drop (local.get $h)) (return (i32.const -1))))
          (local.set $done (i32.add (local.get $done) (i32.const 1)))
          (br $again)))
      (call $drop (local.get $h))
      (local.get $done))
    (func (export "set") (param i32 i32 i32 i32 i32 i32) (result i32)
      (call $sets (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)
        (local.get 5) (i32.const 1))))
  (core instance $h
    (export "open" (func $open)) (export "get" (func $get)) (export "set" (func $set))
    (export "drop" (func $drop)))
  (core instance $i (instantiate $m (with "a" (instance $a)) (with "h" (instance $h))))
  (func (export "get") (param "id" string) (param "key" string) (result u32)
    (canon lift (core func $i "get") (memory $mem) (realloc $realloc) (post-return $reset)))
  (func (export "get-n") (param "id" string) (param "key" string) (param "n" u32) (result u32)
    (canon lift (core func $i "get-n") (memory $mem) (realloc $realloc) (post-return $reset)))
  (func (export "set") (param "id" string) (param "key" string) (param "value" (list u8))
    (result u32)
    (canon lift (core func $i "set") (memory $mem) (realloc $realloc) (post-return $reset)))
  (func (export "set-n") (param "id" string) (param "key" string) (param "value" (list u8))
    (param "n" u32) (result u32)
    (canon lift (core func $i "set-n") (memory $mem) (realloc $realloc) (post-return $reset)))
)
"""
"""Imports ``wasi:keyvalue/store@0.2.0-draft`` (as wasmCloud components do). ``get(id, key)``
and ``set(id, key, value)`` open the store, make one call and drop the handle: what a handler
does per request. ``get-n``/``set-n`` open once and call ``n`` times, so the time per call
of the provider itself is ``invocation / n``. ``get*`` return the bytes read (a missing key
reads 0), ``set*`` the writes done; ``0xffffffff`` when open or a call failed."""

CALC_IFACE = "bench:c2c/calc@0.1.0"

C2C_CALLEE = r"""
(component
  (core module $m
    (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))
  (core instance $i (instantiate $m))
  (func $add (param "a" u32) (param "b" u32) (result u32) (canon lift (core func $i "add")))
  (instance $calc (export "add" (func $add)))
  (export "bench:c2c/calc@0.1.0" (instance $calc))
)
"""
"""Exports ``bench:c2c/calc@0.1.0`` with ``add(a, b)``: the target of component links."""

C2C_CALLER = r"""
(component
  (import "bench:c2c/calc@0.1.0" (instance $calc
    (export "add" (func (param "a" u32) (param "b" u32) (result u32)))))
  (core func $add (canon lower (func $calc "add")))
  (core module $m
    (import "h" "add" (func $add (param i32 i32) (result i32)))
    (func (export "call") (param i32 i32) (result i32) (call $add (local.get 0) (local.get 1)))
    (func (export "call-n") (param $n i32) (result i32) (local $acc i32)
      (block $done
        (loop $again
          (br_if $done (i32.eqz (local.get $n)))
          (local.set $acc (call $add (local.get $acc) (i32.const 1)))
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br $again)))
      (local.get $acc)))
  (core instance $h (export "add" (func $add)))
  (core instance $i (instantiate $m (with "h" (instance $h))))
  (func (export "call") (param "a" u32) (param "b" u32) (result u32)
    (canon lift (core func $i "call")))
  (func (export "call-n") (param "n" u32) (result u32) (canon lift (core func $i "call-n")))
)
"""
"""Imports ``bench:c2c/calc@0.1.0``: ``call(a, b)`` calls the linked ``add`` once, ``call-n(n)``
``n`` times in a row (returning ``n``), so a link's cost per call is ``invocation / n``."""
