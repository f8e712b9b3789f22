"""The Trellis error hierarchy shared by every layer.

::

    TrellisError
    ├── WitValueError (ValueError)      a value does not fit its WIT type / bad WAVE text
    ├── ComponentError
    │   ├── ComponentLoadError          garbage, truncated, core module, unsupported feature
    │   ├── FunctionNotFound (LookupError)
    │   ├── ArgumentError (TypeError)   wrong arity or a parameter of the wrong type
    │   ├── UnsatisfiedImports          imports with no implementation, named before instantiation
    │   └── InvocationError             the call itself failed
    │       ├── GuestTrap               the guest trapped (panic, unreachable, exception); backtrace
    │       ├── DeadlineExceeded (TimeoutError)   wall-clock deadline (epoch interruption)
    │       ├── ResourceLimitExceeded   fuel or memory cap
    │       └── CapacityTimeout (TimeoutError)    no instance slot free before the deadline
    └── HostStoppedError                the runtime/host was closed by its owner

Each error builds its message from its fields so the CLI can print ``TypeName: message``.
"""

from __future__ import annotations


class TrellisError(Exception):
    """Root of every error Trellis raises on purpose."""


class WitValueError(TrellisError, ValueError):
    """A value (or WAVE text) does not match the WIT type it was given for."""


class ComponentError(TrellisError):
    """Something about a component: loading it, finding a function, calling it."""


class ComponentLoadError(ComponentError):
    def __init__(self, source: str, reason: str, hint: str | None = None) -> None:
        self.source, self.reason, self.hint = source, reason, hint
        msg = f"cannot load {source}: {reason}"
        super().__init__(f"{msg} ({hint})" if hint else msg)


class FunctionNotFound(ComponentError, LookupError):
    def __init__(self, component: str, name: str, candidates: list[str] | None = None) -> None:
        self.component, self.name, self.candidates = component, name, candidates or []
        msg = f"{component} has no exported function {name!r}"
        if self.candidates:
            shown = ", ".join(self.candidates[:12])
            more = " …" if len(self.candidates) > 12 else ""
            msg += f"; it exports: {shown}{more}"
        super().__init__(msg)


class AmbiguousFunction(FunctionNotFound):
    def __init__(self, component: str, name: str, matches: list[str]) -> None:
        self.component, self.name, self.candidates = component, name, matches
        ComponentError.__init__(
            self,
            f"{name!r} is exported by several interfaces of {component}: {', '.join(matches)};"
            " qualify it as 'iface#func' or 'ns:pkg/iface#func'",
        )


class ArgumentError(ComponentError, TypeError):
    """Wrong number of arguments, or an argument that does not fit its parameter type."""


class UnsatisfiedImports(ComponentError):
    def __init__(self, component: str, missing: list[str]) -> None:
        self.component, self.missing = component, missing
        super().__init__(
            f"{component} imports what nothing provides: {', '.join(missing)}"
            " (register a host implementation for each, or link a provider)"
        )


class InvocationError(ComponentError):
    """An invocation failed after it started. ``component`` and ``function`` name the call."""

    def __init__(self, component: str, function: str, detail: str) -> None:
        self.component, self.function, self.detail = component, function, detail
        super().__init__(f"{component} {function}: {detail}")


class GuestTrap(InvocationError):
    """The guest trapped. ``backtrace`` is wasmtime's guest backtrace text, when it has one."""

    def __init__(self, component: str, function: str, detail: str, backtrace: str = "") -> None:
        self.backtrace = backtrace
        super().__init__(component, function, detail)


class DeadlineExceeded(InvocationError, TimeoutError):
    def __init__(self, component: str, function: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(
            component, function, f"deadline of {timeout:g}s exceeded; instance discarded"
        )


class ResourceLimitExceeded(InvocationError):
    """Fuel ran out or memory hit its cap. ``limit`` is ``"fuel"`` or ``"memory"``."""

    def __init__(self, component: str, function: str, limit: str, detail: str) -> None:
        self.limit = limit
        super().__init__(component, function, f"{limit} limit exceeded: {detail}")


class CapacityTimeout(InvocationError, TimeoutError):
    def __init__(self, component: str, function: str, max_instances: int, waited: float) -> None:
        self.max_instances, self.waited = max_instances, waited
        super().__init__(
            component, function,
            f"all {max_instances} instances busy for {waited:g}s"
            " (raise max_instances or the deadline)",
        )


class HostStoppedError(TrellisError):
    """The runtime or host was closed by its owner; not a failure of the lattice."""
