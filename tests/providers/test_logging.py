"""The ``logging`` provider: wasi:logging calls become Python log records per component."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from _wat import WASI_LOGGING
from trellis.host.runtime.imports import HostImports
from trellis.host.runtime.runtime import Runtime
from trellis.providers.logging import TRACE, ComponentLog, LoggingProvider
from trellis.providers.registry import provider_class
from trellis.providers.sdk import Link, ProviderContext

LEVELS = ["trace", "debug", "info", "warn", "error", "critical"]


def _link(source: str) -> Link:
    return Link(source=source, target="logging", namespace="wasi", package="logging",
                interfaces=("logging",))


async def test_levels_logger_and_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    provider = provider_class("logging")()
    assert isinstance(provider, LoggingProvider)
    await provider.start(ProviderContext("logging"))
    impl = provider.implementation("logging", _link("orders-7"))
    assert isinstance(impl, ComponentLog)
    caplog.set_level(TRACE, logger="trellis.component")
    for level in LEVELS:
        impl.log(level, "db", f"at {level}")
    impl.log("info", "", "no context")
    impl.log("verbose", "x", "a level from a newer WIT")
    records = [r for r in caplog.records if r.name == "trellis.component.orders-7"]
    assert [r.levelno for r in records] == [
        TRACE, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL,
        logging.INFO, logging.INFO]
    assert records[0].levelname == "TRACE"
    assert records[3].getMessage() == "[db] at warn"
    assert records[6].getMessage() == "no context"
    first = records[0]
    assert (first.component_id, first.log_context, first.wasi_level) == (  # type: ignore[attr-defined]
        "orders-7", "db", "trace")


async def test_logger_levels_filter_per_component(caplog: pytest.LogCaptureFixture) -> None:
    provider = LoggingProvider()
    quiet, loud = (provider.implementation("logging", _link(s)) for s in ("quiet", "loud"))
    caplog.set_level(logging.ERROR, logger="trellis.component.quiet")
    caplog.set_level(logging.DEBUG, logger="trellis.component.loud")  # last: sets the handler
    quiet.log("warn", "", "dropped")
    loud.log("debug", "", "kept")
    assert [r.getMessage() for r in caplog.records] == ["kept"]


async def test_guest_logs_through_wasmtime(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(TRACE, logger="trellis.component")
    imports = HostImports()
    imports.register("wasi:logging/logging",
                     LoggingProvider().implementation("logging", _link("wat-guest")))
    async with Runtime(imports=imports, cache_dir=tmp_path) as rt:
        comp = rt.load(WASI_LOGGING.encode())
        for index, level in enumerate(LEVELS):
            await comp.invoke("log", index, "guest", f"hello at {level} ✓")
    records = [r for r in caplog.records if r.name == "trellis.component.wat-guest"]
    assert [r.wasi_level for r in records] == LEVELS  # type: ignore[attr-defined]
    assert records[-1].levelno == logging.CRITICAL
    assert records[2].getMessage() == "[guest] hello at info ✓"
