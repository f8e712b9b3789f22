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

# A bump allocator core module shared by the WAT guests below that pass strings and lists:
# memory, realloc and reset (the post-return), instantiated first so `canon lower` can use its
# memory and realloc.
_BUMP_ALLOC_INSTANCE = r"""
  (core module $alloc
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
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
    (func (export "reset") (param i32) (global.set $next (i32.const 1024)))
    (func (export "reset0") (global.set $next (i32.const 1024))))
  (core instance $a (instantiate $alloc))
  (alias core export $a "memory" (core memory $mem))
  (alias core export $a "realloc" (core func $realloc))
  (alias core export $a "reset" (core func $reset))
  (alias core export $a "reset0" (core func $reset0))
"""

# Imports wasmCloud's `wasi:keyvalue/store@0.2.0-draft` (just open, [method]bucket.get/set and
# the types they use) and exports put(id, key, value: list<u8>) -> u32 (0 ok, 1 open failed,
# 2 set failed) and get(id, key) -> list<u8> (empty when missing or on error). Strings and
# lists cross through a bump allocator in a separate core instance, so the lowered imports
# can name its memory before the main module is instantiated.
KV_DRAFT = r"""
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
""" + _BUMP_ALLOC_INSTANCE + r"""
  (core func $open (canon lower (func $kv "open") (memory $mem) (realloc $realloc)))
  (core func $get (canon lower (func $kv "[method]bucket.get") (memory $mem) (realloc $realloc)))
  (core func $set (canon lower (func $kv "[method]bucket.set") (memory $mem) (realloc $realloc)))
  (core func $drop (canon resource.drop $bucket))
  (core module $m
    (import "env" "memory" (memory 1))
    (import "h" "open" (func $open (param i32 i32 i32)))
    (import "h" "get" (func $get (param i32 i32 i32 i32)))
    (import "h" "set" (func $set (param i32 i32 i32 i32 i32 i32)))
    (import "h" "drop" (func $drop (param i32)))
    ;; result<own<bucket>, error> at 16: tag byte, handle at 20. -1 when open failed.
    (func $bucket (param $p i32) (param $l i32) (result i32)
      (call $open (local.get $p) (local.get $l) (i32.const 16))
      (if (result i32) (i32.load8_u (i32.const 16))
        (then (i32.const -1)) (else (i32.load (i32.const 20)))))
    (func (export "put") (param $ip i32) (param $il i32) (param $kp i32) (param $kl i32)
      (param $vp i32) (param $vl i32) (result i32)
      (local $h i32)
      (local.set $h (call $bucket (local.get $ip) (local.get $il)))
      (if (i32.eq (local.get $h) (i32.const -1)) (then (return (i32.const 1))))
      ;; result<_, error> at 32
      (call $set (local.get $h) (local.get $kp) (local.get $kl) (local.get $vp) (local.get $vl)
        (i32.const 32))
      (call $drop (local.get $h))
      (if (result i32) (i32.load8_u (i32.const 32)) (then (i32.const 2)) (else (i32.const 0))))
    (func (export "get") (param $ip i32) (param $il i32) (param $kp i32) (param $kl i32)
      (result i32)
      (local $h i32)
      ;; the returned list<u8> (ptr, len) at 48; result<option<list<u8>>, error> at 64
      (i32.store (i32.const 48) (i32.const 0))
      (i32.store (i32.const 52) (i32.const 0))
      (local.set $h (call $bucket (local.get $ip) (local.get $il)))
      (if (i32.ne (local.get $h) (i32.const -1))
        (then
          (call $get (local.get $h) (local.get $kp) (local.get $kl) (i32.const 64))
          (call $drop (local.get $h))
          (if (i32.and (i32.eqz (i32.load8_u (i32.const 64))) (i32.load8_u (i32.const 68)))
            (then
              (i32.store (i32.const 48) (i32.load (i32.const 72)))
              (i32.store (i32.const 52) (i32.load (i32.const 76)))))))
      (i32.const 48)))
  (core instance $h
    (export "open" (func $open)) (export "get" (func $get)) (export "set" (func $set))
    (export "drop" (func $drop)))
  (core instance $env (export "memory" (memory $mem)))
  (core instance $i (instantiate $m (with "env" (instance $env)) (with "h" (instance $h))))
  (func (export "put") (param "id" string) (param "key" string) (param "value" (list u8))
    (result u32)
    (canon lift (core func $i "put") (memory $mem) (realloc $realloc)))
  (func (export "get") (param "id" string) (param "key" string) (result (list u8))
    (canon lift (core func $i "get") (memory $mem) (realloc $realloc)))
)
"""


# Imports `wasi:logging/logging@0.1.0-draft` { enum level; log(level, context, message) } and
# exports log(level: u32, context, message): a pass-through, the level as its enum index.
WASI_LOGGING = r"""
(component
  (import "wasi:logging/logging@0.1.0-draft" (instance $logging
    (type $lvl (enum "trace" "debug" "info" "warn" "error" "critical"))
    (export "level" (type $level (eq $lvl)))
    (export "log" (func (param "level" $level) (param "context" string)
                        (param "message" string)))))
""" + _BUMP_ALLOC_INSTANCE + r"""
  (core func $log (canon lower (func $logging "log") (memory $mem)))
  (core module $m
    (import "h" "log" (func $log (param i32 i32 i32 i32 i32)))
    (import "h" "reset" (func $reset))
    (func (export "log") (param i32 i32 i32 i32 i32)
      (call $log (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4))
      (call $reset)))
  (core instance $h (export "log" (func $log)) (export "reset" (func $reset0)))
  (core instance $i (instantiate $m (with "h" (instance $h))))
  (func (export "log") (param "level" u32) (param "context" string) (param "message" string)
    (canon lift (core func $i "log") (memory $mem) (realloc $realloc)))
)
"""

# Imports the parts of `wasi:blobstore@0.2.0-draft` {types, container, blobstore} it uses, plus
# the Trellis extension `[method]outgoing-value.outgoing-value-write-body-sync`, and exports
# create(container) -> result<_, string>, put(container, name, data) -> result<_, string>
# (new-outgoing-value, write-data, write-body-sync, finish) and
# get(container, name) -> result<list<u8>, string> (get-data 0..u64::MAX, consume-sync).
WASI_BLOBSTORE = r"""
(component
  (import "wasi:blobstore/types@0.2.0-draft" (instance $types
    (export "outgoing-value" (type $ov (sub resource)))
    (export "incoming-value" (type $iv (sub resource)))
    (export "[static]outgoing-value.new-outgoing-value" (func (result (own $ov))))
    (export "[method]outgoing-value.outgoing-value-write-body-sync"
      (func (param "self" (borrow $ov)) (param "data" (list u8)) (result (result (error string)))))
    (export "[static]outgoing-value.finish"
      (func (param "this" (own $ov)) (result (result (error string)))))
    (export "[static]incoming-value.incoming-value-consume-sync"
      (func (param "this" (own $iv)) (result (result (list u8) (error string)))))))
  (alias export $types "outgoing-value" (type $ov))
  (alias export $types "incoming-value" (type $iv))
  (import "wasi:blobstore/container@0.2.0-draft" (instance $cont
    (export "outgoing-value" (type $ov2 (eq $ov)))
    (export "incoming-value" (type $iv2 (eq $iv)))
    (export "container" (type $c (sub resource)))
    (export "[method]container.write-data"
      (func (param "self" (borrow $c)) (param "name" string) (param "data" (borrow $ov2))
            (result (result (error string)))))
    (export "[method]container.get-data"
      (func (param "self" (borrow $c)) (param "name" string) (param "start" u64)
            (param "end" u64) (result (result (own $iv2) (error string)))))))
  (alias export $cont "container" (type $container))
  (import "wasi:blobstore/blobstore@0.2.0-draft" (instance $bs
    (export "container" (type $c2 (eq $container)))
    (export "create-container"
      (func (param "name" string) (result (result (own $c2) (error string)))))
    (export "get-container"
      (func (param "name" string) (result (result (own $c2) (error string)))))))
""" + _BUMP_ALLOC_INSTANCE + r"""
  (core func $new_ov (canon lower (func $types "[static]outgoing-value.new-outgoing-value")))
  (core func $write_body (canon lower
    (func $types "[method]outgoing-value.outgoing-value-write-body-sync")
    (memory $mem) (realloc $realloc)))
  (core func $finish (canon lower (func $types "[static]outgoing-value.finish")
    (memory $mem) (realloc $realloc)))
  (core func $consume (canon lower
    (func $types "[static]incoming-value.incoming-value-consume-sync")
    (memory $mem) (realloc $realloc)))
  (core func $write_data (canon lower (func $cont "[method]container.write-data")
    (memory $mem) (realloc $realloc)))
  (core func $get_data (canon lower (func $cont "[method]container.get-data")
    (memory $mem) (realloc $realloc)))
  (core func $create (canon lower (func $bs "create-container") (memory $mem) (realloc $realloc)))
  (core func $get_c (canon lower (func $bs "get-container") (memory $mem) (realloc $realloc)))
  (core func $drop_c (canon resource.drop $container))
  (core module $m
    (import "h" "memory" (memory 1))
    (import "h" "new_ov" (func $new_ov (result i32)))
    (import "h" "write_body" (func $write_body (param i32 i32 i32 i32)))
    (import "h" "finish" (func $finish (param i32 i32)))
    (import "h" "consume" (func $consume (param i32 i32)))
    (import "h" "write_data" (func $write_data (param i32 i32 i32 i32 i32)))
    (import "h" "get_data" (func $get_data (param i32 i32 i32 i64 i64 i32)))
    (import "h" "create" (func $create (param i32 i32 i32)))
    (import "h" "get_c" (func $get_c (param i32 i32 i32)))
    (import "h" "drop_c" (func $drop_c (param i32)))
    ;; Every result<T, string> here is laid out alike: tag at +0, payload at +4.
    (func (export "create") (param i32 i32) (result i32)
      (call $create (local.get 0) (local.get 1) (i32.const 16))
      (if (i32.eqz (i32.load8_u (i32.const 16)))
        (then (call $drop_c (i32.load (i32.const 20)))))
      (i32.const 16))
    (func (export "put") (param $cp i32) (param $cl i32) (param $np i32) (param $nl i32)
                         (param $dp i32) (param $dl i32) (result i32)
      (local $c i32) (local $ov i32)
      (call $get_c (local.get $cp) (local.get $cl) (i32.const 16))
      (if (i32.load8_u (i32.const 16)) (then (return (i32.const 16))))
      (local.set $c (i32.load (i32.const 20)))
      (local.set $ov (call $new_ov))
      (call $write_data (local.get $c) (local.get $np) (local.get $nl) (local.get $ov)
                        (i32.const 32))
      (if (i32.load8_u (i32.const 32)) (then (return (i32.const 32))))
      (call $write_body (local.get $ov) (local.get $dp) (local.get $dl) (i32.const 32))
      (if (i32.load8_u (i32.const 32)) (then (return (i32.const 32))))
      (call $finish (local.get $ov) (i32.const 32))
      (call $drop_c (local.get $c))
      (i32.const 32))
    (func (export "get") (param $cp i32) (param $cl i32) (param $np i32) (param $nl i32)
                         (result i32)
      (local $c i32)
      (call $get_c (local.get $cp) (local.get $cl) (i32.const 16))
      (if (i32.load8_u (i32.const 16)) (then (return (i32.const 16))))
      (local.set $c (i32.load (i32.const 20)))
      (call $get_data (local.get $c) (local.get $np) (local.get $nl) (i64.const 0)
                      (i64.const -1) (i32.const 32))
      (if (i32.load8_u (i32.const 32)) (then (return (i32.const 32))))
      (call $consume (i32.load (i32.const 36)) (i32.const 32))
      (call $drop_c (local.get $c))
      (i32.const 32)))
  (core instance $h
    (export "memory" (memory $mem))
    (export "new_ov" (func $new_ov)) (export "write_body" (func $write_body))
    (export "finish" (func $finish)) (export "consume" (func $consume))
    (export "write_data" (func $write_data)) (export "get_data" (func $get_data))
    (export "create" (func $create)) (export "get_c" (func $get_c))
    (export "drop_c" (func $drop_c)))
  (core instance $i (instantiate $m (with "h" (instance $h))))
  (func (export "create") (param "container" string) (result (result (error string)))
    (canon lift (core func $i "create") (memory $mem) (realloc $realloc) (post-return $reset)))
  (func (export "put") (param "container" string) (param "name" string) (param "data" (list u8))
    (result (result (error string)))
    (canon lift (core func $i "put") (memory $mem) (realloc $realloc) (post-return $reset)))
  (func (export "get") (param "container" string) (param "name" string)
    (result (result (list u8) (error string)))
    (canon lift (core func $i "get") (memory $mem) (realloc $realloc) (post-return $reset)))
)
"""

# Imports wasmCloud's `wasmcloud:bus/lattice@1.0.0` (call-target-interface, set-link-name) and
# `example:host/math`; quad-via(which, x) = double(double(x)), after choosing link name "cache"
# for example:host/math when `which` is not 0: one component, two links of one interface.
BUS_LINK_NAME = r"""
(component
  (import "wasmcloud:bus/lattice@1.0.0" (instance $bus
    (export "call-target-interface" (type $cti (sub resource)))
    (export "[constructor]call-target-interface" (func (param "namespace" string)
      (param "package" string) (param "interface" string) (result (own $cti))))
    (export "set-link-name" (func (param "name" string)
      (param "interfaces" (list (own $cti)))))))
  (import "example:host/math" (instance $math
    (export "double" (func (param "x" u32) (result u32)))))
  (core module $memmod
    (memory (export "memory") 1)
    (data (i32.const 0) "example")
    (data (i32.const 8) "host")
    (data (i32.const 16) "math")
    (data (i32.const 24) "cache"))
  (core instance $mem (instantiate $memmod))
  (alias core export $mem "memory" (core memory $m))
  (core func $new (canon lower (func $bus "[constructor]call-target-interface") (memory $m)))
  (core func $set (canon lower (func $bus "set-link-name") (memory $m)))
  (core func $double (canon lower (func $math "double")))
  (core module $main
    (import "mem" "memory" (memory 1))
    (import "h" "new" (func $new (param i32 i32 i32 i32 i32 i32) (result i32)))
    (import "h" "set" (func $set (param i32 i32 i32 i32)))
    (import "h" "double" (func $d (param i32) (result i32)))
    (func (export "quad-via") (param $which i32) (param $x i32) (result i32)
      (if (local.get $which)
        (then
          (i32.store (i32.const 64) (call $new (i32.const 0) (i32.const 7) (i32.const 8)
                                               (i32.const 4) (i32.const 16) (i32.const 4)))
          (call $set (i32.const 24) (i32.const 5) (i32.const 64) (i32.const 1))))
      (call $d (call $d (local.get $x)))))
  (core instance $h
    (export "new" (func $new)) (export "set" (func $set)) (export "double" (func $double)))
  (core instance $i (instantiate $main (with "mem" (instance $mem)) (with "h" (instance $h))))
  (func (export "quad-via") (param "which" u32) (param "x" u32) (result u32)
    (canon lift (core func $i "quad-via")))
)
"""

# Imports `example:host/gate` { wait: func() } (a sync host function that blocks until the event
# loop lets it go, like a wasi:io body read) and `example:host/math` { double } (async); run(x)
# waits, then returns double(x): a bridged component that must not be polled on the loop.
GATED = r"""
(component
  (import "example:host/gate" (instance $gate (export "wait" (func))))
  (import "example:host/math" (instance $math
    (export "double" (func (param "x" u32) (result u32)))))
  (core func $wait (canon lower (func $gate "wait")))
  (core func $double (canon lower (func $math "double")))
  (core module $m
    (import "host" "wait" (func $w))
    (import "host" "double" (func $d (param i32) (result i32)))
    (func (export "run") (param i32) (result i32) (call $w) (call $d (local.get 0))))
  (core instance $host (export "wait" (func $wait)) (export "double" (func $double)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func (export "run") (param "x" u32) (result u32) (canon lift (core func $i "run")))
)
"""

# State an instance leaves behind: bump() adds 1 to an i32 the data segment sets to 41 and to
# a global starting at 0, and returns memory + 1000 * global (1042 from a clean instance);
# scribble(pages) grows memory by `pages`, sums byte 100 of every page (0 from a clean
# instance), then sets those bytes to 255. The instance-pool tests: a reused slot must not
# show what the instance before it wrote.
STATEFUL = r"""
(component
  (core module $m
    (memory (export "memory") 1)
    (data (i32.const 16) "\29\00\00\00")
    (global $g (mut i32) (i32.const 0))
    (func (export "bump") (result i32)
      (i32.store (i32.const 16) (i32.add (i32.load (i32.const 16)) (i32.const 1)))
      (global.set $g (i32.add (global.get $g) (i32.const 1)))
      (i32.add (i32.load (i32.const 16)) (i32.mul (global.get $g) (i32.const 1000))))
    (func (export "scribble") (param $pages i32) (result i32) (local $p i32) (local $sum i32)
      (drop (memory.grow (local.get $pages)))
      (loop $l
        (local.set $sum (i32.add (local.get $sum)
          (i32.load8_u offset=100 (i32.mul (local.get $p) (i32.const 65536)))))
        (i32.store8 offset=100 (i32.mul (local.get $p) (i32.const 65536)) (i32.const 255))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $p) (memory.size))))
      (local.get $sum))
  )
  (core instance $i (instantiate $m))
  (func (export "bump") (result u32) (canon lift (core func $i "bump")))
  (func (export "scribble") (param "pages" u32) (result u32)
    (canon lift (core func $i "scribble")))
)
"""
