"""What the three ``wasi:keyvalue`` providers share: the WIT-facing objects, error mapping and
the two package versions' shapes.

Two versions of ``wasi:keyvalue`` are in use and differ in a few signatures:

==================  ======================================  =================================
                    0.2.0-draft2 (Spin, WASI proposal)      0.2.0-draft (wasmCloud)
==================  ======================================  =================================
list-keys cursor    ``option<string>``                      ``option<u64>``
increment delta     ``s64`` → ``s64``                       ``u64`` → ``u64``
cas / swap          yes                                     no
get-many            ``list<tuple<string, option<bytes>>>``  ``list<option<tuple<string,
                                                            bytes>>>``
==================  ======================================  =================================

A component's own types reach the host, so the values alone cannot tell the versions apart:
``implementation(interface, link)`` takes the version from ``interface`` (``store@0.2.0-draft``
or ``wasi:keyvalue/store@0.2.0-draft``); without one, the draft2 shapes are used.

A backend subclasses ``Bucket`` (the ``bucket`` resource) and implements its ``_``-methods;
``StoreImpl``, ``AtomicsImpl`` and ``BatchImpl`` wrap them into the WIT functions, turning
backend exceptions into the ``error`` variant (never a trap, never a hang: every backend call
has the provider's ``timeout``). Counters written by ``increment`` are decimal ASCII (what
Redis ``INCRBY`` uses), so the same data reads the same through every backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from ...lattice.wit.values import Case, Err, Ok
from ..sdk import Link, ProviderError

DRAFT = "0.2.0-draft"
DRAFT2 = "0.2.0-draft2"
VERSIONS = (DRAFT, DRAFT2)
DEFAULT_TIMEOUT = 5.0
DEFAULT_PAGE_SIZE = 1000

T = TypeVar("T")
Opener = Callable[[str, str], Awaitable["Bucket"]]


class KvError(Exception):
    """Raised by a backend to return a specific ``error`` case to the guest."""

    def __init__(self, case: Case) -> None:
        self.case = case
        super().__init__(case.name if case.value is None else f"{case.name}: {case.value}")


def no_such_store() -> KvError:
    return KvError(Case("no-such-store"))


def access_denied() -> KvError:
    return KvError(Case("access-denied"))


def other(message: str) -> Case:
    return Case("other", message)


def split_interface(interface: str) -> tuple[str, str]:
    """``wasi:keyvalue/store@0.2.0-draft`` or ``store@0.2.0-draft`` or ``store`` → (name,
    version); the version defaults to draft2."""
    name, _, version = interface.partition("@")
    name = name.rsplit("/", 1)[-1]
    version = version or DRAFT2
    if version not in VERSIONS:
        raise ProviderError(
            f"wasi:keyvalue@{version} is not supported: use {' or '.join(VERSIONS)}"
        )
    return name, version


def settings(base: Mapping[str, str], link: Link | None) -> dict[str, str]:
    """The provider's config overlaid with the link's target config (the link wins)."""
    merged = dict(base)
    if link is not None:
        merged.update(link.target_config)
    return merged


def float_setting(config: Mapping[str, str], name: str, default: float) -> float:
    raw = config.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ProviderError(f"config {name}={raw!r} must be a positive number of seconds")
    return value


def int_setting(config: Mapping[str, str], name: str, default: int) -> int:
    raw = config.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ProviderError(f"config {name}={raw!r} must be a positive integer")
    return int(raw)


def bool_setting(config: Mapping[str, str], name: str, default: bool) -> bool:
    raw = config.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ProviderError(f"config {name}={raw!r} must be true or false")


def parse_counter(raw: bytes | None, where: str) -> int:
    """The integer a counter holds (missing = 0); a non-numeric value is the guest's error."""
    if raw is None:
        return 0
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise KvError(other(f"{where} does not hold a decimal integer")) from None


class Bucket:
    """The ``bucket`` resource: one opened store. Subclasses implement the ``_`` methods;
    backend exceptions listed in ``backend_errors`` become ``other(message)``."""

    backend_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    def __init__(self, identifier: str, *, version: str = DRAFT2,
                 timeout: float = DEFAULT_TIMEOUT, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.identifier = identifier
        self.version = version
        self.timeout = timeout
        self.page_size = page_size

    # -- backend --------------------------------------------------------------------------
    async def _get(self, key: str) -> bytes | None:
        raise NotImplementedError

    async def _set(self, key: str, value: bytes) -> None:
        raise NotImplementedError

    async def _delete(self, key: str) -> None:
        raise NotImplementedError

    async def _exists(self, key: str) -> bool:
        return await self._get(key) is not None

    async def _list(self, cursor: int) -> tuple[list[str], int | None]:
        """One page of keys from the opaque position ``cursor`` (0 = start) and the next
        position, ``None`` at the end."""
        raise NotImplementedError

    async def _increment(self, key: str, delta: int) -> int:
        raise NotImplementedError

    async def _cas_read(self, key: str) -> tuple[bytes | None, Any]:
        """The current value and a token that ``_cas_write`` checks (a revision)."""
        raise NotImplementedError

    async def _cas_write(self, key: str, token: Any, value: bytes) -> bool:
        """Write iff the key is still at ``token``; ``False`` when it moved on."""
        raise NotImplementedError

    @classmethod
    def map_error(cls, exc: BaseException) -> Case | None:
        """The ``error`` case for a backend exception, ``None`` to let it trap (a bug)."""
        if isinstance(exc, cls.backend_errors + (OSError,)):
            return other(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return None

    async def call(self, what: str, work: Awaitable[T]) -> Ok | Err:
        """``Ok(result)`` of ``work``, or ``Err(error)``; bounded by ``timeout``."""
        try:
            # asyncio.timeout, not wait_for: no extra task and loop hops per call (3.11).
            async with asyncio.timeout(self.timeout):
                return Ok(await work)
        except KvError as exc:
            return Err(exc.case)
        except TimeoutError:
            return Err(other(f"{what} on store {self.identifier!r} timed out after "
                             f"{self.timeout:g} s"))
        except Exception as exc:
            case = self.map_error(exc)
            if case is None:
                raise
            return Err(case)

    # -- WIT: [method]bucket.* --------------------------------------------------------------
    async def get(self, key: str) -> Ok | Err:
        return await self.call("get", self._get(key))

    async def set(self, key: str, value: bytes) -> Ok | Err:
        result = await self.call("set", self._set(key, bytes(value)))
        return Ok() if isinstance(result, Ok) else result

    async def delete(self, key: str) -> Ok | Err:
        result = await self.call("delete", self._delete(key))
        return Ok() if isinstance(result, Ok) else result

    async def exists(self, key: str) -> Ok | Err:
        return await self.call("exists", self._exists(key))

    async def list_keys(self, cursor: str | int | None) -> Ok | Err:
        if cursor is None:
            position = 0
        else:
            try:
                position = int(cursor)
            except ValueError:
                return Err(other(f"invalid list-keys cursor {cursor!r}"))
        result = await self.call("list-keys", self._list(position))
        if isinstance(result, Err):
            return result
        keys, after = result.value
        if after is not None and self.version == DRAFT2:
            after = str(after)
        return Ok({"keys": keys, "cursor": after})


class StoreImpl:
    """``wasi:keyvalue/store``: ``open`` hands out the backend's ``Bucket``."""

    def __init__(self, opener: Opener, bucket_class: type[Bucket], version: str,
                 timeout: float) -> None:
        self._opener = opener
        self.version = version
        self.timeout = timeout
        self.Bucket = bucket_class

    async def open(self, identifier: str) -> Ok | Err:
        try:
            bucket = await asyncio.wait_for(self._opener(identifier, self.version),
                                            self.timeout)
        except KvError as exc:
            return Err(exc.case)
        except TimeoutError:
            return Err(other(f"opening store {identifier!r} timed out after "
                             f"{self.timeout:g} s"))
        except Exception as exc:
            case = self.Bucket.map_error(exc)
            if case is None:
                raise
            return Err(case)
        return Ok(bucket)


class Cas:
    """The draft2 ``cas`` resource: a key's value and revision read at ``new``."""

    def __init__(self, bucket: Bucket, key: str, current: bytes | None, token: Any) -> None:
        self.bucket = bucket
        self.key = key
        self._current = current
        self.token = token

    @staticmethod
    async def new(bucket: Bucket, key: str) -> Ok | Err:
        result = await bucket.call("cas new", bucket._cas_read(key))
        if isinstance(result, Err):
            return result
        current, token = result.value
        return Ok(Cas(bucket, key, current, token))

    def current(self) -> Ok:
        return Ok(self._current)


class AtomicsImpl:
    """``wasi:keyvalue/atomics``: ``increment`` (both versions), ``cas``/``swap`` (draft2)."""

    resources: ClassVar[dict[str, type]] = {"cas": Cas}

    def __init__(self, version: str) -> None:
        self.version = version

    async def increment(self, bucket: Bucket, key: str, delta: int) -> Ok | Err:
        result = await bucket.call("increment", bucket._increment(key, delta))
        if isinstance(result, Ok) and self.version == DRAFT and result.value < 0:
            return Err(other(f"counter {key!r} is negative ({result.value}); draft "
                             "increment returns u64"))
        return result

    async def swap(self, cas: Cas, value: bytes) -> Ok | Err:
        bucket = cas.bucket
        result = await bucket.call("swap", bucket._cas_write(cas.key, cas.token, bytes(value)))
        if isinstance(result, Err):
            return Err(Case("store-error", result.value))
        if result.value:
            return Ok()
        fresh = await Cas.new(bucket, cas.key)
        if isinstance(fresh, Err):
            return Err(Case("store-error", fresh.value))
        return Err(Case("cas-failed", fresh.value))


class BatchImpl:
    """``wasi:keyvalue/batch``: the single-key operations, run concurrently."""

    def __init__(self, version: str) -> None:
        self.version = version

    async def get_many(self, bucket: Bucket, keys: Sequence[str]) -> Ok | Err:
        async def all_values() -> list[bytes | None]:
            return list(await asyncio.gather(*(bucket._get(k) for k in keys)))

        result = await bucket.call("get-many", all_values())
        if isinstance(result, Err):
            return result
        pairs = zip(keys, result.value, strict=True)
        if self.version == DRAFT:
            return Ok([None if v is None else (k, v) for k, v in pairs])
        return Ok(list(pairs))

    async def set_many(self, bucket: Bucket, key_values: Sequence[tuple[str, bytes]]) -> Ok | Err:
        async def work() -> None:
            await asyncio.gather(*(bucket._set(k, bytes(v)) for k, v in key_values))

        result = await bucket.call("set-many", work())
        return Ok() if isinstance(result, Ok) else result

    async def delete_many(self, bucket: Bucket, keys: Sequence[str]) -> Ok | Err:
        async def work() -> None:
            await asyncio.gather(*(bucket._delete(k) for k in keys))

        result = await bucket.call("delete-many", work())
        return Ok() if isinstance(result, Ok) else result


def implementation_for(interface: str, opener: Opener, bucket_class: type[Bucket],
                       timeout: float = DEFAULT_TIMEOUT) -> Any:
    """The object serving ``interface`` (``store``/``atomics``/``batch``, maybe versioned);
    ``opener(identifier, version)`` makes the ``Bucket`` for ``open``."""
    name, version = split_interface(interface)
    if name == "store":
        return StoreImpl(opener, bucket_class, version, timeout)
    if name == "atomics":
        return AtomicsImpl(version)
    if name == "batch":
        return BatchImpl(version)
    raise ProviderError(
        f"wasi:keyvalue/{name} is not implemented: link store, atomics or batch"
    )


INTERFACES = ("wasi:keyvalue/store", "wasi:keyvalue/atomics", "wasi:keyvalue/batch")
