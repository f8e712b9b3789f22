"""``LatticeClient``: the control API of a lattice, for the CLI, the scheduler and tests.

::

    async with LatticeClient("nats://127.0.0.1:4222", "default") as lc:
        hosts = await lc.ping_hosts()
        ref = await lc.push_artifact(Path("calc.wasm"))
        await lc.start_component(ref, "calc", max_instances=8)     # picks the emptiest host
        print(await lc.call("calc", "add", 2, 40))                  # 42, from any replica
        print(await lc.call_wave("calc", "greet(\\"you\\")"))        # "\\"Hello, you!\\""

Every request has a deadline (``timeout``, default 2 s; scale waits default to 60 s because
fetching and compiling a big component takes a while). Control failures raise
``HostNotFound`` (nobody answered) or ``CtlRequestFailed`` (a host said no); scale outcomes
come from the host's ``component_scaled`` / ``component_scale_failed`` events, matched by
request id (``ScaleFailed`` carries the host's reason). Calls raise the errors of
``trellis.lattice.rpc``: ``NoSuchComponent``, ``InvocationTimeout`` or a typed
``RemoteInvocationError`` naming the host.

Signatures for encoding arguments come from the component's ``_describe`` operation and are
cached by component digest; a reply from a replica running other code (a rolling update) is
decoded with that replica's own signatures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry.trace import TracerProvider
from pydantic import BaseModel, ValidationError

from . import subjects
from .codec import decode_result, encode_args
from .connection import NatsOptions, connect
from .errors import (
    ArgumentError,
    CtlRequestFailed,
    HostNotFound,
    LatticeError,
    LatticeUnavailableError,
    RemoteInvocationError,
    ScaleFailed,
    WitValueError,
)
from .links import ConfigDef, LinkDef, LinkStore
from .models import (
    CtlReply,
    HostInfo,
    HostInventory,
    LabelChange,
    LabelKey,
    LimitsSpec,
    ProviderInfo,
    ScaleComponent,
    StartProvider,
    StopHost,
    StopProvider,
)
from .registry import HostRecord, HostRegistry
from .rpc import DESCRIBE, KIND_INTERNAL, RawReply, RpcCaller, resolve_export
from .wit import wave
from .wit.typejson import exports_from_json
from .wit.types import FuncType

_LOG = logging.getLogger(__name__)
PLACEMENT_QUIET = 0.1
"""Placement stops listening for pings this long after the last answer: hosts answer within
milliseconds, and waiting out the full ping timeout would slow every ``start`` down."""


class LatticeClient:
    """A connection to one lattice's control interface and invocation path.

    Args:
        nc: a connected nats-py client (kept open by ``close``), or a URL / ``NatsOptions`` to
            connect to on ``connect()`` / ``async with`` (closed by ``close``).
        lattice: the lattice name.
        timeout: default deadline of every request, seconds.
        caller: identity sent with invocations (``Trellis-Caller``).
        tracer_provider: where call spans go (the global provider when ``None``).
    """

    def __init__(self, nc: Client | str | NatsOptions, lattice: str = "default", *,
                 timeout: float = 2.0, caller: str = "client",
                 tracer_provider: TracerProvider | None = None) -> None:
        self.lattice = subjects.check_token(lattice, "lattice")
        self.timeout = timeout
        self.caller = caller
        self._tracer_provider = tracer_provider
        self._owns = not isinstance(nc, Client)
        self._options = NatsOptions(url=nc) if isinstance(nc, str) else (
            nc if isinstance(nc, NatsOptions) else None)
        self._nc: Client | None = nc if isinstance(nc, Client) else None
        self._rpc: RpcCaller | None = None
        self._sigs: dict[str, dict[str, FuncType]] = {}
        """Export signatures by component digest."""
        self._digest_of: dict[str, str] = {}
        """Component id -> digest of the replica that described it last."""
        self._keys: dict[tuple[str, str], str] = {}
        """(digest, name as written) -> export key."""

    # -- connection ------------------------------------------------------------------------------

    async def connect(self) -> LatticeClient:
        if self._nc is None:
            assert self._options is not None
            self._nc = await connect(self._options)
        return self

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        self._rpc = None
        if nc is not None and self._owns and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.drain(), 5.0)
            except Exception:
                await nc.close()

    async def __aenter__(self) -> LatticeClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise LatticeUnavailableError(self._options.url if self._options else "NATS",
                                          "LatticeClient is not connected (use `async with`)")
        return self._nc

    @property
    def rpc(self) -> RpcCaller:
        if self._rpc is None:
            self._rpc = RpcCaller(self.nc, self.lattice, caller=self.caller,
                                  tracer_provider=self._tracer_provider)
        return self._rpc

    # -- hosts -----------------------------------------------------------------------------------

    async def ping_hosts(self, timeout: float = 0.5, *, expect: int | None = None,
                         quiet: float | None = None) -> list[HostInfo]:
        """Every host that answers within ``timeout``, sorted by id. Returns early once
        ``expect`` hosts answered, or ``quiet`` seconds passed without a new answer."""
        replies = await self._gather(subjects.host_ping(self.lattice), timeout, expect, quiet)
        hosts = [self._response(r, HostInfo, "host.ping") for r in replies]
        return sorted((h for h in hosts if h is not None), key=lambda h: h.host_id)

    async def list_hosts(self, include_stale: bool = False, *,
                         timeout: float | None = None) -> list[HostRecord]:
        """The hosts of the lattice from the host registry, sorted by id: every host whose
        heartbeat record is fresher than its timeout (``include_stale``: also those that missed
        it, until the registry forgets them). Asks no host, so it waits for nobody.

        Raises:
            HostRegistryUnavailable: NATS or JetStream failed.
        """
        return await HostRegistry(self.nc, self.lattice).list(
            include_stale=include_stale, timeout=timeout or self.timeout)

    async def wait_for_hosts(self, n: int, timeout: float = 10.0) -> list[HostInfo]:
        """Ping until at least ``n`` hosts answer (hosts in other processes start in their own
        time); ``HostNotFound``-style ``LatticeError`` when they don't within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            hosts = await self.ping_hosts(min(0.5, max(0.05, deadline - time.monotonic())),
                                          expect=n)
            if len(hosts) >= n:
                return hosts
            if time.monotonic() >= deadline:
                raise LatticeError(f"{len(hosts)} of {n} hosts answered on lattice "
                                   f"{self.lattice!r} within {timeout:g}s")
            await asyncio.sleep(0.05)

    async def get_inventory(self, host_id: str, *, timeout: float | None = None
                            ) -> HostInventory:
        resp = await self._ctl(subjects.host_get(self.lattice, host_id), None, "host.get",
                               host_id, timeout)
        return HostInventory.model_validate(resp)

    async def put_label(self, host_id: str, key: str, value: str, *,
                        timeout: float | None = None) -> None:
        await self._ctl(subjects.label_put(self.lattice, host_id),
                        LabelChange(key=key, value=value), "label.put", host_id, timeout)

    async def delete_label(self, host_id: str, key: str, *, timeout: float | None = None) -> None:
        await self._ctl(subjects.label_del(self.lattice, host_id), LabelKey(key=key),
                        "label.del", host_id, timeout)

    async def stop_host(self, host_id: str, *, drain_timeout: float | None = None,
                        timeout: float | None = None) -> None:
        """Ask a host to stop gracefully; returns once it accepted (not once it is gone)."""
        req = StopHost() if drain_timeout is None else StopHost(timeout=drain_timeout)
        await self._ctl(subjects.host_stop(self.lattice, host_id), req, "host.stop", host_id,
                        timeout)

    # -- components ------------------------------------------------------------------------------

    async def pick_host(self, component_id: str | None = None) -> str:
        """The host with the fewest components, preferring one not already running
        ``component_id`` (so replicas spread)."""
        hosts = await self.ping_hosts(quiet=PLACEMENT_QUIET)
        if not hosts:
            raise LatticeError(f"no hosts answered on lattice {self.lattice!r}; start one with "
                               "`trellis host` or `trellis up`")
        invs = await asyncio.gather(*(self.get_inventory(h.host_id) for h in hosts),
                                    return_exceptions=True)
        ranked = []
        for inv in invs:
            if isinstance(inv, HostInventory):
                has = any(c.component_id == component_id for c in inv.components)
                ranked.append((has, len(inv.components), inv.host_id))
        if not ranked:
            raise LatticeError(f"no host on lattice {self.lattice!r} returned its inventory")
        return min(ranked)[2]

    async def scale_component(
        self, component_id: str, image: str | Path | None = None, *, host_id: str | None = None,
        max_instances: int = 16, mode: str = "fresh", limits: LimitsSpec | None = None,
        annotations: dict[str, str] | None = None, wait: bool = True, timeout: float = 60.0,
    ) -> str:
        """Start, rescale or (``max_instances=0``) stop ``component_id`` on one host; returns
        the host id. With ``wait`` it returns once the host reported the outcome.

        Raises:
            ScaleFailed: the host could not do it (``reason``: fetch, digest, compile, imports…).
            CtlRequestFailed: the host refused the request (bad image, not running, stopping).
            LatticeError: no outcome within ``timeout``.
        """
        host = host_id or await self.pick_host(component_id)
        req = ScaleComponent(
            component_id=component_id, image=None if image is None else str(image),
            max_instances=max_instances, mode=mode,  # type: ignore[arg-type]
            limits=limits or LimitsSpec(), annotations=annotations or {},
            request_id=uuid.uuid4().hex,
        )
        if not wait:
            await self._ctl(subjects.component_scale(self.lattice, host), req,
                            "component.scale", host, None)
            return host
        outcome: asyncio.Future[tuple[str, dict[str, Any]]] = (
            asyncio.get_running_loop().create_future())

        async def on_event(msg: Any) -> None:
            try:
                event = json.loads(msg.data)
                data = event.get("data") or {}
            except (ValueError, AttributeError):
                return
            if data.get("request_id") == req.request_id and not outcome.done():
                outcome.set_result((msg.subject.rsplit(".", 1)[-1], data))

        subs = [await self.nc.subscribe(subjects.event(self.lattice, name), cb=on_event)
                for name in ("component_scaled", "component_scale_failed")]
        try:
            await self._ctl(subjects.component_scale(self.lattice, host), req,
                            "component.scale", host, None)
            try:
                name, data = await asyncio.wait_for(outcome, timeout)
            except TimeoutError:
                raise LatticeError(f"host {host} reported no outcome for scaling {component_id} "
                                   f"within {timeout:g}s") from None
        finally:
            for sub in subs:
                await sub.unsubscribe()
        if name == "component_scale_failed":
            raise ScaleFailed(component_id, host, str(data.get("reason") or "unknown reason"))
        self._digest_of.pop(component_id, None)  # it may run other code now
        return host

    async def start_component(self, image: str | Path, component_id: str, **kwargs: Any) -> str:
        """Start ``image`` (``sha256:…`` from ``push_artifact``, or a path the host can read)
        as ``component_id``; see ``scale_component`` for the options."""
        return await self.scale_component(component_id, image, **kwargs)

    async def stop_component(self, component_id: str, host_id: str | None = None, *,
                             wait: bool = True, timeout: float = 30.0) -> list[str]:
        """Stop the component on ``host_id``, or on every host running it; returns the hosts."""
        hosts = [host_id] if host_id is not None else await self._hosts_running(
            lambda inv: any(c.component_id == component_id for c in inv.components))
        await asyncio.gather(*(self.scale_component(component_id, None, host_id=h,
                                                    max_instances=0, wait=wait, timeout=timeout)
                               for h in hosts))
        return hosts

    async def start_provider(self, name: str, provider_id: str, *, host_id: str | None = None,
                             config: str | None = None, standalone: bool = False,
                             timeout: float = 60.0) -> ProviderInfo:
        """Start provider ``name`` (built-in or ``module:Class``) as ``provider_id`` on
        ``host_id`` (default: the least busy host). ``config`` names its settings."""
        host = host_id or await self.pick_host()
        req = StartProvider(provider_id=provider_id, name=name, config=config,
                            standalone=standalone)
        out = await self._ctl(subjects.provider_start(self.lattice, host), req,
                              "provider.start", host, timeout)
        return ProviderInfo.model_validate(out)

    async def stop_provider(self, provider_id: str, host_id: str | None = None, *,
                            timeout: float = 30.0) -> list[str]:
        """Stop the provider on ``host_id``, or on every host running it; returns the hosts."""
        hosts = [host_id] if host_id is not None else await self._hosts_running(
            lambda inv: any(p.provider_id == provider_id for p in inv.providers))
        for host in hosts:
            await self._ctl(subjects.provider_stop(self.lattice, host),
                            StopProvider(provider_id=provider_id), "provider.stop", host, timeout)
        return hosts

    async def _hosts_running(self, runs: Callable[[HostInventory], bool]) -> list[str]:
        """The hosts whose inventory ``runs`` accepts (hosts that do not answer are skipped)."""
        infos = await self.ping_hosts(quiet=PLACEMENT_QUIET)
        invs = await asyncio.gather(*(self.get_inventory(h.host_id) for h in infos),
                                    return_exceptions=True)
        return [i.host_id for i in invs if isinstance(i, HostInventory) and runs(i)]

    async def push_artifact(self, data: bytes | Path, *, timeout: float = 60.0) -> str:
        """Store a component in the lattice's artifact store; returns ``sha256:…``."""
        from .artifacts import ArtifactStore

        name = None
        if isinstance(data, Path):
            name, data = data.name, data.read_bytes()
        store = ArtifactStore(self.nc.jetstream(), self.lattice)
        return await store.put(data, name=name, timeout=timeout)

    # -- links and named config (lattice/links.py) ----------------------------------------------

    def link_store(self) -> LinkStore:
        """The lattice's links and named config, with this client's deadline."""
        return LinkStore(self.nc, self.lattice, timeout=self.timeout)

    async def put_link(self, link: LinkDef, *, timeout: float | None = None) -> None:
        """Store ``link``, replacing the one with the same source, package and name; hosts
        running the source rebind within a second."""
        await self.link_store().put_link(link, timeout=timeout)

    async def get_link(self, source_id: str, package: str, name: str = "default", *,
                       timeout: float | None = None) -> LinkDef | None:
        return await self.link_store().get_link(source_id, package, name, timeout=timeout)

    async def del_link(self, source_id: str, package: str, name: str = "default", *,
                       timeout: float | None = None) -> bool:
        """Remove the link of ``source_id`` for ``package`` (``ns:pkg``); ``False`` if none."""
        return await self.link_store().del_link(source_id, package, name, timeout=timeout)

    async def list_links(self, source_id: str | None = None, *,
                         timeout: float | None = None) -> list[LinkDef]:
        return await self.link_store().list_links(source_id, timeout=timeout)

    async def put_config(self, name: str, values: dict[str, str], *,
                         timeout: float | None = None) -> None:
        """Create or replace a named config (links refer to it by name)."""
        await self.link_store().put_config(name, values, timeout=timeout)

    async def get_config(self, name: str, *, timeout: float | None = None
                         ) -> dict[str, str] | None:
        return await self.link_store().get_config(name, timeout=timeout)

    async def del_config(self, name: str, *, timeout: float | None = None) -> bool:
        return await self.link_store().del_config(name, timeout=timeout)

    async def list_configs(self, *, timeout: float | None = None) -> list[ConfigDef]:
        return await self.link_store().list_configs(timeout=timeout)

    # -- calls -----------------------------------------------------------------------------------

    async def describe(self, component_id: str, *, timeout: float | None = None,
                       refresh: bool = False) -> dict[str, FuncType]:
        """The component's exports and their signatures (from any replica; cached)."""
        digest = self._digest_of.get(component_id)
        if digest and not refresh and digest in self._sigs:
            return self._sigs[digest]
        return (await self._describe(component_id, timeout or self.timeout))[1]

    async def _describe(self, component_id: str, timeout: float
                        ) -> tuple[str, dict[str, FuncType]]:
        obj = await self.rpc.describe(component_id, timeout=timeout)
        try:
            digest = str(obj["digest"])
            exports = exports_from_json(obj["exports"])
        except (KeyError, TypeError, WitValueError) as exc:
            raise RemoteInvocationError(component_id, DESCRIBE, KIND_INTERNAL,
                                        f"malformed describe reply ({exc})", "?") from exc
        self._sigs[digest] = exports
        self._digest_of[component_id] = digest
        return digest, exports

    async def call(self, component_id: str, function: str, *args: Any,
                   timeout: float | None = None) -> Any:
        """Call ``function`` (``func``, ``iface#func`` …) with Python values; returns the
        result in the same value model as ``Component.call``.

        Raises:
            ArgumentError: the arguments do not fit the parameter types.
            NoSuchComponent, InvocationTimeout, RemoteInvocationError: see the module doc.
        """
        value, _ = await self._call(component_id, function, args, timeout, None)
        return value

    async def call_wave(self, component_id: str, expr: str, *cli_args: str,
                        timeout: float | None = None) -> str:
        """``trellis call`` semantics: ``expr`` is ``func(wave, args)``, or a bare function name
        with one plain word per parameter in ``cli_args``; returns the result in WAVE (``()``
        for a function without one)."""
        value, ft = await self._call(component_id, expr, None, timeout, cli_args)
        return "()" if ft.result is None else wave.format_value(value, ft.result)

    async def call_raw(self, component_id: str, operation: str, body: bytes, *,
                       timeout: float | None = None) -> RawReply:
        """One invocation with an already-encoded body; the reply as received."""
        return await self.rpc.call(component_id, operation, body,
                                   timeout=timeout or self.timeout)

    async def _call(self, component_id: str, function: str, args: Sequence[Any] | None,
                    timeout: float | None, cli_args: Sequence[str] | None
                    ) -> tuple[Any, FuncType]:
        budget = timeout or self.timeout
        started = time.monotonic()
        name, raw = (wave.parse_call(function) if args is None and "(" in function
                     else (function, None))
        digest = self._digest_of.get(component_id)
        exports = self._sigs.get(digest) if digest else None  # describe()'s cache, inline
        if exports is None:
            exports = await self.describe(component_id, timeout=budget)
        memo = (self._digest_of.get(component_id, ""), name)
        key = self._keys.get(memo) or ""
        if not key:
            key = resolve_export(exports, name, component_id)
            if len(self._keys) > 4096:
                self._keys.clear()
            self._keys[memo] = key
        ft = exports[key]
        try:
            if args is None:
                args = (wave.parse_args(raw, ft.params) if raw is not None
                        else _cli_values(ft, key, cli_args or ()))
            body = encode_args(args, ft.params)
        except WitValueError as exc:
            raise ArgumentError(f"{key}: {exc}") from None
        left = budget - (time.monotonic() - started)
        if left <= 0:
            left = 0.001
        reply = await self.rpc.call(component_id, key, body, timeout=left, function=key)
        if reply.digest and reply.digest != self._digest_of.get(component_id):
            ft = await self._signature_of(component_id, reply.digest, key, ft, budget)
        return decode_result(reply.data, ft.result), ft

    async def _signature_of(self, component_id: str, digest: str, key: str, ft: FuncType,
                            budget: float) -> FuncType:
        """The signature of ``key`` in the code with ``digest`` (another replica's version)."""
        for _ in range(3):
            if digest in self._sigs:
                break
            await self._describe(component_id, budget)
        sig = self._sigs.get(digest, {}).get(key)
        return sig or ft

    # -- plumbing --------------------------------------------------------------------------------

    async def _ctl(self, subject: str, req: BaseModel | None, operation: str, target: str,
                   timeout: float | None) -> Any:
        payload = b"" if req is None else req.model_dump_json().encode()
        wait = timeout or self.timeout
        try:
            msg = await self.nc.request(subject, payload, timeout=wait)
        except NoRespondersError:
            raise HostNotFound(target, self.lattice) from None
        except NatsTimeoutError:
            raise CtlRequestFailed(operation, target, f"no reply within {wait:g} s (the host "
                                   "may still be working on it; raise --timeout)") from None
        try:
            reply = CtlReply[Any].model_validate_json(msg.data)
        except ValidationError as exc:
            raise CtlRequestFailed(operation, target, f"malformed reply ({exc})") from None
        if not reply.success:
            raise CtlRequestFailed(operation, target, reply.message)
        return reply.response

    async def _gather(self, subject: str, timeout: float, expect: int | None,
                      quiet: float | None = None) -> list[bytes]:
        """Scatter-gather: publish once, collect replies until ``timeout`` (or ``expect``
        replies, or ``quiet`` seconds without one)."""
        nc = self.nc
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        out: list[bytes] = []
        try:
            await nc.publish(subject, b"", reply=inbox)
            deadline = time.monotonic() + timeout
            while expect is None or len(out) < expect:
                left = deadline - time.monotonic()
                if quiet is not None and out:
                    left = min(left, quiet)
                if left <= 0:
                    break
                try:
                    msg = await sub.next_msg(timeout=left)
                except NatsTimeoutError:
                    break
                if not msg.data and msg.headers and msg.headers.get("Status") == "503":
                    break  # NATS says nobody subscribes: no hosts at all, no need to wait
                out.append(msg.data)
        finally:
            await sub.unsubscribe()
        return out

    def _response(self, data: bytes, model: type[Any], operation: str) -> Any:
        try:
            reply = CtlReply[Any].model_validate_json(data)
            if reply.success:
                return model.model_validate(reply.response)
            _LOG.warning("%s: a host failed: %s", operation, reply.message)
        except ValidationError as exc:
            _LOG.warning("%s: ignoring a malformed reply: %s", operation, exc)
        return None


def _cli_values(ft: FuncType, key: str, words: Sequence[str]) -> list[Any]:
    if len(words) != len(ft.params):
        names = ", ".join(n for n, _ in ft.params) or "none"
        raise ArgumentError(f"{key} takes {len(ft.params)} argument(s) ({names}), "
                            f"got {len(words)}")
    values = []
    for (pname, pty), text in zip(ft.params, words, strict=True):
        try:
            values.append(wave.parse_cli_arg(text, pty))
        except WitValueError as exc:
            raise ArgumentError(f"argument `{pname}`: {exc}") from None
    return values
