"""examples/pipeline: component A (``front``) on one host calls component B (``upper``) on
another through a component-to-component link; B going away is a typed error, B coming back
heals the link with nothing restarted on A's side."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _lattice import Hosts, eventually
from trellis.lattice.client import LatticeClient
from trellis.lattice.errors import LinkTargetUnavailable
from trellis.lattice.links import LinkDef

pytestmark = pytest.mark.slow

ANSWER = "pipeline: HELLO WORLD (2 words)"


async def test_front_on_one_host_calls_upper_on_another(
        hosts: Hosts, lc: LatticeClient, pipeline_wasm: dict[str, Path]) -> None:
    h1 = await hosts.start("h1")
    h2 = await hosts.start("h2")
    await lc.start_component(pipeline_wasm["front"], "front", host_id="h1")
    await lc.start_component(pipeline_wasm["upper"], "upper", host_id="h2")
    await lc.put_link(LinkDef(source_id="front", target_id="upper", wit_namespace="example",
                              wit_package="pipeline", interfaces=["transform"]))

    async def composed() -> None:
        assert await lc.call("front", "run", "hello world") == ANSWER
    await eventually(composed)
    # The call ran on both hosts: A's invocation on h1, B's (through the lattice) on h2.
    assert h1.rpc.served["front"].invocations >= 1
    assert h2.rpc.served["upper"].invocations >= 1
    assert "upper" not in h1.rpc.served and "front" not in h2.rpc.served

    await lc.stop_component("upper", host_id="h2")
    started = time.monotonic()
    with pytest.raises(LinkTargetUnavailable, match="upper"):
        await lc.call("front", "run", "hello again", timeout=10)
    assert time.monotonic() - started < 5.0  # B is known gone: no waiting for the deadline

    await lc.start_component(pipeline_wasm["upper"], "upper", host_id="h2")
    await eventually(composed)
    assert await lc.call("front", "run", "one") == "pipeline: ONE (1 word)"
