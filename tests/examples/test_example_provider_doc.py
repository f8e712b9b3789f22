"""docs/providers.md: the "new provider in about 30 lines" code block, run exactly as written.

The block is extracted from the doc, executed, saved as ``greeter_provider.py`` on the path and
started by name (``greeter_provider:Greeter``), in-process and standalone; a WAT component that
imports ``example:greet/greeting`` calls it through a link.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _examples import REPO
from _lattice import Hosts, eventually, write
from trellis.lattice.client import LatticeClient
from trellis.lattice.links import LinkDef
from trellis.providers.sdk import Provider

DOC = REPO / "docs" / "providers.md"
HEADING = "## A new provider in about 30 lines"
MODULE = "greeter_provider"

# Imports example:greet/greeting@0.1.0 { greet: func(name: string) -> string } and exports
# hello(name) = greet(name).
HELLO = r"""
(component
  (import "example:greet/greeting@0.1.0" (instance $g
    (export "greet" (func (param "name" string) (result string)))))
  (core module $alloc
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    (func (export "cabi_realloc")
      (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $ptr i32)
      (local.set $ptr
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (global.set $next (i32.add (local.get $ptr) (local.get $size)))
      (local.get $ptr)))
  (core instance $a (instantiate $alloc))
  (alias core export $a "memory" (core memory $mem))
  (alias core export $a "cabi_realloc" (core func $realloc))
  (core func $greet (canon lower (func $g "greet") (memory $mem) (realloc $realloc)))
  (core module $m
    (import "h" "greet" (func $greet (param i32 i32 i32)))
    ;; the import writes its string (ptr, len) at 16; the export returns that pair
    (func (export "hello") (param i32 i32) (result i32)
      (call $greet (local.get 0) (local.get 1) (i32.const 16))
      (i32.const 16)))
  (core instance $i (instantiate $m (with "h" (instance (export "greet" (func $greet))))))
  (func (export "hello") (param "name" string) (result string)
    (canon lift (core func $i "hello") (memory $mem) (realloc $realloc)))
)
"""


def doc_provider_code() -> str:
    """The first Python code block after the heading, verbatim."""
    text = DOC.read_text()
    assert HEADING in text, f"{DOC} lost its heading {HEADING!r}"
    match = re.search(r"```python\n(.*?)```", text[text.index(HEADING):], re.S)
    assert match, f"no python code block under {HEADING!r} in {DOC}"
    return match.group(1)


@pytest.fixture
def provider_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The doc's code as ``greeter_provider.py``, importable here and in child processes."""
    src = tmp_path / "doc"
    src.mkdir()
    (src / f"{MODULE}.py").write_text(doc_provider_code())
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p))
    yield f"{MODULE}:Greeter"
    sys.modules.pop(MODULE, None)


def test_the_doc_provider_is_about_30_lines() -> None:
    code = doc_provider_code()
    namespace: dict[str, object] = {"__name__": MODULE}
    exec(compile(code, f"{DOC}:{MODULE}", "exec"), namespace)
    greeter = namespace["Greeter"]
    assert isinstance(greeter, type) and issubclass(greeter, Provider)
    assert len(code.strip().splitlines()) <= 40


def greet_link(target: str, config: str | None = None) -> LinkDef:
    return LinkDef(source_id="hello", target_id=target, wit_namespace="example",
                   wit_package="greet", interfaces=["greeting"], target_config=config)


async def test_the_doc_provider_serves_a_component_in_process_and_standalone(
        hosts: Hosts, lc: LatticeClient, tmp_path: Path, provider_module: str) -> None:
    await hosts.start("doc-host")
    await lc.put_config("greeter-defaults", {"greeting": "Hello"})
    await lc.put_config("evening", {"greeting": "Good evening"})
    await lc.start_provider(provider_module, "greeter", host_id="doc-host",
                            config="greeter-defaults")
    await lc.start_component(write(tmp_path, "hello.wat", HELLO), "hello", host_id="doc-host")

    await lc.put_link(greet_link("greeter"))

    async def greets(expected: str) -> None:
        assert await lc.call("hello", "hello", "Ada") == expected
    await eventually(lambda: greets("Hello, Ada!"))
    await lc.put_link(greet_link("greeter", config="evening"))  # link config wins
    await eventually(lambda: greets("Good evening, Ada!"))

    await lc.put_config("morning", {"greeting": "Good morning"})
    info = await lc.start_provider(provider_module, "greeter-alone", host_id="doc-host",
                                   config="morning", standalone=True)
    assert info.mode == "standalone" and info.pid and info.pid != os.getpid()
    await lc.put_link(greet_link("greeter-alone"))  # now served by the child process
    await eventually(lambda: greets("Good morning, Ada!"), timeout=30)
    inv = await lc.get_inventory("doc-host")
    assert {(p.provider_id, p.mode) for p in inv.providers} == {
        ("greeter", "in-process"), ("greeter-alone", "standalone")}
