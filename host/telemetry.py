"""What a host tells the world about the invocations it serves: metrics, the spy stream, OTLP.

``InvocationTelemetry.record`` runs once per served invocation (``RpcServer._handle``), after
the reply is on its way, and is kept cheap because it is on every call (a plain function, no
coroutine; the spy record is a separate ``publish_spy`` the server awaits only while
``spying()``):

* **metrics** through an injectable ``MeterProvider`` (the global one by default, a no-op until
  an SDK is installed), all with ``trellis.component`` and ``trellis.host``:
  ``trellis.invocations`` and ``trellis.invocation.errors`` (by ``error.type``, the reply's
  error kind) are observable counters over plain ints — an SDK ``Counter.add`` costs ~10 µs,
  an int increment 50 ns; the ``trellis.invocation.duration`` histogram (ms) is the one SDK call
  per invocation; the gauges ``trellis.instances.active`` and ``trellis.invocations.in_flight``
  are read only at collection time.
* **the spy stream**: a small JSON ``SpyRecord`` on ``trellis.spy.{lattice}.{component}``
  (``trellis spy``), only while a spy holds a lease. Encoding and publishing a record costs
  ~10 µs, so hosts skip it unless a ``spy.watch`` broadcast (``arm_spies``) arrived within its
  lease; spies renew every few seconds, so a host that starts while a spy runs joins the
  stream at the next renewal. Publishing is fire-and-forget: nats-py buffers it and its flusher
  writes it with the replies.

``configure_from_env()`` installs global OTLP (or console) trace and metric pipelines from the
standard ``OTEL_*`` variables, for the daemons (``trellis host``, ``trellis up``).

Error handling: nothing here raises into the serving path; a failed publish (disconnected,
draining) loses that record and is logged at debug level.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from pydantic import ValidationError

from ..lattice import subjects
from ..lattice.models import CtlReply, SpyWatch

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from .rpc import Served

_LOG = logging.getLogger(__name__)
_str = encode_basestring_ascii
"""A JSON string literal, quotes included (the C encoder: ~0.2 µs)."""

OK = "ok"


class InvocationTelemetry:
    """Metrics and spy records for the invocations one host serves.

    Args:
        nc: the host's connection (spy records and watch replies go out on it).
        lattice, host_id: where the records go and what they say served them.
        served: the host's live ``component_id -> Served`` map, read by the gauges.
        meter_provider: where metrics go (the global provider when ``None``).
        spy: answer spies at all (``False``: never publish records).
    """

    def __init__(self, nc: Client, lattice: str, host_id: str, served: Mapping[str, Served],
                 meter_provider: MeterProvider | None = None, *, spy: bool = True) -> None:
        self.nc, self.lattice, self.host_id = nc, lattice, host_id
        self.spy = spy
        self.spy_until = 0.0
        """``time.monotonic()`` until which records are published (a spy's lease)."""
        self._served = served
        self._sub: Subscription | None = None
        self._attrs: dict[str, dict[str, str]] = {}
        self._calls: dict[str, int] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._subjects: dict[str, str] = {}
        instruments = _Instruments.of(meter_provider or metrics.get_meter_provider())
        instruments.hosts.add(self)
        self.duration = instruments.duration

    async def start(self) -> None:
        """Listen for spies (the caller flushes)."""
        if self.spy:
            self._sub = await self.nc.subscribe(subjects.spy_watch(self.lattice),
                                                cb=self._on_watch)

    def attributes(self, component_id: str) -> dict[str, str]:
        """The metric attributes of a component, built once: the SDK hashes the dict on every
        ``record`` but does not copy it."""
        attrs = self._attrs.get(component_id)
        if attrs is None:
            attrs = self._attrs[component_id] = {"trellis.component": component_id,
                                                 "trellis.host": self.host_id}
        return attrs

    def record(self, component_id: str, outcome: str, started: float) -> float:
        """Count one served invocation and record its duration; ``started`` is its
        ``time.perf_counter()``. Returns the duration in milliseconds. Never raises."""
        duration_ms = (time.perf_counter() - started) * 1e3
        calls = self._calls
        calls[component_id] = calls.get(component_id, 0) + 1
        if outcome != OK:
            key = (component_id, outcome)
            self._errors[key] = self._errors.get(key, 0) + 1
        attrs = self._attrs.get(component_id) or self.attributes(component_id)
        self.duration.record(duration_ms, attrs)
        return duration_ms

    def spying(self) -> bool:
        """Whether a spy's lease is running (then ``publish_spy`` each invocation)."""
        return bool(self.spy_until) and time.monotonic() < self.spy_until

    async def publish_spy(self, component_id: str, function: str, outcome: str,
                          duration_ms: float, caller: str, invocation_id: str,
                          traceparent: str | None) -> None:
        """One spy record (fire-and-forget: buffered, written with the replies). Never raises."""
        subject = self._subjects.get(component_id)
        if subject is None:
            subject = self._subjects[component_id] = subjects.spy(self.lattice, component_id)
        # traceparent: 00-<32 hex trace id>-<16 hex span id>-<flags>
        trace_id = traceparent[3:35] if traceparent and len(traceparent) >= 35 else ""
        # Formatted by hand: 4x cheaper than json.dumps of a dict. Ids and kinds are NATS tokens
        # or hex; what came from the wire (function, caller, invocation id) is JSON-escaped.
        body = (f'{{"time":{time.time():.6f},"component":"{component_id}",'
                f'"function":{_str(function)},"outcome":"{outcome}",'
                f'"duration_ms":{duration_ms:.3f},"host":"{self.host_id}",'
                f'"caller":{_str(caller)},"invocation_id":{_str(invocation_id)},'
                f'"trace_id":{_str(trace_id)}}}').encode()
        try:
            await self.nc.publish(subject, body)
        except Exception as exc:  # disconnected with a full buffer, draining, closed
            _LOG.debug("spy record for %s dropped: %s", invocation_id, exc)

    async def _on_watch(self, msg: Msg) -> None:
        try:
            watch = SpyWatch.model_validate_json(msg.data or b"{}")
        except ValidationError as exc:
            reply = CtlReply.fail(f"bad spy.watch request: {exc}")
        else:
            self.spy_until = max(self.spy_until, time.monotonic() + watch.lease)
            reply = CtlReply.ok({"host_id": self.host_id})
        if msg.reply:
            try:
                await self.nc.publish(msg.reply, reply.model_dump_json().encode())
            except Exception as exc:
                _LOG.debug("spy.watch reply: %s", exc)

    def observe_calls(self) -> Iterable[Observation]:
        return [Observation(n, self.attributes(cid)) for cid, n in list(self._calls.items())]

    def observe_errors(self) -> Iterable[Observation]:
        return [Observation(n, {**self.attributes(cid), "error.type": kind})
                for (cid, kind), n in list(self._errors.items())]

    def observe_served(self, value: Callable[[Served], int]) -> Iterable[Observation]:
        return [Observation(value(s), self.attributes(cid))
                for cid, s in list(self._served.items())]


class _Instruments:
    """The instruments of one ``MeterProvider``, shared by every host using it.

    The SDK hands a second registration of a name the first instrument and drops its
    callbacks, so per-host instruments would leave all but the first host of a process
    unobserved; instead the callbacks here walk the live hosts."""

    _by_provider: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, provider: MeterProvider) -> _Instruments:
        found = cls._by_provider.get(provider)
        if found is None:
            found = cls._by_provider[provider] = cls(provider)
        return found

    def __init__(self, provider: MeterProvider) -> None:
        self.hosts: weakref.WeakSet[InvocationTelemetry] = weakref.WeakSet()
        meter = provider.get_meter("trellis.host")
        meter.create_observable_counter(
            "trellis.invocations", [self._each(InvocationTelemetry.observe_calls)],
            unit="{invocation}", description="Invocations served by this host.")
        meter.create_observable_counter(
            "trellis.invocation.errors", [self._each(InvocationTelemetry.observe_errors)],
            unit="{invocation}",
            description="Invocations that failed, by error.type (the reply's error kind).")
        self.duration = meter.create_histogram(
            "trellis.invocation.duration", unit="ms",
            description="Host-side invocation time, request received to reply sent.")
        meter.create_observable_gauge(
            "trellis.instances.active",
            [self._each(lambda t: t.observe_served(lambda s: s.component.instances.stats.active))],
            unit="{instance}", description="Component instances running a call right now.")
        meter.create_observable_gauge(
            "trellis.invocations.in_flight",
            [self._each(lambda t: t.observe_served(lambda s: s.active))], unit="{invocation}",
            description="Invocations received and not yet answered (running or waiting for an "
                        "instance).")

    def _each(self, observe: Callable[[InvocationTelemetry], Iterable[Observation]]
              ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            # A stopped host's series end with it (it may live on until collected).
            return [o for host in list(self.hosts) if not host.nc.is_closed
                    for o in observe(host)]

        return callback


async def arm_spies(nc: Client, lattice: str, lease: float = 15.0, wait: float = 0.25
                    ) -> list[str]:
    """Ask every host of ``lattice`` to publish spy records for ``lease`` seconds; the ids of
    the hosts that confirmed within ``wait`` seconds (0: do not wait). Subscribe to the
    records first, and renew (every ``lease / 3``) for as long as you listen."""
    body = SpyWatch(lease=lease).model_dump_json().encode()
    if wait <= 0:
        await nc.publish(subjects.spy_watch(lattice), body)
        return []
    inbox = nc.new_inbox()
    heard: list[str] = []

    async def on_reply(msg: Msg) -> None:
        try:
            reply = CtlReply[dict[str, str]].model_validate_json(msg.data)
        except ValidationError:
            return
        if reply.success and reply.response:
            heard.append(reply.response["host_id"])

    sub = await nc.subscribe(inbox, cb=on_reply)
    try:
        await nc.publish(subjects.spy_watch(lattice), body, reply=inbox)
        await asyncio.sleep(wait)
    finally:
        await sub.unsubscribe()
    return heard


# -- OTLP from the environment -----------------------------------------------------------------

_EXPORTERS = {
    # (signal, protocol) -> (module, class)
    ("traces", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                                  "OTLPSpanExporter"),
    ("traces", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
                         "OTLPSpanExporter"),
    ("metrics", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http.metric_exporter",
                                   "OTLPMetricExporter"),
    ("metrics", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
                          "OTLPMetricExporter"),
}
_PACKAGES = {"http/protobuf": "opentelemetry-exporter-otlp-proto-http",
             "grpc": "opentelemetry-exporter-otlp-proto-grpc"}


@dataclass
class TelemetrySetup:
    """What ``configure_from_env`` installed; ``shutdown()`` flushes and stops the exporters
    (call it when the daemon exits, or the last batch of spans is lost)."""

    traces: str | None = None
    """The trace exporter installed (``otlp``, ``console``), or ``None``."""
    metrics: str | None = None
    notes: list[str] = field(default_factory=list)
    """Why a signal was not configured (missing package, unsupported exporter)."""
    _providers: list[Any] = field(default_factory=list, repr=False)

    def shutdown(self) -> None:
        for provider in self._providers:
            try:
                provider.shutdown()
            except Exception as exc:  # an unreachable collector must not fail the exit
                _LOG.warning("telemetry shutdown: %s", exc)


def configure_from_env(env: Mapping[str, str] | None = None, *,
                       service_name: str = "trellis-host") -> TelemetrySetup:
    """Install global trace and metric pipelines as the standard ``OTEL_*`` variables ask.

    Does nothing unless asked: a signal is configured when ``OTEL_{TRACES,METRICS}_EXPORTER``
    names an exporter (``otlp``, ``console``; ``none`` turns it off) or, for ``otlp``, when an
    ``OTEL_EXPORTER_OTLP[_{TRACES,METRICS}]_ENDPOINT`` is set. ``OTEL_SDK_DISABLED=true`` wins.
    The protocol is ``OTEL_EXPORTER_OTLP[_{SIGNAL}]_PROTOCOL`` (``http/protobuf`` by default,
    or ``grpc``); endpoint, headers, timeouts, ``OTEL_METRIC_EXPORT_INTERVAL`` and the
    resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``) are read by the SDK itself.

    When the exporter package is not installed the signal is skipped with a warning naming
    the package: a host without telemetry is better than a host that does not start.
    """
    env = os.environ if env is None else env
    setup = TelemetrySetup()
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return setup
    from opentelemetry.sdk.resources import Resource

    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME from os.environ;
    # attributes given here win, so name the service only when the environment does not.
    if env.get("OTEL_SERVICE_NAME"):
        attrs = {"service.name": env["OTEL_SERVICE_NAME"]}
    elif "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attrs = {}
    else:
        attrs = {"service.name": service_name}
    resource = Resource.create(attrs)
    for signal in ("traces", "metrics"):
        exporter = _exporter(signal, env, setup)
        if exporter is None:
            continue
        name, instance = exporter
        if signal == "traces":
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            tp = TracerProvider(resource=resource)
            tp.add_span_processor(BatchSpanProcessor(instance))
            trace.set_tracer_provider(tp)
            setup.traces = name
            setup._providers.append(tp)
        else:
            from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            mp = SdkMeterProvider(resource=resource,
                                  metric_readers=[PeriodicExportingMetricReader(instance)])
            metrics.set_meter_provider(mp)
            setup.metrics = name
            setup._providers.append(mp)
        _LOG.info("telemetry: %s exported with %s", signal, name)
    return setup


def _exporter(signal: str, env: Mapping[str, str], setup: TelemetrySetup
              ) -> tuple[str, Any] | None:
    upper = signal.upper()
    chosen = env.get(f"OTEL_{upper}_EXPORTER", "").strip().lower()
    if not chosen:
        endpoint = env.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT") \
            or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        chosen = "otlp" if endpoint else "none"
    chosen = chosen.split(",")[0].strip()  # several exporters: the first (one pipeline each)
    if chosen == "none":
        return None
    if chosen == "console":
        if signal == "traces":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter
            return chosen, ConsoleSpanExporter()
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        return chosen, ConsoleMetricExporter()
    if chosen != "otlp":
        _note(setup, f"OTEL_{upper}_EXPORTER={chosen!r} is not supported (use otlp, console "
                     f"or none); {signal} are not exported")
        return None
    protocol = (env.get(f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    if (signal, protocol) not in _EXPORTERS:
        _note(setup, f"OTLP protocol {protocol!r} is not supported (http/protobuf or grpc); "
                     f"{signal} are not exported")
        return None
    module, cls = _EXPORTERS[signal, protocol]
    try:
        mod = __import__(module, fromlist=[cls])
    except ImportError:
        _note(setup, f"OTLP {signal} requested but {_PACKAGES[protocol]} is not installed "
                     f"(pip install {_PACKAGES[protocol]}); {signal} are not exported")
        return None
    return f"otlp/{protocol}", getattr(mod, cls)()


def _note(setup: TelemetrySetup, message: str) -> None:
    setup.notes.append(message)
    _LOG.warning("telemetry: %s", message)


__all__ = ["InvocationTelemetry", "TelemetrySetup", "arm_spies", "configure_from_env"]
