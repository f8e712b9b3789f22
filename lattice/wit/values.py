"""How WIT values look in Python, everywhere in Trellis (runtime, WAVE, lattice codec).

=====================  ==============================================================
WIT                    Python
=====================  ==============================================================
bool                   ``bool``
s8 … u64               ``int``
f32, f64               ``float``
char                   ``str`` of length 1
string                 ``str``
list<u8>               ``bytes`` (``bytearray``/``memoryview`` accepted as input)
list<T>                ``list``
record                 ``dict`` field name → value (every field present)
tuple<…>               ``tuple``
variant                ``Case(name, value)``; ``value`` is ``None`` for a case without payload
enum                   ``str`` (the case name)
option<T>              ``None`` or the value; when ``T`` is itself an option, ``some(x)`` is
                       ``Some(x)`` so that ``none`` and ``some(none)`` stay distinct
result<T, E>           ``Ok(value)`` / ``Err(value)`` (``None`` for a side without a type)
flags                  ``frozenset`` of flag names (any set accepted as input)
own<R>, borrow<R>      ``Resource`` handle (valid only inside the instance that made it)
=====================  ==============================================================

The classes are plain frozen dataclasses so values compare, hash and print naturally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Case:
    """A variant value: the case name and its payload (``None`` when the case has none)."""

    name: str
    value: Any = None


@dataclass(frozen=True)
class Ok:
    value: Any = None


@dataclass(frozen=True)
class Err:
    value: Any = None


@dataclass(frozen=True)
class Some:
    """``some(x)`` of an ``option<option<…>>``; plain options use the bare value."""

    value: Any


class Resource:
    """A handle to a resource owned by one component instance.

    Handles cannot cross instances or hosts; the runtime checks the owner on every use.
    """

    __slots__ = ("resource", "handle", "owner", "__weakref__")

    def __init__(self, resource: str, handle: Any, owner: object) -> None:
        self.resource = resource
        self.handle = handle
        self.owner = owner

    def __repr__(self) -> str:
        return f"<Resource {self.resource}>"
