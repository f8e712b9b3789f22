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
