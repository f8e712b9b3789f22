"""Host telemetry: invocation metrics (SDK in-memory reader), one trace from an application span
through the client to the serving host, and OTLP/console setup from ``OTEL_*`` variables."""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from _lattice import ADD, CALC_WAT, NAP, Hosts, write
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from trellis.host.config import HostConfig
from trellis.host.host import Host
from trellis.host.runtime.runtime import Runtime
from trellis.host.telemetry import configure_from_env
from trellis.lattice.client import LatticeClient
from trellis.lattice.errors import RemoteArgumentError


async def start_host(hosts: Hosts, host_id: str, **kw: Any) -> Host:
    """Like ``hosts.start`` but with Host keywords (meter/tracer providers)."""
    from _lattice import clock_imports

    runtime = Runtime(imports=clock_imports(), cache_dir=hosts.aot_dir,
                      tracer_provider=kw.get("tracer_provider"))
    hosts.runtimes.append(runtime)
    cfg = HostConfig(nats_url=hosts.nats_url, lattice=hosts.lattice, host_id=host_id,
                     cache_dir=hosts.cache_dir)
    return await hosts.stack.enter_async_context(Host(cfg, runtime, **kw))


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Metric name -> its data points, from one collection."""
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def only(pts: list[Any], **attrs: str) -> list[Any]:
    return [p for p in pts if all(p.attributes.get(k) == v for k, v in attrs.items())]


# -- metrics ---------------------------------------------------------------------------------------


async def test_invocation_metrics_per_component(hosts: Hosts, lc: LatticeClient,
                                                tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    await start_host(hosts, "m1", meter_provider=MeterProvider(metric_readers=[reader]))
    await lc.start_component(write(tmp_path, "nap.wat", NAP), "nap")
    await lc.start_component(CALC_WAT, "calc")
    assert await lc.call("nap", "nap", 1) == 1
    assert await lc.call("nap", "nap", 1) == 1
    with pytest.raises(RemoteArgumentError):
        await lc.call_raw("nap", "nap", b"\xff")
    assert await lc.call("calc", ADD, 1, 2) == 3

    nap = {"trellis.component": "nap", "trellis.host": "m1"}
    got = points(reader)
    [calls] = only(got["trellis.invocations"], **nap)
    assert calls.value == 3
    [calc_calls] = only(got["trellis.invocations"], **{"trellis.component": "calc"})
    assert calc_calls.value == 1
    [errors] = got["trellis.invocation.errors"]
    assert dict(errors.attributes) == {**nap, "error.type": "bad_request"}
    assert errors.value == 1
    [hist] = only(got["trellis.invocation.duration"], **nap)
    assert hist.count == 3 and hist.sum > 0
    assert {dict(p.attributes)["trellis.component"]
            for p in got["trellis.instances.active"]} == {"nap", "calc"}
    assert all(p.value == 0 for p in got["trellis.instances.active"])


async def test_active_instances_gauge_sees_calls_in_flight(hosts: Hosts, lc: LatticeClient,
                                                           tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    await start_host(hosts, "m2", meter_provider=MeterProvider(metric_readers=[reader]))
    await lc.start_component(write(tmp_path, "nap.wat", NAP), "nap")
    calls = [asyncio.create_task(lc.call("nap", "nap", 400)) for _ in range(2)]
    async with asyncio.timeout(5):
        while True:
            got = points(reader)
            active = [p.value for p in got.get("trellis.instances.active", [])]
            if active == [2]:
                break
            await asyncio.sleep(0.02)
    assert [p.value for p in got["trellis.invocations.in_flight"]] == [2]
    assert await asyncio.gather(*calls) == [400, 400]
    got = points(reader)
    assert [p.value for p in got["trellis.instances.active"]] == [0]
    assert [p.value for p in got["trellis.invocations.in_flight"]] == [0]


async def test_hosts_sharing_a_meter_provider_are_all_observed(hosts: Hosts, lc: LatticeClient,
                                                                 tmp_path: Path) -> None:
    """One provider per process is the norm (the global one); a host that stopped leaves it
    and one started after it is observed."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    first = await start_host(hosts, "s1", meter_provider=provider)
    await lc.start_component(CALC_WAT, "calc", host_id="s1")
    assert await lc.call("calc", ADD, 1, 1) == 2
    first.stop()
    await asyncio.wait_for(first.run(), 10)
    await start_host(hosts, "s2", meter_provider=provider)
    await start_host(hosts, "s3", meter_provider=provider)
    await lc.start_component(CALC_WAT, "calc", host_id="s2")
    await lc.start_component(write(tmp_path, "nap.wat", NAP), "nap", host_id="s3")
    assert await lc.call("calc", ADD, 1, 1) == 2
    assert await lc.call("nap", "nap", 1) == 1
    got = points(reader)
    assert sorted((p.attributes["trellis.host"], p.attributes["trellis.component"], p.value)
                  for p in got["trellis.invocations"]) == [("s2", "calc", 1), ("s3", "nap", 1)]
    assert sorted(p.attributes["trellis.host"] for p in got["trellis.instances.active"]) \
        == ["s2", "s3"]


# -- traces ----------------------------------------------------------------------------------------


async def test_application_span_client_and_host_are_one_trace(hosts: Hosts, nats_url: str,
                                                              lattice: str) -> None:
    """An app span around the call, the client's call span and the host's invoke span
    (another host's connection, context carried in NATS headers) share one trace id."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await start_host(hosts, "t1", tracer_provider=provider)
    async with LatticeClient(nats_url, lattice, tracer_provider=provider) as client:
        await client.start_component(CALC_WAT, "calc")
        with provider.get_tracer("app").start_as_current_span("checkout") as app:
            assert await client.call("calc", ADD, 2, 3) == 5
    spans = {s.name: s for s in exporter.get_finished_spans()}
    call, invoke = spans[f"call calc/{ADD}"], spans[f"invoke calc/{ADD}"]
    trace_id = app.get_span_context().trace_id
    assert call.context.trace_id == invoke.context.trace_id == trace_id
    assert call.parent is not None and call.parent.span_id == app.get_span_context().span_id
    assert invoke.parent is not None and invoke.parent.is_remote
    assert invoke.attributes is not None and invoke.attributes["trellis.outcome"] == "ok"


# -- configure_from_env ----------------------------------------------------------------------------


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Capture what configure_from_env installs instead of replacing the process globals
    (which OpenTelemetry lets a process set only once)."""
    got: dict[str, Any] = {}
    monkeypatch.setattr(trace, "set_tracer_provider", lambda p: got.__setitem__("traces", p))
    monkeypatch.setattr(metrics, "set_meter_provider", lambda p: got.__setitem__("metrics", p))
    return got


def test_nothing_configured_without_otel_variables(installed: dict[str, Any]) -> None:
    setup = configure_from_env({})
    assert (setup.traces, setup.metrics, setup.notes, installed) == (None, None, [], {})
    setup = configure_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                "OTEL_SDK_DISABLED": "true"})
    assert (setup.traces, setup.metrics, installed) == (None, None, {})


def test_missing_otlp_package_degrades_with_a_clear_message(
        installed: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    for signal in ("trace", "metric"):  # as if the package were not installed
        monkeypatch.setitem(sys.modules,
                            f"opentelemetry.exporter.otlp.proto.http.{signal}_exporter", None)
    with caplog.at_level(logging.WARNING, "trellis.host.telemetry"):
        setup = configure_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert (setup.traces, setup.metrics, installed) == (None, None, {})
    assert len(setup.notes) == 2
    assert all("opentelemetry-exporter-otlp-proto-http is not installed" in n
               for n in setup.notes)
    assert "pip install opentelemetry-exporter-otlp-proto-http" in caplog.text


def test_otlp_endpoint_installs_batching_pipelines(installed: dict[str, Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring, with the OTLP exporter classes stood in for by in-memory ones."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    spans = InMemorySpanExporter()
    exported: list[Any] = []

    class FakeMetricExporter(MetricExporter):
        def __init__(self) -> None:
            super().__init__(preferred_temporality={}, preferred_aggregation={})

        def export(self, metrics_data: Any, timeout_millis: float = 0, **kw: Any
                   ) -> MetricExportResult:
            exported.append(metrics_data)
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 0) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 0, **kw: Any) -> None:
            pass

    base = "opentelemetry.exporter.otlp.proto.http"
    for name, attr, value in ((f"{base}.trace_exporter", "OTLPSpanExporter", lambda: spans),
                              (f"{base}.metric_exporter", "OTLPMetricExporter",
                               FakeMetricExporter)):
        mod = types.ModuleType(name)
        setattr(mod, attr, value)
        monkeypatch.setitem(sys.modules, name, mod)
    setup = configure_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
                                "OTEL_SERVICE_NAME": "edge-7"})
    assert (setup.traces, setup.metrics) == ("otlp/http/protobuf", "otlp/http/protobuf")
    tp, mp = installed["traces"], installed["metrics"]
    with tp.get_tracer("t").start_as_current_span("s"):
        pass
    mp.get_meter("m").create_counter("c").add(1)
    setup.shutdown()  # flushes the batch processor and the periodic reader
    [span] = spans.get_finished_spans()
    assert span.resource.attributes["service.name"] == "edge-7"
    assert exported


def test_console_and_none_exporters(installed: dict[str, Any]) -> None:
    setup = configure_from_env({"OTEL_TRACES_EXPORTER": "console",
                                "OTEL_METRICS_EXPORTER": "none"})
    assert (setup.traces, setup.metrics) == ("console", None)
    assert set(installed) == {"traces"}
    setup.shutdown()
    setup = configure_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert setup.traces is None and "zipkin" in setup.notes[0]
