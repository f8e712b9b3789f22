"""Connecting to the lattice's NATS: one place for URLs, credentials, TLS and reconnect policy.

Hosts, the CLI and ``LatticeClient`` connect the same way::

    nc = await connect(NatsOptions(url="nats://10.0.0.5:4222", credentials_file=Path("h.creds")))

Policy: the first connection is retried every ``reconnect_wait`` seconds until
``connect_timeout`` (a host started before its NATS server waits for it; an authorization
error ends it at once); once connected, the client reconnects forever
(``max_reconnect_attempts=-1``) and resubscribes, so a restarted server never needs a process
restart.
Failures become ``LatticeUnavailableError`` naming the URL (credentials stripped) with the
nats-py error in ``__cause__``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from .errors import LatticeUnavailableError

_LOG = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class NatsOptions:
    """How to reach NATS. ``url`` may list several servers separated by commas."""

    url: str = "nats://127.0.0.1:4222"
    credentials_file: Path | None = None
    """A ``.creds`` file (JWT + nkey seed); needs the ``nkeys`` package."""
    nkey_seed_file: Path | None = None
    """A file holding an nkey seed (``SU…``); needs the ``nkeys`` package."""
    token: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    name: str | None = None
    """Connection name shown in NATS monitoring."""
    connect_timeout: float = 10.0
    """How long the first connection is retried before giving up."""
    reconnect_wait: float = 1.0
    """Pause between reconnect attempts to one server once connected."""

    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]


def redact(url: str) -> str:
    """``url`` without user/password/token, for messages and inventories."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        if parts.username or parts.password:
            host = parts.hostname or ""
            netloc = f"{host}:{parts.port}" if parts.port else host
            one = urlunsplit(parts._replace(netloc=netloc))
        out.append(one.strip())
    return ",".join(out)


def tls_context(opts: NatsOptions) -> ssl.SSLContext | None:
    """An SSL context from the TLS options, or ``None`` when none is set (a ``tls://`` URL
    then uses nats-py's default context)."""
    if not (opts.tls_ca or opts.tls_cert or opts.tls_key):
        return None
    if bool(opts.tls_cert) != bool(opts.tls_key):
        raise LatticeUnavailableError(
            redact(opts.url), "tls_cert and tls_key must be given together (client certificate)"
        )
    ctx = ssl.create_default_context(cafile=str(opts.tls_ca) if opts.tls_ca else None)
    if opts.tls_cert and opts.tls_key:
        ctx.load_cert_chain(str(opts.tls_cert), str(opts.tls_key))
    return ctx


def _check_files(opts: NatsOptions) -> None:
    url = redact(opts.url)
    for what, path in (("credentials file", opts.credentials_file),
                       ("nkey seed file", opts.nkey_seed_file), ("TLS CA", opts.tls_ca),
                       ("TLS certificate", opts.tls_cert), ("TLS key", opts.tls_key)):
        if path is not None and not Path(path).is_file():
            raise LatticeUnavailableError(url, f"{what} {path} does not exist")
    if opts.credentials_file or opts.nkey_seed_file:
        try:
            import nkeys  # noqa: F401
        except ImportError:
            raise LatticeUnavailableError(
                url, "credentials and nkey seeds need the `nkeys` package (pip install nkeys)"
            ) from None


async def connect(
    opts: NatsOptions,
    *,
    disconnected_cb: Callback | None = None,
    reconnected_cb: Callback | None = None,
) -> Client:
    """Connect, retrying the first connection with backoff until ``opts.connect_timeout``.

    Raises:
        LatticeUnavailableError: no server reachable in time, authentication refused, or a
            credentials/TLS file missing.
    """
    _check_files(opts)
    url = redact(opts.url)
    kwargs: dict[str, Any] = {
        "servers": opts.servers(),
        "name": opts.name,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": opts.reconnect_wait,
        "connect_timeout": max(1, min(5, int(opts.connect_timeout))),
    }
    if opts.credentials_file:
        kwargs["user_credentials"] = str(opts.credentials_file)
    if opts.nkey_seed_file:
        kwargs["nkeys_seed"] = str(opts.nkey_seed_file)
    if opts.token:
        kwargs["token"] = opts.token
    ctx = tls_context(opts)
    if ctx is not None:
        kwargs["tls"] = ctx
    # With reconnects unbounded nats-py retries the *first* connection forever too; we bound
    # it here, and stop at once on an authorization error instead of retrying it.
    last: list[BaseException] = []
    refused = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        last[:] = [exc]
        if _is_auth_error(exc):
            refused.set()
        await _log_error(exc)

    nc = Client()

    async def on_disconnect() -> None:
        if nc.is_closed or nc.is_draining:
            return  # our own close, not an outage
        _LOG.warning("NATS: disconnected from %s; reconnecting", url)
        if disconnected_cb is not None:
            await disconnected_cb()

    async def on_reconnect() -> None:
        _LOG.info("NATS: reconnected to %s", _server(nc))
        if reconnected_cb is not None:
            await reconnected_cb()

    kwargs.update(error_cb=on_error, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect)
    attempt = asyncio.ensure_future(nc.connect(**kwargs))
    stop = asyncio.ensure_future(refused.wait())
    try:
        await asyncio.wait({attempt, stop}, timeout=opts.connect_timeout,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if attempt.done() and attempt.exception() is None:
        return nc
    attempt.cancel()
    with contextlib.suppress(BaseException):
        await attempt
    with contextlib.suppress(Exception):
        await nc.close()
    cause = last[0] if last else (attempt.exception() if not attempt.cancelled() else None)
    if refused.is_set():
        raise LatticeUnavailableError(url, f"authorization refused ({cause})") from cause
    why = f"{type(cause).__name__}: {cause}" if cause else "no answer"
    raise LatticeUnavailableError(
        url, f"no NATS server reachable within {opts.connect_timeout:g}s ({why})"
    ) from cause


def _is_auth_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "authorization" in text or "authentication" in text


async def _log_error(exc: Exception) -> None:
    _LOG.warning("NATS: %s: %s", type(exc).__name__, exc)


def _server(nc: Client) -> str:
    u = nc.connected_url
    return f"{u.hostname}:{u.port}" if u else "?"


async def flush(nc: Client, timeout: float = 5.0) -> None:
    """Return once the server has processed everything this client sent before the call.

    ``Client.flush`` is not enough in nats-py 2.16: it writes its PING straight to the socket,
    ahead of commands (such as a SUB) still queued for the flusher task, so the PONG can come
    back before the server knows the subscription. A message to our own inbox is queued behind
    those commands, so receiving it proves they arrived.

    Raises:
        LatticeUnavailableError: no round trip within ``timeout``.
    """
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=1)
    try:
        await nc.publish(inbox, b"")
        await sub.next_msg(timeout=timeout)
    except Exception as exc:
        raise LatticeUnavailableError(_server(nc), f"no round trip within {timeout:g}s "
                                      f"({type(exc).__name__})") from exc
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def explain_nats_error(exc: Exception) -> str:
    """What a NATS or JetStream failure means for the user, in a phrase."""
    if isinstance(exc, (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError,
                        nats.js.errors.NoStreamResponseError)):
        return "no JetStream answered (is JetStream enabled on the NATS server? start it with -js)"
    if isinstance(exc, nats.errors.ConnectionClosedError):
        return "the NATS connection is closed"
    return str(exc) or type(exc).__name__


@contextlib.asynccontextmanager
async def bounded(timeout: float, on_timeout: Callable[[], Exception],
                  on_error: Callable[[str], Exception]) -> AsyncIterator[Callable[[], float]]:
    """Bound a JetStream operation by ``timeout`` and turn NATS failures into the caller's
    typed errors (``on_timeout()``, ``on_error(explanation)``). Yields a function giving the
    seconds left (raising ``TimeoutError`` once none are), for nats-py's own request waits."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout

    def left() -> float:
        rest = end - loop.time()
        if rest <= 0:
            raise TimeoutError
        return rest

    try:
        async with asyncio.timeout_at(end):
            yield left
    except TimeoutError as exc:  # ours, or a nats request's
        raise on_timeout() from exc
    except nats.errors.Error as exc:
        raise on_error(explain_nats_error(exc)) from exc
