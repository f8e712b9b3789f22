"""``trellis serve`` as a library: load a ``wasi:http/proxy`` component and serve it.

Used by the CLI, the tests and ``bench/http.py``::

    async with Serving(ServeOptions(file="app.wasm", addr="127.0.0.1:0")) as s:
        print(s.url)   # http://127.0.0.1:PORT
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runtime.engine import EngineConfig, PoolConfig
from ..runtime.instances import InstancePolicy, Limits, WasiOptions
from ..runtime.runtime import Component, ComponentConfig, Runtime
from .imports import wasi_http_imports
from .outgoing import OutboundPolicy, OutgoingHttp
from .proxy import ProxyComponent
from .server import HttpServer
from .spin import ServeBackends

DEFAULT_ADDR = "127.0.0.1:8080"


@dataclass(frozen=True)
class ServeOptions:
    file: str | Path
    addr: str = DEFAULT_ADDR
    pooled: bool = False
    """Reuse warm instances (else a fresh instance per request, the default)."""
    max_concurrency: int = 16
    """Requests served at once (live instances); the rest wait up to their deadline (503)."""
    prepared: int = 2
    """Fresh mode: never-used instances kept instantiated ahead of demand (each still serves
    one request only), so instantiation runs beside the requests rather than in their way."""
    timeout: float | None = 30.0
    """Seconds per request, guest and body waits included (504)."""
    max_memory: int | None = None
    """Bytes of linear memory per instance."""
    max_body: int | None = 100 * 2**20
    """Request body bytes at most (413)."""
    wasi: WasiOptions = field(default_factory=lambda: WasiOptions(stdout="inherit",
                                                                  stderr="inherit"))
    cache_dir: Path | None = None
    kv: str = "memory"
    """The keyvalue provider behind wasi:keyvalue and Spin key-value: ``memory``,
    ``redis://…`` or ``nats://…`` (``spin.py``)."""
    variables: tuple[tuple[str, str], ...] = ()
    """Values behind wasi:config and Spin variables."""
    allow_outbound: tuple[str, ...] = ()
    """Hosts the component may call with wasi:http/outgoing-handler (``outgoing.parse_rule``:
    ``example.com``, ``*.example.com``, ``127.0.0.1:8081``, ``*``); none: all denied."""
    outbound_timeout: float = 30.0
    """Seconds: default and cap of each outgoing request's connect/first-byte/between-bytes
    timeout."""
    outbound_ca: str | Path | None = None
    """Extra CA certificates (PEM) trusted for outgoing https, besides the system's."""
    pool: PoolConfig | None = field(default_factory=PoolConfig)
    """wasmtime's pooling allocator (fresh instances reuse warm slots); None: on demand."""


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address must look like HOST:PORT, got {addr!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class Serving:
    """A runtime, the loaded component and the listening server; ``async with`` runs them."""

    def __init__(self, options: ServeOptions, runtime: Runtime | None = None) -> None:
        self.options = options
        self._own_runtime = runtime is None
        self.runtime = runtime or Runtime(engine=EngineConfig(), pool=options.pool,
                                          cache_dir=options.cache_dir,
                                          max_workers=max(8, options.max_concurrency + 4))
        self.server: HttpServer | None = None
        self.component: Component | None = None
        self.backends: ServeBackends | None = None
        self.outgoing = OutgoingHttp(OutboundPolicy(options.allow_outbound,
                                                    options.outbound_timeout, options.outbound_ca))
        self.host = ""
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Serving:
        o = self.options
        host, port = split_addr(o.addr)
        imports = wasi_http_imports(stdout=o.wasi.stdout, stderr=o.wasi.stderr,
                                    base=self.runtime.imports, outgoing=self.outgoing)
        config = ComponentConfig(
            policy=InstancePolicy(mode="pooled" if o.pooled else "fresh",
                                  max_instances=o.max_concurrency, inline=False),
            limits=Limits(max_memory=o.max_memory),
            wasi=o.wasi,
        )
        self.backends = backends = ServeBackends(o.kv, dict(o.variables))
        await backends.start()
        component = await self.runtime.load_async(
            o.file, config=config, imports=lambda c: backends.imports(c.world, imports))
        self.component = component
        if not o.pooled and o.prepared > 0:
            await asyncio.to_thread(component.instances.prepare,
                                    min(o.prepared, o.max_concurrency), 60.0)
        proxy = ProxyComponent(component, timeout=o.timeout)
        self.server = HttpServer(proxy, max_body=o.max_body)
        self.host, self.port = await self.server.start(host, port)
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self.component is not None:
            self.component.instances.prepare(0)
            self.component = None
        await self.outgoing.aclose()
        if self.backends is not None:
            await self.backends.close()
            self.backends = None
        if self._own_runtime:
            self.runtime.close()

    async def __aenter__(self) -> Serving:
        try:
            return await self.start()
        except BaseException:
            await self.close()
            raise

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


async def serve_forever(options: ServeOptions, ready: Any = None) -> None:
    async with Serving(options) as serving:
        if ready is not None:
            ready(serving)
        await asyncio.Event().wait()
