"""Async host imports (provider coroutines) and host-defined resources, on real wasmtime."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _wat import GATED, HOST_IMPORT, HOST_RESOURCE, HOST_VOID
from trellis.host.runtime.hostresources import TABLE
from trellis.host.runtime.imports import HostImports
from trellis.host.runtime.instances import InstancePolicy
from trellis.host.runtime.runtime import ComponentConfig, Runtime
from trellis.lattice.errors import DeadlineExceeded, GuestTrap


class Math:
    """``example:host/math`` as a coroutine: waits like a network call, fails on request."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.active = 0
        self.most_active = 0

    async def double(self, x: int) -> int:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await asyncio.sleep(0.001)
        finally:
            self.active -= 1
        if x == 7:
            raise ValueError("seven is not allowed")
        if x == 99:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return x * 2


def _imports(**impls: Any) -> HostImports:
    imports = HostImports()
    for name, impl in impls.items():
        imports.register(name, impl)
    return imports


@pytest.fixture(params=["fresh", "pooled"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _load(rt: Runtime, wat: str, mode: str = "fresh") -> Any:
    return rt.load(wat.encode(), config=ComponentConfig(policy=InstancePolicy(mode=mode)))


async def test_async_import_result_and_concurrency(tmp_path: Path, mode: str) -> None:
    math = Math()
    async with Runtime(cache_dir=tmp_path, imports=_imports(**{"example:host/math": math})) as rt:
        comp = _load(rt, HOST_IMPORT, mode)
        assert comp.instances.bridged
        assert await comp.invoke("quadruple", 5) == 20
        results = await asyncio.gather(*(comp.invoke("quadruple", i) for i in range(10, 60)))
        assert results == [i * 4 for i in range(10, 60)]
        # Guests waiting on the provider do not hold the loop: their waits overlap.
        assert math.most_active > 1


async def test_async_import_exception_is_a_typed_trap_with_cause(tmp_path: Path,
                                                                 mode: str) -> None:
    async with Runtime(cache_dir=tmp_path,
                       imports=_imports(**{"example:host/math": Math()})) as rt:
        comp = _load(rt, HOST_IMPORT, mode)
        with pytest.raises(GuestTrap, match="example:host/math#double.*seven") as info:
            await comp.invoke("quadruple", 7)
        assert isinstance(info.value.__cause__, ValueError)
        assert await comp.invoke("quadruple", 1) == 4  # the component lives on


async def test_async_import_wait_has_the_call_deadline(tmp_path: Path, mode: str) -> None:
    math = Math()
    async with Runtime(cache_dir=tmp_path, imports=_imports(**{"example:host/math": math})) as rt:
        comp = _load(rt, HOST_IMPORT, mode)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await comp.invoke("quadruple", 99, timeout=0.3)
        assert time.monotonic() - started < 0.3 + 1.0
        await asyncio.sleep(0.05)
        assert math.cancelled == 1  # the provider's coroutine was cancelled, not leaked
        assert await comp.invoke("quadruple", 2) == 8


async def test_cancelling_the_caller_cancels_the_host_coroutine(tmp_path: Path) -> None:
    math = Math()
    async with Runtime(cache_dir=tmp_path, imports=_imports(**{"example:host/math": math})) as rt:
        comp = _load(rt, HOST_IMPORT, "pooled")
        task = asyncio.ensure_future(comp.invoke("quadruple", 99))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        assert math.cancelled == 1
        assert comp.instances.capacity.in_use == 0
        assert await comp.invoke("quadruple", 3) == 12


async def test_blocking_calls_from_worker_threads_and_from_the_loop(tmp_path: Path) -> None:
    async with Runtime(cache_dir=tmp_path,
                       imports=_imports(**{"example:host/math": Math()})) as rt:
        comp = _load(rt, HOST_IMPORT)
        assert await asyncio.to_thread(comp.call, "quadruple", 3) == 12
        with pytest.raises(GuestTrap, match="await component.invoke"):
            comp.call("quadruple", 3)  # blocking the loop that must run the coroutine


def test_without_any_event_loop_a_private_one_runs_the_imports(tmp_path: Path) -> None:
    with Runtime(cache_dir=tmp_path, imports=_imports(**{"example:host/math": Math()})) as rt:
        comp = _load(rt, HOST_IMPORT)
        assert comp.call("quadruple", 4) == 16
        assert threading.current_thread() is threading.main_thread()


async def test_void_async_import_failure_fails_the_call(tmp_path: Path) -> None:
    seen: list[int] = []

    class Log:
        async def emit(self, x: int) -> None:
            await asyncio.sleep(0)
            if x == 0:
                raise RuntimeError("sink unavailable")
            seen.append(x)

    async with Runtime(cache_dir=tmp_path, imports=_imports(**{"example:host/log": Log()})) as rt:
        comp = _load(rt, HOST_VOID)
        assert await comp.invoke("run", 4) == 5
        with pytest.raises(GuestTrap, match="sink unavailable"):
            await comp.invoke("run", 0)
        assert seen == [4]


class Bucket:
    closed: list[int] = []

    def __init__(self, ident: int) -> None:
        self.ident = ident

    async def get(self, key: int) -> int:
        await asyncio.sleep(0)
        return self.ident * 100 + key

    def close(self) -> None:
        Bucket.closed.append(self.ident)


class Store:
    Bucket = Bucket

    def open(self, ident: int) -> Bucket:
        return Bucket(ident)


async def test_host_resources_round_trip_and_are_closed(tmp_path: Path, mode: str) -> None:
    Bucket.closed.clear()
    async with Runtime(cache_dir=tmp_path, imports=_imports(**{"example:kv/store": Store()})) as rt:
        comp = _load(rt, HOST_RESOURCE, mode)
        assert await comp.invoke("lookup", 3, 4) == 304  # the same object came back as self
        assert Bucket.closed == [3]  # the guest dropped its handle
        assert await asyncio.to_thread(comp.call, "lookup", 5, 6) == 506
        assert Bucket.closed == [3, 5]


async def test_host_resources_die_with_their_store(tmp_path: Path) -> None:
    Bucket.closed.clear()
    async with Runtime(cache_dir=tmp_path, imports=_imports(**{"example:kv/store": Store()})) as rt:
        comp = _load(rt, HOST_RESOURCE, "fresh")
        before = len(TABLE._stores)
        assert await comp.invoke("keep", 8) == 800  # never drops its bucket
        for _ in range(10):
            gc.collect()
            if Bucket.closed:
                break
            await asyncio.sleep(0.01)
        assert Bucket.closed == [8]
        assert len(TABLE._stores) <= before


def test_sync_provider_resources(tmp_path: Path) -> None:
    class SyncBucket:
        def __init__(self, ident: int) -> None:
            self.ident = ident

        def get(self, key: int) -> int:
            return self.ident + key

    impl = {"open": SyncBucket, "[method]bucket.get": SyncBucket.get}
    with Runtime(cache_dir=tmp_path, imports=_imports(**{"example:kv/store": impl})) as rt:
        comp = _load(rt, HOST_RESOURCE)
        assert not comp.instances.bridged  # no coroutine: the plain synchronous path
        assert comp.call("lookup", 10, 5) == 15


async def test_not_inline_bridged_components_run_on_a_worker(tmp_path: Path) -> None:
    """A component whose sync import waits for the event loop (as wasi:http body reads do)
    and that also has async imports: with ``inline=False`` the whole call runs on a worker,
    so the loop stays free to let the sync import go."""
    loop = asyncio.get_running_loop()

    def wait() -> None:
        released = threading.Event()
        loop.call_soon_threadsafe(released.set)  # only the loop can release it
        if not released.wait(2.0):
            raise TimeoutError("the event loop never ran: the call was polled on it")

    imports = _imports(**{"example:host/gate": {"wait": wait},
                          "example:host/math": Math()})
    async with Runtime(cache_dir=tmp_path, imports=imports) as rt:
        for mode in ("fresh", "pooled"):
            comp = rt.load(GATED.encode(), config=ComponentConfig(
                policy=InstancePolicy(mode=mode, inline=False)))
            assert comp.instances.bridged
            assert await asyncio.gather(*(comp.invoke("run", i) for i in range(10, 18))) == \
                [i * 2 for i in range(10, 18)]
            assert comp.instances.capacity.in_use == 0
