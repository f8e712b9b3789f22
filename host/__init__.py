"""The Trellis host: the wasmtime component runtime, the invocation chain and the CLI.

The public surface is re-exported here; the modules behind it may move.
"""

from .config import HostConfig as HostConfig
from .host import Host as Host
from .invocation import Interceptor as Interceptor
from .invocation import Invocation as Invocation
from .invocation import InvocationChain as InvocationChain
from .invocation import LimitsInterceptor as LimitsInterceptor
from .invocation import TelemetryInterceptor as TelemetryInterceptor
from .runtime.engine import EngineConfig as EngineConfig
from .runtime.engine import PoolConfig as PoolConfig
from .runtime.imports import HostImports as HostImports
from .runtime.instances import InstancePolicy as InstancePolicy
from .runtime.instances import Limits as Limits
from .runtime.instances import WasiOptions as WasiOptions
from .runtime.runtime import Component as Component
from .runtime.runtime import ComponentConfig as ComponentConfig
from .runtime.runtime import Runtime as Runtime

__all__ = [
    "Component",
    "ComponentConfig",
    "EngineConfig",
    "Host",
    "HostConfig",
    "HostImports",
    "InstancePolicy",
    "Interceptor",
    "Invocation",
    "InvocationChain",
    "Limits",
    "LimitsInterceptor",
    "PoolConfig",
    "Runtime",
    "TelemetryInterceptor",
    "WasiOptions",
]
