"""Why cross-host values travel in ``trellis.lattice.codec``'s binary format, by measurement.

    .venv/bin/python bench/codec.py           # full run (~20 s)
    .venv/bin/python bench/codec.py --quick   # smoke run

Part 1 compares the codec with the other candidate DESIGN §4 names, a self-describing format
with a fixed mapping. msgpack is not a dependency, so its stand-in is the stdlib ``json`` (a C
encoder/decoder) behind a type-driven fixed mapping compiled per type like the codec: records
and tuples as arrays in field order, ``list<u8>`` as base64, variants/results as
``[index, payload]``, enums as their index, options as ``null``/``[value]``, flags as a bit
mask. Both sides check the value against its type (the JSON side less strictly: it leaves
integer ranges to the receiver). Payloads:

* a small record (one order),
* 64 KB of bytes (``list<u8>``),
* a list of 1000 such records,
* 10 000 ``f64`` (``list<f64>``, the bulk path).

Part 2 is the integer-encoding decision: fixed-width little-endian (the codec) against
LEB128 (zigzag for signed), which saves bytes on small numbers but costs a Python loop per
integer and rules out one-call ``struct``/``array`` packing of numeric fields and lists.

Each figure is the best of several batches (garbage collector off, as ``timeit`` does), in µs
per operation on this machine, measured in this run.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import math
import random
import struct
import time
from array import array
from collections.abc import Callable
from typing import Any

from trellis.lattice import codec
from trellis.lattice.wit.types import (
    EnumType,
    FlagsType,
    ListType,
    OptionType,
    Primitive,
    RecordType,
    ResultType,
    TupleType,
    VariantType,
    WitType,
)
from trellis.lattice.wit.values import Case, Err, Ok, Some

U8, U32, U64, F64, STRING = (Primitive(k) for k in ("u8", "u32", "u64", "f64", "string"))
STATUS = EnumType(("pending", "paid", "shipped", "delivered", "cancelled"), name="status")
ORDER = RecordType(
    (
        ("id", U64),
        ("customer", STRING),
        ("quantity", U32),
        ("unit-price", F64),
        ("status", STATUS),
        ("tags", ListType(STRING)),
        ("note", OptionType(STRING)),
    ),
    name="order",
)


def make_order(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "id": 1_000_000 + i,
        "customer": f"customer-{rng.randrange(10_000)}",
        "quantity": rng.randrange(1, 100),
        "unit-price": round(rng.uniform(1, 500), 2),
        "status": rng.choice(STATUS.cases),
        "tags": rng.sample(["gift", "express", "fragile", "bulk", "eu", "us"], rng.randrange(3)),
        "note": rng.choice([None, "leave at the door", "call first"]),
    }


# ------------------------------------------------------------------- JSON, fixed mapping

_Conv = Callable[[Any], Any]


def json_mapping(ty: WitType) -> tuple[_Conv, _Conv]:
    """(to_json, from_json) for ``ty``: value model ⇄ plain JSON data, compiled once."""
    if isinstance(ty, Primitive):
        py = {"bool": bool, "f32": float, "f64": float, "char": str, "string": str}.get(
            ty.kind, int
        )

        def check(v: Any) -> Any:
            if not isinstance(v, py) or (py is int and isinstance(v, bool)):
                raise ValueError(f"expected {ty.kind}, got {v!r}")
            return v

        return check, check
    if isinstance(ty, ListType):
        if ty.element == U8:
            return (lambda v: base64.b64encode(v).decode()), (lambda j: base64.b64decode(j))
        to_el, from_el = json_mapping(ty.element)
        return (lambda v: [to_el(x) for x in v]), (lambda j: [from_el(x) for x in j])
    if isinstance(ty, (RecordType, TupleType)):
        names = [n for n, _ in ty.fields] if isinstance(ty, RecordType) else []
        types = [t for _, t in ty.fields] if isinstance(ty, RecordType) else list(ty.elements)
        convs = [json_mapping(t) for t in types]
        tos, froms = [c[0] for c in convs], [c[1] for c in convs]
        if names:
            pairs = list(zip(names, tos, strict=True))
            back = list(zip(names, froms, strict=True))
            return (
                lambda v: [to(v[n]) for n, to in pairs],
                lambda j: {n: f(x) for (n, f), x in zip(back, j, strict=True)},
            )
        return (
            lambda v: [to(x) for to, x in zip(tos, v, strict=True)],
            lambda j: tuple(f(x) for f, x in zip(froms, j, strict=True)),
        )
    if isinstance(ty, EnumType):
        index = {n: i for i, n in enumerate(ty.cases)}
        return (lambda v: index[v]), (lambda j: ty.cases[j])
    if isinstance(ty, VariantType):
        cases = {
            n: (i, None if p is None else json_mapping(p)) for i, (n, p) in enumerate(ty.cases)
        }
        table = [(n, c[1]) for n, c in cases.items()]

        def var_to(v: Case) -> Any:
            i, conv = cases[v.name]
            return [i] if conv is None else [i, conv[0](v.value)]

        def var_from(j: Any) -> Case:
            name, conv = table[j[0]]
            return Case(name) if conv is None else Case(name, conv[1](j[1]))

        return var_to, var_from
    if isinstance(ty, OptionType):
        to_in, from_in = json_mapping(ty.inner)
        nested = isinstance(ty.inner, OptionType)

        def opt_from(j: Any) -> Any:
            if j is None:
                return None
            v = from_in(j[0])
            return Some(v) if nested else v

        def opt_to(v: Any) -> Any:
            return None if v is None else [to_in(v.value if isinstance(v, Some) else v)]

        return opt_to, opt_from
    if isinstance(ty, ResultType):
        sides = [None if t is None else json_mapping(t) for t in (ty.ok, ty.err)]

        def res_to(v: Any) -> Any:
            i = 0 if isinstance(v, Ok) else 1
            conv = sides[i]
            return [i] if conv is None else [i, conv[0](v.value)]

        def res_from(j: Any) -> Any:
            conv = sides[j[0]]
            value = None if conv is None else conv[1](j[1])
            return Ok(value) if j[0] == 0 else Err(value)

        return res_to, res_from
    if isinstance(ty, FlagsType):
        bit = {n: 1 << i for i, n in enumerate(ty.names)}
        return (
            lambda v: sum(bit[n] for n in v),
            lambda j: frozenset(n for n, b in bit.items() if j & b),
        )
    raise TypeError(f"no JSON mapping for {ty!r}")


def json_codec(ty: WitType) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    to_json, from_json = json_mapping(ty)
    dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    return (lambda v: dumps(to_json(v)).encode()), (lambda b: from_json(json.loads(b)))


# ------------------------------------------------------------------------ LEB128 integers


def leb_u(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def leb_s(n: int) -> bytes:
    return leb_u((n << 1) ^ (n >> 63))  # zigzag (64-bit)


def read_leb_u(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7


# ---------------------------------------------------------------------------------- timing


def _batch(fn: Callable[[], Any], budget: float) -> int:
    """How many calls of ``fn`` take about ``budget`` / 8."""
    n = 1
    while True:
        t = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t > budget / 8 or n > 1 << 22:
            return n
        n *= 2


def best_us(fns: list[Callable[[], Any]], budget: float, rounds: int = 7) -> list[float]:
    """Best-of-batches time of one call of each of ``fns``, in µs. Batches of all of them are
    interleaved, so load from elsewhere on the machine hits them alike."""
    sizes = [_batch(fn, budget) for fn in fns]
    best = [math.inf] * len(fns)
    gc.disable()
    try:
        for _ in range(rounds):
            for k, (fn, n) in enumerate(zip(fns, sizes, strict=True)):
                t = time.perf_counter()
                for _ in range(n):
                    fn()
                best[k] = min(best[k], (time.perf_counter() - t) / n)
    finally:
        gc.enable()
    return [b * 1e6 for b in best]


def fmt_size(n: int) -> str:
    return f"{n:,} B"


def compare(name: str, ty: WitType, value: Any, budget: float) -> None:
    """One payload: its size and encode/decode times in both formats (checked to round-trip)."""
    c = codec.codec(ty)
    data = c.encode(value)
    assert c.decode(data) == value
    j_enc, j_dec = json_codec(ty)
    jdata = j_enc(value)
    assert j_dec(jdata) == value
    enc, dec, jenc, jdec = best_us(
        [lambda: c.encode(value), lambda: c.decode(data), lambda: j_enc(value),
         lambda: j_dec(jdata)],
        budget,
    )
    rows = [("binary", len(data), enc, dec), ("json", len(jdata), jenc, jdec)]
    for fmt, size, enc_us, dec_us in rows:
        print(f"{name:<14} {fmt:<7} {fmt_size(size):>12} {enc_us:>11.1f} {dec_us:>11.1f}")
    if ty == ListType(U8):
        (zc,) = best_us([lambda: c.decode(data, zero_copy=True)], budget)
        print(f"{name:<14} {'binary':<7} {'zero-copy':>12} {'':>11} {zc:>11.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short batches (smoke run)")
    args = ap.parse_args()
    budget = 0.02 if args.quick else 0.5
    rng = random.Random(1)

    payloads: list[tuple[str, WitType, Any]] = [
        ("small record", ORDER, make_order(rng, 1)),
        ("64 KB bytes", ListType(U8), rng.randbytes(65536)),
        ("1000 records", ListType(ORDER), [make_order(rng, i) for i in range(1000)]),
        ("10000 f64", ListType(F64), [rng.uniform(-1e6, 1e6) for _ in range(10_000)]),
    ]

    print("Part 1: codec (WIT-typed binary) vs JSON with a fixed mapping")
    print(f"{'payload':<14} {'format':<7} {'size':>12} {'encode µs':>11} {'decode µs':>11}")
    for name, ty, value in payloads:
        compare(name, ty, value, budget)
    print()
    print("Part 2: integers, fixed-width little-endian (chosen) vs LEB128")
    orders = payloads[2][2]
    ints = [(o["id"], 8) for o in orders] + [(o["quantity"], 4) for o in orders]
    fixed = sum(w for _, w in ints)
    leb = sum(len(leb_u(v)) for v, _ in ints)
    total = len(codec.encode(orders, ListType(ORDER)))
    print(f"  1000 records: integer fields take {fixed:,} B fixed, {leb:,} B as LEB128;"
          f" the payload would shrink {total:,} → {total - fixed + leb:,} B"
          f" ({(fixed - leb) / total:.0%})")
    values = [v for v, _ in ints]
    u64 = struct.Struct("<Q")
    fixed_bytes = b"".join(u64.pack(v) for v in values)
    leb_bytes = b"".join(leb_u(v) for v in values)

    def dec_fixed() -> None:
        unpack = u64.unpack_from
        for i in range(len(values)):
            unpack(fixed_bytes, i * 8)

    def dec_leb() -> None:
        pos = 0
        for _ in range(len(values)):
            _, pos = read_leb_u(leb_bytes, pos)

    n = len(values)
    arr = array("Q", values).tobytes()
    f_enc, f_dec, l_enc, l_dec, b_enc, b_dec, bl_enc = best_us(
        [lambda: [u64.pack(v) for v in values], dec_fixed,
         lambda: [leb_u(v) for v in values], dec_leb,
         lambda: array("Q", values).tobytes(), lambda: array("Q", arr).tolist(),
         lambda: b"".join(map(leb_u, values))],
        budget,
    )
    print(f"  per integer, one at a time: fixed encode {f_enc / n * 1000:.0f} ns,"
          f" decode {f_dec / n * 1000:.0f} ns; LEB128 encode {l_enc / n * 1000:.0f} ns,"
          f" decode {l_dec / n * 1000:.0f} ns")
    print(f"  a list<u64> of {n}: fixed-width in bulk (array) encode {b_enc:.1f} µs,"
          f" decode {b_dec:.1f} µs; LEB128 encode {bl_enc:.1f} µs, decode {l_dec:.1f} µs")
    signed = [rng.randrange(-1000, 1000) for _ in range(1000)]
    print(f"  1000 small signed ints: {len(signed) * 8:,} B as s64, "
          f"{sum(len(leb_s(v)) for v in signed):,} B as zigzag LEB128")


if __name__ == "__main__":
    main()
