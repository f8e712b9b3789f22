"""Every call into a component is an ``Invocation`` passed through a chain of interceptors.

This is where the security decorators of DESIGN §6 live: identity, policy, limits, secrets,
audit, telemetry. An interceptor is any object with::

    async def invoke(self, call: Invocation, next: Next) -> Any

It may inspect or replace the call (``dataclasses.replace``), refuse it by raising, or wrap
the result. The chain is built once; calling it costs one coroutine frame per interceptor.
The last link executes the call (locally today; across the lattice later).

A host starts calls eagerly (``host/eager.py``): on Python 3.11 the chain may run before the
call has a task of its own. An interceptor that never uses ``asyncio.timeout`` or
``current_task`` says so with ``eager_safe = True``; for any other, the chain first gives the
call its task (one loop iteration).

Shipped here: ``LimitsInterceptor`` (defaults and ceilings for deadline, fuel, memory,
argument size) and ``TelemetryInterceptor`` (one OpenTelemetry span per invocation).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode, TracerProvider

from ..lattice.errors import InvocationError, TrellisError
from .eager import in_task
from .runtime.instances import Limits

Next = Callable[["Invocation"], Awaitable[Any]]


NO_LIMITS = Limits()
"""The default ``Invocation.limits``: nothing asked for (shared: ``Limits`` is immutable)."""


@dataclass(frozen=True, slots=True)
class Invocation:
    """One call: who calls what, with which arguments and limits. Built once per call on the
    serving path, so it has slots and no per-call default objects but the dicts (~2 µs)."""

    component: str
    """Target component id (or name)."""
    function: str
    """Export key as resolved (``func`` or ``ns:pkg/iface@ver#func``)."""
    args: tuple[Any, ...] = ()
    caller: str | None = None
    """Calling component, provider or client id; ``None`` for the local CLI/API."""
    limits: Limits = NO_LIMITS
    deadline: float | None = None
    """Absolute ``time.monotonic()`` deadline, derived from ``limits.timeout`` when unset."""
    link_name: str | None = None
    invocation_id: str = field(default_factory=lambda: f"{random.getrandbits(128):032x}")
    trace_context: dict[str, str] = field(default_factory=dict)
    """W3C ``traceparent``/``tracestate`` carried in from a remote caller."""
    metadata: dict[str, str] = field(default_factory=dict)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or ``None``."""
        if self.deadline is None:
            return self.limits.timeout
        return max(0.0, self.deadline - time.monotonic())


class Interceptor(Protocol):
    async def invoke(self, call: Invocation, next: Next) -> Any: ...


class InvocationChain:
    """Interceptors in order, ending in ``terminal`` (the executor)."""

    def __init__(self, interceptors: Sequence[Interceptor], terminal: Next) -> None:
        self.interceptors = tuple(interceptors)
        self.terminal = terminal
        handler = terminal
        for icp in reversed(self.interceptors):
            handler = _bind(icp, handler)
        if not all(getattr(icp, "eager_safe", False) for icp in self.interceptors):
            handler = _in_task(handler)
        self._entry = handler

    async def invoke(self, call: Invocation) -> Any:
        return await self._entry(call)


def _in_task(nxt: Next) -> Next:
    # A call may start eagerly, before it has a task (host/eager.py); an interceptor that does
    # not say it copes with that (``eager_safe = True``) gets one first.
    async def step(call: Invocation) -> Any:
        await in_task()
        return await nxt(call)

    return step


def _bind(icp: Interceptor, nxt: Next) -> Next:
    # A plain function returning the interceptor's coroutine: one coroutine frame per
    # interceptor instead of two.
    def step(call: Invocation) -> Awaitable[Any]:
        return icp.invoke(call, nxt)

    return step


@dataclass(frozen=True)
class LimitsInterceptor:
    """Applies a component's default limits and enforces host-wide ceilings.

    A caller may ask for less than the ceiling, never more: a 10-minute timeout against a
    30-second ceiling becomes 30 seconds. ``max_args_bytes`` refuses oversized string/bytes
    arguments before any instance is touched.
    """

    eager_safe: ClassVar[bool] = True
    """Uses no ``asyncio.timeout`` or ``current_task`` (see ``InvocationChain``)."""
    defaults: Limits = field(default_factory=Limits)
    ceiling: Limits = field(default_factory=Limits)
    max_args_bytes: int | None = None
    _inert: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_inert", self.defaults == Limits() == self.ceiling
                           and self.max_args_bytes is None)

    async def invoke(self, call: Invocation, next: Next) -> Any:
        if self._inert and call.limits.timeout is None:
            return await next(call)  # nothing to apply, cap or check: ~3 µs saved
        lim = call.limits.merged(self.defaults)
        lim = Limits(
            _cap(lim.timeout, self.ceiling.timeout),
            _cap(lim.fuel, self.ceiling.fuel),
            _cap(lim.max_memory, self.ceiling.max_memory),
        )
        if self.max_args_bytes is not None:
            size = sum(len(a) for a in call.args if isinstance(a, (str, bytes, bytearray)))
            if size > self.max_args_bytes:
                raise InvocationError(
                    call.component, call.function,
                    f"arguments are {size} bytes, over the limit of {self.max_args_bytes}",
                )
        deadline = call.deadline
        if lim.timeout is not None:
            own = time.monotonic() + lim.timeout
            deadline = own if deadline is None else min(deadline, own)
        if lim != call.limits or deadline != call.deadline:
            call = replace(call, limits=lim, deadline=deadline)
        return await next(call)


def _cap(value: Any, ceiling: Any) -> Any:
    if ceiling is None:
        return value
    return ceiling if value is None else min(value, ceiling)


class TelemetryInterceptor:
    """One OpenTelemetry span per invocation: component, function, outcome, duration.

    Takes a ``TracerProvider`` rather than using the global one so tests and embedders
    control where spans go.
    """

    eager_safe = True
    """Uses no ``asyncio.timeout`` or ``current_task`` (see ``InvocationChain``)."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        provider = tracer_provider or trace.get_tracer_provider()
        self.tracer = provider.get_tracer("trellis.host")

    async def invoke(self, call: Invocation, next: Next) -> Any:
        span = self.tracer.start_span(
            f"invoke {call.component}/{call.function}",
            kind=trace.SpanKind.SERVER if call.caller else trace.SpanKind.INTERNAL,
        )
        if not span.is_recording():  # no SDK configured: no attributes, nothing made current
            return await next(call)
        span.set_attributes({
            "trellis.component": call.component,
            "trellis.function": call.function,
            "trellis.invocation_id": call.invocation_id,
            **({"trellis.caller": call.caller} if call.caller else {}),
        })
        with trace.use_span(span, end_on_exit=True, record_exception=False,
                            set_status_on_exception=False):
            started = time.perf_counter()
            try:
                result = await next(call)
            except BaseException as exc:
                span.set_attribute("trellis.outcome", _outcome(exc))
                span.set_attribute("trellis.duration_ms", (time.perf_counter() - started) * 1e3)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
                raise
            span.set_attribute("trellis.outcome", "ok")
            span.set_attribute("trellis.duration_ms", (time.perf_counter() - started) * 1e3)
            return result


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, TrellisError):
        return type(exc).__name__
    return "error"
