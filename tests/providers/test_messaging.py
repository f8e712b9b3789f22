"""messaging-nats on a real nats-server, driven by a real component (tests/guests/messaging-app).

The guest imports ``wasmcloud:messaging/consumer`` (publish/request) and exports ``handler``
(answers requests with ``echo:`` + body, refuses a body of ``fail``). Messages reach it the way
a host delivers them: the provider calls ``ProviderContext.invoke``, here a function that records
the call and invokes the component loaded in a ``Runtime``.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError
from trellis.host.build import build_python_component
from trellis.host.runtime.imports import HostImports
from trellis.host.runtime.runtime import Runtime
from trellis.lattice.connection import flush
from trellis.lattice.wit.values import Err, Ok
from trellis.providers.messaging.nats import HANDLE_MESSAGE, NatsMessaging
from trellis.providers.registry import provider_class
from trellis.providers.sdk import Link, ProviderContext, ProviderError

APP_DIR = Path(__file__).resolve().parent.parent / "guests" / "messaging-app"
APP = "messaging-app"
PROVIDER = "messaging"


def _consumer_link() -> Link:
    return Link(source=APP, target=PROVIDER, namespace="wasmcloud", package="messaging",
                interfaces=("consumer",))


def _handler_link(**config: str) -> Link:
    return Link(source=PROVIDER, target=APP, namespace="wasmcloud", package="messaging",
                interfaces=("handler",), source_config=config)


def _imports(provider: NatsMessaging) -> HostImports:
    """The guest's imports: consumer, and the function-less types interface beside it."""
    imports = HostImports()
    for interface in ("consumer", "types"):
        imports.register(f"wasmcloud:messaging/{interface}",
                         provider.implementation(interface, _consumer_link()))
    return imports


@pytest.fixture(scope="module")
def aot_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled-component cache per module: the 18 MB guest compiles once, not per test."""
    return tmp_path_factory.mktemp("aot")


@pytest.fixture(scope="module")
def messaging_app_wasm() -> Path:
    return build_python_component(APP_DIR)


@pytest.fixture
def base() -> str:
    """A subject prefix of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}"


@dataclass
class Delivery:
    """The host side of ``ProviderContext.invoke``: records every call, then runs it."""

    component: Any = None
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    fail_next: int = 0
    """Raise (as a host would on a trap or an unreachable component) for this many calls."""

    async def __call__(self, component_id: str, function: str, msg: dict[str, Any],
                       timeout: float | None = None) -> Any:
        self.calls.append((component_id, function, msg))
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("component unavailable")
        result = await self.component.invoke(function, msg, timeout=timeout)
        self.results.append(result)
        return result

    async def wait_for(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.calls) < n:
            assert time.monotonic() < deadline, f"{len(self.calls)} of {n} deliveries"
            await asyncio.sleep(0.01)


async def _provider(delivery: Delivery, *, provider_id: str = PROVIDER, nc: Client | None = None,
                    **config: str) -> NatsMessaging:
    provider = NatsMessaging(config)
    await provider.start(ProviderContext(provider_id=provider_id, nc=nc, invoke=delivery))
    return provider


@dataclass
class App:
    provider: NatsMessaging
    delivery: Delivery
    component: Any


@pytest.fixture
async def app(messaging_app_wasm: Path, nats_url: str, nc: Client,
              aot_cache: Path) -> AsyncIterator[App]:
    """The guest with its consumer import served by a provider on the test's (shared, i.e.
    "lattice") connection, and that provider delivering handler messages to it."""
    delivery = Delivery()
    provider = await _provider(delivery, nc=nc)
    imports = _imports(provider)
    try:
        async with Runtime(imports=imports, cache_dir=aot_cache) as rt:
            delivery.component = rt.load(messaging_app_wasm)
            yield App(provider, delivery, delivery.component)
    finally:
        await provider.stop()


# -- config --------------------------------------------------------------------------------------

def test_registered_as_builtin() -> None:
    assert provider_class("messaging-nats") is NatsMessaging


async def test_needs_a_connection() -> None:
    with pytest.raises(ProviderError, match="url="):
        await NatsMessaging().start(ProviderContext(provider_id=PROVIDER))


async def test_unreachable_url_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ProviderError, match=f"url=nats://127.0.0.1:{port}"):
        await NatsMessaging({"url": f"nats://127.0.0.1:{port}", "connect_timeout_ms": "500"}) \
            .start(ProviderContext(provider_id=PROVIDER))
    assert time.monotonic() - started < 3


async def test_handler_link_must_point_at_the_component(nats_url: str) -> None:
    provider = await _provider(Delivery(), url=nats_url)
    try:
        wrong_way = Link(source=APP, target=PROVIDER, namespace="wasmcloud", package="messaging",
                         interfaces=("handler",), source_config={"subscriptions": "a"})
        with pytest.raises(ProviderError, match="source=messaging"):
            await provider.link_put(wrong_way)
        with pytest.raises(ProviderError, match="subscriptions="):
            await provider.link_put(_handler_link())
        with pytest.raises(ProviderError, match="whitespace"):
            await provider.link_put(_handler_link(subscriptions="a b"))
    finally:
        await provider.stop()


# -- consumer: component → NATS ------------------------------------------------------------------

@pytest.mark.slow
async def test_component_publishes(app: App, nc: Client, base: str) -> None:
    sub = await nc.subscribe(f"{base}.out")
    await nc.flush()
    assert await app.component.invoke("send", f"{base}.out", b"\x00hello") == Ok(None)
    msg = await sub.next_msg(timeout=5)
    assert msg.data == b"\x00hello"


@pytest.mark.slow
async def test_component_requests(app: App, nc: Client, base: str) -> None:
    async def pong(msg: Any) -> None:
        await msg.respond(b"pong:" + msg.data)

    await nc.subscribe(f"{base}.svc", cb=pong)
    await nc.flush()
    assert await app.component.invoke("ask", f"{base}.svc", b"ping", 2000) == Ok(b"pong:ping")


@pytest.mark.slow
async def test_request_errors_are_results(app: App, nc: Client, base: str) -> None:
    result = await app.component.invoke("ask", f"{base}.nobody", b"?", 1000)
    assert result == Err(f"no responders on {base}.nobody")
    await nc.subscribe(f"{base}.silent")  # listens, never answers
    await nc.flush()
    started = time.monotonic()
    result = await app.component.invoke("ask", f"{base}.silent", b"?", 200)
    assert result == Err(f"no reply on {base}.silent within 200 ms")
    assert time.monotonic() - started < 2
    result = await app.component.invoke("send", "bad subject", b"")
    assert isinstance(result, Err) and "whitespace" in result.value


@pytest.mark.slow
async def test_lattice_subjects_are_off_limits_on_the_host_connection(app: App) -> None:
    for subject in ("trellis.ctl.v1.default.host.stop.h1", "$JS.API.STREAM.LIST"):
        result = await app.component.invoke("send", subject, b"{}")
        assert isinstance(result, Err) and "url=" in result.value


# -- handler: NATS → component -------------------------------------------------------------------

@pytest.mark.slow
async def test_handler_answers_requests(app: App, nc: Client, base: str) -> None:
    await app.provider.link_put(_handler_link(subscriptions=f"{base}.echo"))
    reply = await nc.request(f"{base}.echo", b"hi", timeout=10)
    assert reply.data == b"echo:hi"
    component, function, msg = app.delivery.calls[0]
    assert (component, function) == (APP, HANDLE_MESSAGE)
    assert msg["subject"] == f"{base}.echo" and msg["body"] == b"hi"
    assert msg["reply-to"] == reply.subject


@pytest.mark.slow
async def test_handler_errors_never_kill_the_subscription(app: App, nc: Client,
                                                         base: str) -> None:
    await app.provider.link_put(_handler_link(subscriptions=f"{base}.in.*"))
    await nc.publish(f"{base}.in.a", b"fail")  # the component answers Err
    await app.delivery.wait_for(1)
    app.delivery.fail_next = 1  # the host cannot run the component at all
    await nc.publish(f"{base}.in.b", b"x")
    await app.delivery.wait_for(2)
    reply = await nc.request(f"{base}.in.c", b"still here", timeout=10)
    assert reply.data == b"echo:still here"
    assert app.delivery.results[0] == Err(f"refusing message on {base}.in.a")


@pytest.mark.slow
async def test_link_del_unsubscribes(app: App, nc: Client, base: str) -> None:
    link = _handler_link(subscriptions=f"{base}.x")
    await app.provider.link_put(link)
    assert (await nc.request(f"{base}.x", b"1", timeout=10)).data == b"echo:1"
    await app.provider.link_del(link)
    with pytest.raises(NoRespondersError):  # nobody subscribes any more
        await nc.request(f"{base}.x", b"2", timeout=2)


@pytest.mark.slow
async def test_link_put_again_replaces_subscriptions(app: App, nc: Client, base: str) -> None:
    await app.provider.link_put(_handler_link(subscriptions=f"{base}.old"))
    await app.provider.link_put(_handler_link(subscriptions=f"{base}.new"))
    assert (await nc.request(f"{base}.new", b"n", timeout=10)).data == b"echo:n"
    with pytest.raises(NoRespondersError):
        await nc.request(f"{base}.old", b"o", timeout=2)


@pytest.mark.slow
async def test_queue_group_delivers_each_message_once(app: App, nats_url: str, nc: Client,
                                                      base: str) -> None:
    """Two providers (as on two hosts, each with a connection of its own) in one queue group:
    every message reaches the component once, and the load is shared."""
    second = Delivery(component=app.component)
    other = await _provider(second, url=nats_url)
    try:
        config = {"subscriptions": f"{base}.jobs", "queue_group": f"{base}-workers"}
        await app.provider.link_put(_handler_link(**config))
        await other.link_put(_handler_link(**config))
        for i in range(40):
            await nc.publish(f"{base}.jobs", str(i).encode())
        await nc.flush()
        deadline = time.monotonic() + 10
        while len(app.delivery.calls) + len(second.calls) < 40:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # a duplicate would arrive about now
        bodies = sorted(int(m["body"]) for _, _, m in app.delivery.calls + second.calls)
        assert bodies == list(range(40))
        assert app.delivery.calls and second.calls  # both members took some
    finally:
        await other.stop()


@pytest.mark.slow
async def test_own_connection_and_stop(messaging_app_wasm: Path, nats_url: str, nc: Client,
                                       base: str, aot_cache: Path) -> None:
    """With url= the provider connects by itself (no lattice restrictions) and stop() undoes
    its subscriptions and closes that connection."""
    delivery = Delivery()
    provider = await _provider(delivery, url=nats_url)
    imports = _imports(provider)
    stopped = False
    try:
        async with Runtime(imports=imports, cache_dir=aot_cache) as rt:
            delivery.component = rt.load(messaging_app_wasm)
            await provider.link_put(_handler_link(subscriptions=f"{base}.own"))
            assert (await nc.request(f"{base}.own", b"o", timeout=10)).data == b"echo:o"
            sub = await nc.subscribe("trellis.private.test")
            await flush(nc)  # the provider publishes on a connection of its own
            assert await delivery.component.invoke("send", "trellis.private.test", b"ok") \
                == Ok(None)
            assert (await sub.next_msg(timeout=5)).data == b"ok"
            own = provider.nc
            await provider.stop()
            stopped = True
            assert own is not None and own.is_closed
            with pytest.raises(NoRespondersError):
                await nc.request(f"{base}.own", b"o", timeout=2)
    finally:
        if not stopped:
            await provider.stop()

