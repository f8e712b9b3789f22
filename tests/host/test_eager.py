"""Eager starts (host/eager.py): run until the first wait, then continue in a task."""

from __future__ import annotations

import asyncio
import contextvars
import logging

import pytest
from trellis.host import eager

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def test_a_coroutine_that_never_waits_needs_no_task() -> None:
    seen: list[str] = []

    async def quick() -> None:
        VAR.set("inside")
        seen.append(VAR.get())

    assert eager.start(quick()) is None
    assert seen == ["inside"] and VAR.get() == "unset"  # its context is its own


async def test_one_that_waits_continues_in_a_task_with_its_context() -> None:
    steps: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    async def waits() -> None:
        VAR.set("mine")
        steps.append("first")
        await eager.in_task()  # from here on it has a task (timeouts work)
        async with asyncio.timeout(1):
            steps.append(await gate)
        steps.append(VAR.get())

    task = eager.start(waits())
    assert task is not None and steps == ["first"]
    gate.set_result("woken")
    await asyncio.wait_for(task, 5)
    assert steps == ["first", "woken", "mine"]


async def test_cancelling_the_task_reaches_the_coroutine() -> None:
    cancelled = asyncio.Event()

    async def sleeper() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = eager.start(sleeper())
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


async def test_the_caller_task_is_untouched_and_failures_are_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    me = asyncio.current_task()

    async def fails() -> None:
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR, logger="trellis.host.eager"):
        assert eager.start(fails()) is None
    assert asyncio.current_task() is me
    assert "boom" in caplog.text
