"""``trellis spy [COMPONENT_ID]``: a live stream of the invocations hosts serve.

Hosts publish one ``SpyRecord`` per invocation on ``trellis.spy.{lattice}.{component}`` while a
spy holds a lease (``spy.watch``, renewed every ``LEASE / 3`` seconds; ``arm_spies``). This
command subscribes, arms the hosts and prints the records. Core NATS, no history: it says on
stderr when it is listening, and how many hosts confirmed (tests wait for that line). A host
that starts later joins at the next renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from datetime import datetime
from typing import Any

import click
from nats.aio.msg import Msg
from pydantic import ValidationError

from ..lattice import subjects
from ..lattice.connection import flush
from ..lattice.models import SpyRecord
from .cli_lattice import LATTICE_OPT, NATS_URL_OPT, _client, _run
from .telemetry import arm_spies

READY = "spying on"
"""Start of the stderr line printed once the subscription is live."""
LEASE = 15.0
"""Seconds hosts keep publishing after a spy's last renewal (a killed spy costs that long)."""
EXIT_SHORT = 124
"""``--count N --timeout T``: fewer than N records within T seconds (as a deadline)."""


@click.command("spy")
@click.argument("component_id", required=False)
@NATS_URL_OPT
@LATTICE_OPT
@click.option("--json", "as_json", is_flag=True, help="Print each raw record (JSON lines).")
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many records.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this many seconds; with --count, fewer records is an error "
                   f"(exit {EXIT_SHORT}).")
def spy(component_id: str | None, nats_url: str, lattice: str, as_json: bool,
        count: int | None, timeout: float | None) -> None:
    """Watch invocations of COMPONENT_ID (default: every component) live, until Ctrl-C.

    One line per invocation a host served: time, component, function, outcome (ok or the
    error kind), host-side duration, host.
    """
    if component_id is not None:
        try:
            subjects.check_token(component_id, "component id")
        except subjects.SubjectError as exc:
            raise click.BadParameter(str(exc), param_hint="COMPONENT_ID") from None
    subject = (subjects.spy(lattice, component_id) if component_id
               else subjects.spy_all(lattice))
    seen, timed_out = _run(lambda: _spy(nats_url, lattice, subject, as_json, count, timeout))
    if count is not None and seen < count and timed_out:
        click.echo(f"spy: {seen} of {count} record(s) within {timeout}s", err=True)
        sys.exit(EXIT_SHORT)


async def _spy(nats_url: str, lattice: str, subject: str, as_json: bool, count: int | None,
               timeout: float | None) -> tuple[int, bool]:
    """Print records until ``count``, ``timeout`` or SIGINT/SIGTERM; the number printed and
    whether the timeout ended it."""
    done = asyncio.Event()
    seen = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal seen
        if done.is_set():
            return
        try:
            line = msg.data.decode() if as_json else _line(SpyRecord.model_validate_json(msg.data))
        except (ValidationError, UnicodeDecodeError) as exc:
            click.echo(f"spy: unreadable record on {msg.subject}: {exc}", err=True)
            return
        click.echo(line)
        seen += 1
        if count is not None and seen >= count:
            done.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, done.set)  # Ctrl-C ends the stream: exit 0
    async with _client(nats_url, lattice, 5.0) as lc:
        sub = await lc.nc.subscribe(subject, cb=on_msg)
        await flush(lc.nc)
        heard = await arm_spies(lc.nc, lattice, LEASE)
        click.echo(f"{READY} {subject}, {len(heard)} host(s) (Ctrl-C to stop)", err=True)
        renew = asyncio.create_task(_renew(lc.nc, lattice))
        timed_out = False
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            timed_out = True
        finally:
            done.set()
            renew.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    sys.stdout.flush()
    return seen, timed_out


async def _renew(nc: Any, lattice: str) -> None:
    while True:
        await asyncio.sleep(LEASE / 3)
        try:
            await arm_spies(nc, lattice, LEASE, wait=0)
        except Exception as exc:  # reconnecting: the next renewal will do
            click.echo(f"spy: cannot renew the watch: {exc}", err=True)


def _line(r: SpyRecord) -> str:
    at = datetime.fromtimestamp(r.time).strftime("%H:%M:%S.%f")[:-3]
    return (f"{at}  {r.component:<16} {r.function:<28} {r.outcome:<10} "
            f"{r.duration_ms:>9.2f}ms  {r.host}")


__all__ = ["spy"]
