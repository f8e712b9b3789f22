"""The kitchen-sink test guest: echoes every WIT value type back unchanged.

Echoing (rather than computing) keeps the guest trivially correct, so any mismatch a
differential test finds is in the host's lifting/lowering, not here.
"""

from __future__ import annotations

import wit_world
from componentize_py_types import Err, Ok, Result, Some
from kitchen_types import Counter
from wit_world import exports
from wit_world.exports import kitchen_types as types


def _wrap_s32(n: int) -> int:
    n &= 0xFFFFFFFF
    return n - (1 << 32) if n >= 1 << 31 else n


class KitchenTypes(exports.KitchenTypes):
    def echo_bool(self, x: bool) -> bool:
        return x

    def echo_s8(self, x: int) -> int:
        return x

    def echo_u8(self, x: int) -> int:
        return x

    def echo_s16(self, x: int) -> int:
        return x

    def echo_u16(self, x: int) -> int:
        return x

    def echo_s32(self, x: int) -> int:
        return x

    def echo_u32(self, x: int) -> int:
        return x

    def echo_s64(self, x: int) -> int:
        return x

    def echo_u64(self, x: int) -> int:
        return x

    def echo_f32(self, x: float) -> float:
        return x

    def echo_f64(self, x: float) -> float:
        return x

    def echo_char(self, x: str) -> str:
        return x

    def echo_string(self, x: str) -> str:
        return x

    def echo_bytes(self, x: bytes) -> bytes:
        return x

    def echo_list(self, x: list[str]) -> list[str]:
        return x

    def echo_record(self, x: types.Person) -> types.Person:
        return x

    def echo_tuple(self, x: tuple[int, str, float]) -> tuple[int, str, float]:
        return x

    def echo_variant(self, x: types.Shape) -> types.Shape:
        return x

    def echo_enum(self, x: types.Color) -> types.Color:
        return x

    def echo_flags(self, x: types.Permissions) -> types.Permissions:
        return x

    def echo_option(self, x: int | None) -> int | None:
        return x

    def echo_nested_option(self, x: Some[str | None] | None) -> Some[str | None] | None:
        return x

    def echo_result(self, x: Result[str, types.Color]) -> str:
        # componentize-py returns the ok payload and raises Err for the error case.
        if isinstance(x, Ok):
            return x.value
        raise x

    def echo_result_unit(self, x: Result[None, None]) -> None:
        if isinstance(x, Err):
            raise x

    def echo_list_records(self, x: list[types.Person]) -> list[types.Person]:
        return x

    def add(self, a: int, b: int) -> int:
        return _wrap_s32(a + b)

    def fail(self, msg: str) -> str:
        raise RuntimeError(msg)

    def noop(self) -> None:
        return None

    def make_counter(self, start: int) -> types.Counter:
        return Counter(start)

    def read_counter(self, c: types.Counter) -> int:
        return c.get()


class Other(exports.Other):
    def add(self, a: int, b: int) -> int:
        return _wrap_s32(a + b + 1000)


class WitWorld(wit_world.WitWorld):
    def hello(self) -> str:
        return "Hello from the kitchen!"
