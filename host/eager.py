"""Start a coroutine eagerly: run it right here until it first waits, and give it a task only
then.

On a host's serving path most invocations finish without waiting for anything (a quick export
on a warm instance); a task for each costs ~5 µs and one more loop iteration before it even
starts. Python 3.12 has this built in (``asyncio.Task(..., eager_start=True)``), used when
present. On 3.11 the first step runs with *no* current task: asyncio's record of the caller's
task (nats-py's read loop, say) is set aside for its duration. Code that needs a task of its own
— ``asyncio.timeout``, ``current_task()``, cancellation scopes — must first
``await in_task()``; without it, it fails loudly (``RuntimeError``) instead of acting on the
caller's task, e.g. a timeout cancelling the connection's read loop.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import logging
import sys
from collections.abc import Coroutine, Generator
from typing import Any

_LOG = logging.getLogger(__name__)
_NATIVE = sys.version_info >= (3, 12)
_enter = getattr(asyncio.tasks, "_enter_task", None)
_leave = getattr(asyncio.tasks, "_leave_task", None)


def start(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` until it finishes or first waits; return the task it continues in, or
    ``None`` when it is already over. Its exceptions are logged, never raised here."""
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    if _NATIVE:
        task: asyncio.Task[None] = asyncio.Task(coro, loop=loop, context=ctx,
                                                eager_start=True)  # type: ignore[call-arg]
        if not task.done():
            return task
        if not task.cancelled() and task.exception() is not None:
            _LOG.error("%r failed", coro, exc_info=task.exception())
        return None
    if _enter is None or _leave is None:  # an asyncio without them: an ordinary task
        return loop.create_task(coro, context=ctx)
    caller = asyncio.current_task(loop)
    if caller is not None:
        _leave(loop, caller)
    try:
        pending = ctx.run(coro.send, None)
    except StopIteration:
        return None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        _LOG.exception("%r failed", coro)
        return None
    finally:
        if caller is not None:
            _enter(loop, caller)
    return loop.create_task(_Continue(coro, pending), context=ctx)


async def in_task() -> None:
    """Make sure what follows runs in a task of its own (see the module doc)."""
    if asyncio.current_task() is None:
        await asyncio.sleep(0)


class _Continue(collections.abc.Coroutine):  # type: ignore[type-arg]
    """What a task runs for a coroutine already started elsewhere and suspended on
    ``pending``: its first step hands the task ``pending``; every later ``send``/``throw`` goes
    to the coroutine. A class, not an ``async def``: a task cancelled before its first step
    throws into what it runs, and an unstarted coroutine would drop that cancellation instead
    of passing it on (the call would never learn it was cancelled)."""

    __slots__ = ("coro", "pending", "first")

    def __init__(self, coro: Coroutine[Any, Any, None], pending: Any) -> None:
        self.coro, self.pending, self.first = coro, pending, True

    def send(self, value: Any) -> Any:
        if self.first:
            self.first = False
            pending, self.pending = self.pending, None
            return pending
        return self.coro.send(value)

    def throw(self, *exc: Any) -> Any:
        self.first = False
        self.pending = None
        return self.coro.throw(*exc)

    def close(self) -> None:
        self.coro.close()

    def __await__(self) -> Generator[Any, Any, None]:
        raise TypeError("_Continue is run by a task, not awaited")
