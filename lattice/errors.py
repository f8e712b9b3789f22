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
    │       ├── CapacityTimeout (TimeoutError)    no instance slot free before the deadline
    │       │   └── InstancePoolFull    every slot of the host's instance pool is taken
    │       ├── InvocationTimeout (TimeoutError)  a remote call got no reply before its deadline
    │       ├── NoSuchComponent (LookupError)     no host in the lattice runs the target
    │       └── RemoteInvocationError             a host answered with an error (``kind``, ``host``)
    │           ├── RemoteTrap (GuestTrap)  ·  RemoteDeadlineExceeded (DeadlineExceeded)
    │           ├── RemoteLimitExceeded (ResourceLimitExceeded)
    │           ├── RemoteCapacityTimeout (CapacityTimeout)
    │           ├── RemoteFunctionNotFound (FunctionNotFound)
    │           └── RemoteArgumentError (ArgumentError)
    ├── LatticeError                    the lattice refused or failed a control request
    │   ├── LatticeUnavailableError     NATS is unreachable or went away (cause in __cause__)
    │   ├── HostNotFound (LookupError)  no host with that id answered
    │   └── ScaleFailed                 a host could not start/scale a component (``reason``)
    └── HostStoppedError                the runtime/host was closed by its owner

Remote errors subclass their local counterparts, so ``except GuestTrap`` catches a trap wherever
the component ran; ``.host`` says where.

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


class InstancePoolFull(CapacityTimeout):
    """Every slot of the host's instance pool (wasmtime's pooling allocator) is held by a live
    instance: a capacity failure like ``CapacityTimeout``, raised at once rather than waited
    out (slots are shared by all components of the process, not queued for)."""

    def __init__(self, component: str, function: str, detail: str) -> None:
        self.max_instances, self.waited = 0, 0.0
        InvocationError.__init__(
            self, component, function,
            f"this host's instance pool is full ({detail}): raise --pool-instances "
            "(TRELLIS_POOL_INSTANCES) or lower components' max_instances",
        )


class HostStoppedError(TrellisError):
    """The runtime or host was closed by its owner; not a failure of the lattice."""


# -- the lattice ---------------------------------------------------------------------------


class InvocationTimeout(InvocationError, TimeoutError):
    """A remote call got no reply before its deadline: the host may be slow, overloaded or gone."""

    def __init__(self, component: str, function: str, timeout: float, lattice: str) -> None:
        self.timeout, self.lattice = timeout, lattice
        super().__init__(
            component, function,
            f"no reply within {timeout:.3g}s on lattice {lattice!r} (the host running it may be "
            "overloaded or gone; raise the timeout or check `trellis host list`)",
        )


class NoSuchComponent(InvocationError, LookupError):
    """Nothing in the lattice serves the component: NATS reported no responders."""

    def __init__(self, component: str, function: str, lattice: str) -> None:
        self.lattice = lattice
        super().__init__(
            component, function,
            f"no host on lattice {lattice!r} runs component {component!r} "
            "(start it with `trellis component start … --id " + component + "`)",
        )


class LinkError(InvocationError):
    """A component called an import whose link is missing or whose target cannot serve."""


class NoLink(LinkError, LookupError):
    """The import has no link: raised at once, never after a wait."""

    def __init__(self, component: str, function: str, link_name: str) -> None:
        self.link_name = link_name
        package = function.split("/", 1)[0]
        super().__init__(
            component, function,
            f"import {function} has no link named {link_name!r} (bind it: `trellis link put "
            f"{component} PROVIDER_OR_COMPONENT_ID {package} --interface …"
            f"{'' if link_name == 'default' else ' --name ' + link_name}`)",
        )


class LinkTargetUnavailable(LinkError):
    """The link's target (a provider or component) did not answer before the deadline."""

    def __init__(self, component: str, function: str, target: str, detail: str) -> None:
        self.target = target
        super().__init__(component, function, f"link target {target!r} unavailable: {detail}")


class RemoteInvocationError(InvocationError):
    """A host executed (or refused) the call and answered with an error.

    ``kind`` is the wire error kind (``trap``, ``deadline``, ``limit``, ``capacity``,
    ``no_such_function``, ``bad_request``, ``denied``, ``stopped``, ``internal`` …; see
    docs/protocol.md), ``host`` the host that answered, ``remote_message`` its own words.
    """

    def __init__(self, component: str, function: str, kind: str, message: str, host: str,
                 invocation_id: str = "") -> None:
        self.kind, self.host, self.invocation_id = kind, host, invocation_id
        self.remote_message = message
        # Not InvocationError.__init__: with the local error types mixed in (below), its
        # cooperative super() call would reach their differently shaped constructors.
        self.component, self.function = component, function
        self.detail = f"{message} [{kind} on host {host}]"
        Exception.__init__(self, f"{component} {function}: {self.detail}")


class RemoteTrap(RemoteInvocationError, GuestTrap):
    backtrace = ""


class RemoteNoLink(RemoteInvocationError, NoLink):
    """The component ran on another host and called an import that has no link there."""

    link_name = ""


class RemoteLinkTargetUnavailable(RemoteInvocationError, LinkTargetUnavailable):
    """The component ran on another host and its link's target did not answer there."""

    target = ""


class RemoteDeadlineExceeded(RemoteInvocationError, DeadlineExceeded):
    timeout = 0.0


class RemoteLimitExceeded(RemoteInvocationError, ResourceLimitExceeded):
    limit = ""


class RemoteCapacityTimeout(RemoteInvocationError, CapacityTimeout):
    max_instances, waited = 0, 0.0


class RemoteFunctionNotFound(RemoteInvocationError, FunctionNotFound):
    name, candidates = "", []


class RemoteArgumentError(RemoteInvocationError, ArgumentError):
    """The host could not decode the arguments (wrong types or encoding)."""


class LatticeError(TrellisError):
    """A control request to the lattice failed."""


class LatticeUnavailableError(LatticeError):
    """NATS is unreachable or the connection went away; the cause is in ``__cause__``.
    (``HostStoppedError`` is the other case: the owner closed it on purpose.)"""

    def __init__(self, url: str, detail: str) -> None:
        self.url, self.detail = url, detail
        super().__init__(f"lattice unavailable at {url}: {detail}")


class HostNotFound(LatticeError, LookupError):
    def __init__(self, host_id: str, lattice: str) -> None:
        self.host_id, self.lattice = host_id, lattice
        super().__init__(
            f"no host {host_id!r} answered on lattice {lattice!r} (see `trellis host list`)"
        )


class CtlRequestFailed(LatticeError):
    """A host answered a control request with ``success: false``."""

    def __init__(self, operation: str, target: str, message: str) -> None:
        self.operation, self.target, self.reason = operation, target, message
        super().__init__(f"{operation} on {target} failed: {message}")


class ScaleFailed(LatticeError):
    """A host accepted a scale request but could not carry it out; ``reason`` says why."""

    def __init__(self, component: str, host_id: str, reason: str) -> None:
        self.component, self.host_id, self.reason = component, host_id, reason
        super().__init__(f"cannot scale {component} on host {host_id}: {reason}")


# -- links and named config (lattice/links.py) ---------------------------------------------------


class LinkStoreUnavailable(LatticeUnavailableError):
    """NATS or JetStream failed while reading or writing links / named config; the NATS error
    is ``__cause__``. (``url`` is empty: the store does not know which server answered.)"""

    def __init__(self, action: str, lattice: str, detail: str) -> None:
        self.action, self.lattice, self.detail, self.url = action, lattice, detail, ""
        LatticeError.__init__(
            self, f"cannot {action} in the link store of lattice {lattice!r}: {detail}")


class LinkStoreTimeout(LinkStoreUnavailable, TimeoutError):
    def __init__(self, action: str, lattice: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(action, lattice, f"not done within {timeout:g}s (check the NATS "
                         "connection and that JetStream is healthy)")


class ConfigNotFound(LatticeError, LookupError):
    """A link names a config (``--source-config`` / ``--target-config``) that does not exist."""

    def __init__(self, name: str, lattice: str, link: str = "") -> None:
        self.name, self.lattice, self.link = name, lattice, link
        used = f" (link {link} refers to it)" if link else ""
        super().__init__(
            f"no named config {name!r} on lattice {lattice!r}{used}; create it with "
            f"`trellis config put {name} KEY=VALUE …`"
        )
