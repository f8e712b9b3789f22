;; A Component Model component written by hand, so tests and demos need no guest toolchain.
;;
;; WIT equivalent:
;;
;;   package example:calc@0.1.0;
;;   interface calc {
;;     add: func(a: u32, b: u32) -> u32;
;;     greet: func(name: string) -> string;
;;     fail: func();                          // traps (`unreachable`)
;;   }
;;   world calc-world {
;;     export calc;
;;     export version: func() -> string;      // root-level function
;;   }
;;
;; Memory layout of the core module:
;;   0..8      return area: (ptr, len) of a returned string
;;   16..23    "Hello, "
;;   32..      the version string
;;   1024..    bump heap, handed out by cabi_realloc and reset after every call
(component
  (core module $impl
    (memory (export "memory") 1)

    (data (i32.const 16) "Hello, ")
    (data (i32.const 32) "calc 0.1.0 (hand-written WAT)")

    (global $heap_base i32 (i32.const 1024))
    (global $next (mut i32) (i32.const 1024))

    ;; The canonical ABI allocates argument strings/lists through this. A bump allocator never
    ;; frees; post-return resets it, so memory does not grow across calls.
    (func $realloc (export "cabi_realloc")
      (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $ptr i32) (local $end i32) (local $have i32)
      ;; Shrinking (or keeping) an allocation: reuse it in place.
      (if (i32.and (i32.ne (local.get $old) (i32.const 0))
                   (i32.le_u (local.get $size) (local.get $old_size)))
        (then (return (local.get $old))))
      ;; Round the bump pointer up to the requested alignment (a power of two).
      (local.set $ptr
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $ptr) (local.get $size)))
      ;; Grow linear memory when the allocation runs past its end; trap if the host refuses.
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
      ;; Growing a previous allocation: copy its bytes over.
      (if (i32.ne (local.get $old) (i32.const 0))
        (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
      (local.get $ptr))

    (func (export "add") (param $a i32) (param $b i32) (result i32)
      (i32.add (local.get $a) (local.get $b)))

    ;; greet(name) -> "Hello, " ++ name ++ "!", returned through the return area at 0.
    (func (export "greet") (param $name i32) (param $len i32) (result i32)
      (local $out i32) (local $out_len i32)
      (local.set $out_len (i32.add (local.get $len) (i32.const 8)))
      (local.set $out
        (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $out_len)))
      (memory.copy (local.get $out) (i32.const 16) (i32.const 7))
      (memory.copy (i32.add (local.get $out) (i32.const 7)) (local.get $name) (local.get $len))
      (i32.store8 (i32.add (local.get $out) (i32.add (local.get $len) (i32.const 7)))
                  (i32.const 0x21))
      (i32.store (i32.const 0) (local.get $out))
      (i32.store (i32.const 4) (local.get $out_len))
      (i32.const 0))

    (func (export "fail")
      unreachable)

    (func (export "version") (result i32)
      (i32.store (i32.const 0) (i32.const 32))
      (i32.store (i32.const 4) (i32.const 29))
      (i32.const 0))

    ;; Runs after the host has read a call's results: everything on the heap is garbage now.
    (func (export "cabi_post_reset") (param i32)
      (global.set $next (global.get $heap_base)))
  )

  (core instance $i (instantiate $impl))
  (alias core export $i "memory" (core memory $mem))
  (alias core export $i "cabi_realloc" (core func $realloc))
  (alias core export $i "cabi_post_reset" (core func $post))

  (func $add (param "a" u32) (param "b" u32) (result u32)
    (canon lift (core func $i "add")))
  (func $greet (param "name" string) (result string)
    (canon lift (core func $i "greet") (memory $mem) (realloc $realloc) string-encoding=utf8
      (post-return $post)))
  (func $fail
    (canon lift (core func $i "fail")))
  (func $version (result string)
    (canon lift (core func $i "version") (memory $mem) string-encoding=utf8
      (post-return $post)))

  (instance $calc
    (export "add" (func $add))
    (export "greet" (func $greet))
    (export "fail" (func $fail)))
  (export "example:calc/calc@0.1.0" (instance $calc))
  (export "version" (func $version))
)
