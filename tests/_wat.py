"""Small hand-written components for runtime tests (WAT text; wasmtime parses it directly)."""

# Exports misbehaving functions at the root: the limits tests.
#   add(a: u32, b: u32) -> u32, spin(), trap(), hog() (grows memory until refused, then traps),
#   grow(pages: u32) -> s32 (memory.grow result), burn(n: u32) -> u32 (a counted loop).
LIMITS = r"""
(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
    (func (export "spin") (loop $l (br $l)))
    (func (export "trap") unreachable)
    (func (export "hog")
      (loop $l
        (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
        (br $l)))
    (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
    (func (export "burn") (param $n i32) (result i32) (local $i i32)
      (loop $l
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
      (local.get $i))
  )
  (core instance $i (instantiate $m))
  (func (export "add") (param "a" u32) (param "b" u32) (result u32)
    (canon lift (core func $i "add")))
  (func (export "spin") (canon lift (core func $i "spin")))
  (func (export "trap") (canon lift (core func $i "trap")))
  (func (export "hog") (canon lift (core func $i "hog")))
  (func (export "grow") (param "pages" u32) (result s32) (canon lift (core func $i "grow")))
  (func (export "burn") (param "n" u32) (result u32) (canon lift (core func $i "burn")))
)
"""

# Imports `example:host/math` { double: func(x: u32) -> u32 } and exports quadruple(x),
# which calls double twice: the host-imports tests.
HOST_IMPORT = r"""
(component
  (import "example:host/math" (instance $math
    (export "double" (func (param "x" u32) (result u32)))))
  (core func $double (canon lower (func $math "double")))
  (core module $m
    (import "host" "double" (func $d (param i32) (result i32)))
    (func (export "quadruple") (param i32) (result i32) (call $d (call $d (local.get 0)))))
  (core instance $host (export "double" (func $double)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func (export "quadruple") (param "x" u32) (result u32) (canon lift (core func $i "quadruple")))
)
"""

# Imports `example:kv/store` { resource bucket; open(id: u32) -> own<bucket>;
# [method]bucket.get(key: u32) -> u32 } and exports lookup(id, key) (open, get, drop) and
# keep(id) (opens a bucket and never drops it): host-defined resources.
HOST_RESOURCE = r"""
(component
  (import "example:kv/store" (instance $kv
    (export "bucket" (type $b (sub resource)))
    (export "open" (func (param "id" u32) (result (own $b))))
    (export "[method]bucket.get" (func (param "self" (borrow $b)) (param "key" u32) (result u32)))))
  (alias export $kv "bucket" (type $bucket))
  (core func $open (canon lower (func $kv "open")))
  (core func $get (canon lower (func $kv "[method]bucket.get")))
  (core func $drop (canon resource.drop $bucket))
  (core module $m
    (import "h" "open" (func $open (param i32) (result i32)))
    (import "h" "get" (func $get (param i32 i32) (result i32)))
    (import "h" "drop" (func $drop (param i32)))
    (func (export "lookup") (param $id i32) (param $key i32) (result i32)
      (local $h i32) (local $r i32)
      (local.set $h (call $open (local.get $id)))
      (local.set $r (call $get (local.get $h) (local.get $key)))
      (call $drop (local.get $h))
      (local.get $r))
    (func (export "keep") (param $id i32) (result i32)
      (call $get (call $open (local.get $id)) (i32.const 0))))
  (core instance $h
    (export "open" (func $open)) (export "get" (func $get)) (export "drop" (func $drop)))
  (core instance $i (instantiate $m (with "h" (instance $h))))
  (func (export "lookup") (param "id" u32) (param "key" u32) (result u32)
    (canon lift (core func $i "lookup")))
  (func (export "keep") (param "id" u32) (result u32) (canon lift (core func $i "keep")))
)
"""

# Imports `example:host/log` { emit: func(x: u32) } (no result) and exports run(x): calls emit
# then returns x + 1; a failing void async import must still fail the call.
HOST_VOID = r"""
(component
  (import "example:host/log" (instance $log (export "emit" (func (param "x" u32)))))
  (core func $emit (canon lower (func $log "emit")))
  (core module $m
    (import "host" "emit" (func $e (param i32)))
    (func (export "run") (param i32) (result i32)
      (call $e (local.get 0)) (i32.add (local.get 0) (i32.const 1))))
  (core instance $host (export "emit" (func $emit)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func (export "run") (param "x" u32) (result u32) (canon lift (core func $i "run")))
)
"""
