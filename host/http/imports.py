"""The host imports a ``wasi:http/proxy`` component gets: every interface that mentions a wasi:io
resource is ours (Python), the rest stays wasmtime's native WASI (random, wall-clock,
environment, exit, terminal-*). Registered unversioned, so they serve every 0.2.x version a
guest imports (componentize-py 0.25 guests import 0.2.9, spin-sdk 3 guests 0.2.0).
"""

from __future__ import annotations

from typing import Any

from ..runtime.imports import HostImports
from .wasi_http import HttpTypes, OutgoingHandler
from .wasi_io import Error, IoError, MonotonicClock, Poll, Sink, Stdio, Streams, Unsupported

SOCKETS = ("network", "instance-network", "udp", "udp-create-socket", "tcp",
           "tcp-create-socket", "ip-name-lookup")
"""All of wasi:sockets is ours: udp/tcp mention streams and pollables, and their ``network``
parameter must then be our ``network`` resource too."""


def _preopens() -> Any:
    return Unsupported("wasi:filesystem/preopens", get_directories=lambda: [])


def _filesystem_types() -> Any:
    return Unsupported("wasi:filesystem/types", filesystem_error_code=lambda _err: None)


def wasi_http_imports(*, stdout: Sink | str = "discard", stderr: Sink | str = "discard",
                      base: HostImports | None = None, outgoing: Any = None) -> HostImports:
    """``base`` (or new) imports plus the wasi:io / wasi:http host side. ``stdout``/``stderr``
    take ``WasiOptions`` values: ``inherit``, ``discard`` or a callable per chunk.
    ``outgoing`` serves ``wasi:http/outgoing-handler`` (``outgoing.OutgoingHttp``); without
    it every outgoing request is denied."""
    imports = base.copy() if base is not None else HostImports()
    stdio = Stdio(stdout, stderr)
    table: dict[str, Any] = {
        "wasi:io/poll": Poll(),
        "wasi:io/error": IoError(),
        "wasi:io/streams": Streams(),
        "wasi:clocks/monotonic-clock": MonotonicClock(),
        "wasi:cli/stdin": stdio,
        "wasi:cli/stdout": stdio,
        "wasi:cli/stderr": stdio,
        "wasi:http/types": HttpTypes(),
        "wasi:http/outgoing-handler": outgoing if outgoing is not None else OutgoingHandler(),
        "wasi:filesystem/types": _filesystem_types(),
        "wasi:filesystem/preopens": _preopens(),
    }
    for name in SOCKETS:
        table[f"wasi:sockets/{name}"] = Unsupported(f"wasi:sockets/{name}")
    for name, impl in table.items():
        imports.register(name, impl)
    return imports


__all__ = ["Error", "wasi_http_imports"]
