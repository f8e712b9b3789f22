"""``messaging-nats``: ``wasmcloud:messaging@0.2.0`` over core NATS subjects.

Messages flow both ways, and the link's direction says which (the wasmCloud convention):

- **consumer** — component → provider. A link with ``source`` = the component, ``target`` =
  this provider and interface ``consumer`` serves the component's ``consumer`` import:
  ``publish(msg)`` and ``request(subject, body, timeout-ms)``. No link config is needed.
- **handler** — provider → component. A link with ``source`` = this provider, ``target`` = the
  component and interface ``handler`` subscribes for the component; its config (the
  ``source_config``, the provider's side, falling back to the ``target_config``) says to what::

      subscriptions=orders.*,billing.new   comma-separated NATS subjects (wildcards allowed)
      queue_group=orders                   optional: each message goes to one member of the
                                           group (e.g. this provider on every host)

  Each message becomes ``handle-message({subject, body, reply-to})`` on the component, through
  ``ProviderContext.invoke``. To answer a request the component publishes to ``reply-to``. A
  handler ``Err``, a trap or a timeout is logged and the subscription carries on; deleting the
  link unsubscribes.

Provider config: ``url=nats://…`` for a NATS of its own (else the host's lattice connection,
on which subjects under ``trellis.`` and ``$`` are off limits to components, so a component
cannot speak the lattice's control protocol), ``handler_timeout_ms`` (30000),
``request_timeout_ms`` (5000, used when a component asks for 0), ``max_in_flight`` (64 handler
calls at once; beyond that NATS buffers, then drops as a slow consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from ...lattice.connection import flush
from ...lattice.subjects import CTL_PREFIX
from ...lattice.wit.values import Err, Ok
from ..sdk import Link, Provider, ProviderContext, ProviderError

__all__ = ["HANDLE_MESSAGE", "NatsMessaging"]

HANDLE_MESSAGE = "wasmcloud:messaging/handler#handle-message"
"""The export called per message (unversioned: any 0.2.x handler matches)."""

_RESERVED = (CTL_PREFIX.split(".", 1)[0] + ".", "$")
"""Subject prefixes a component may not use on the host's own connection."""


def _int_setting(config: Mapping[str, str], key: str, default: int) -> int:
    raw = config.get(key, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ProviderError(f"messaging-nats: {key}={raw!r} is not an integer") from None
    if value < 1:
        raise ProviderError(f"messaging-nats: {key}={value} must be at least 1")
    return value


def _subject_problem(subject: str, *, wildcards: bool = False) -> str | None:
    """Why ``subject`` is not a valid NATS subject (``None`` when it is). A bad subject sent on
    the wire is a protocol error that closes the whole connection, so it is caught here."""
    if not subject:
        return "the subject is empty"
    if any(c.isspace() for c in subject):
        return f"subject {subject!r} contains whitespace"
    tokens = subject.split(".")
    if "" in tokens:
        return f"subject {subject!r} has an empty token"
    if not wildcards and any(t in ("*", ">") for t in tokens):
        return f"subject {subject!r} has a wildcard (only subscriptions may)"
    return None


_TYPES = object()
"""What serves ``wasmcloud:messaging/types``, which a guest imports but which has no functions."""


@dataclass
class _Handler:
    """The subscriptions made for one handler link."""

    component: str
    subscriptions: list[Subscription] = field(default_factory=list)


class NatsMessaging(Provider):
    name = "messaging-nats"
    interfaces = ("wasmcloud:messaging/consumer", "wasmcloud:messaging/handler",
                  "wasmcloud:messaging/types")

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        super().__init__(config)
        self.nc: Client | None = None
        self._own_nc = False
        self._handlers: dict[tuple[str, str, str], _Handler] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(64)
        self._consumer = Consumer(self)

    async def start(self, context: ProviderContext) -> None:
        await super().start(context)
        self.handler_timeout_s = _int_setting(self.config, "handler_timeout_ms", 30_000) / 1000
        self.request_timeout_ms = _int_setting(self.config, "request_timeout_ms", 5_000)
        self._slots = asyncio.Semaphore(_int_setting(self.config, "max_in_flight", 64))
        url = self.config.get("url", "").strip()
        if url:
            self.nc = await _connect(url, _int_setting(self.config, "connect_timeout_ms", 5_000))
            self._own_nc = True
        elif context.nc is not None:
            self.nc = context.nc
        else:
            raise ProviderError(
                "messaging-nats needs NATS: set url=nats://host:4222 in its config, "
                "or run it in a host that is on a lattice"
            )

    async def stop(self) -> None:
        for key in list(self._handlers):
            await self._unsubscribe(key)
        if self._tasks:  # let handlers that are running finish, briefly
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.handler_timeout_s)
            for task in pending:
                task.cancel()
        nc, self.nc = self.nc, None
        if nc is not None and self._own_nc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.drain(), 5)
            if not nc.is_closed:
                await nc.close()

    def implementation(self, interface: str, link: Link) -> Any:
        name = interface.rsplit("/", 1)[-1].split("@")[0]
        if name == "consumer":
            return self._consumer
        if name == "types":  # types only, no functions: imported alongside consumer
            return _TYPES
        raise ProviderError(
            f"messaging-nats serves wasmcloud:messaging/consumer, not {interface}: components "
            "export handler; link provider → component with subscriptions= for it"
        )

    @property
    def restricted(self) -> bool:
        """On the host's lattice connection components may not use the lattice's subjects."""
        return not self._own_nc

    # -- handler links -----------------------------------------------------------------------

    async def link_put(self, link: Link) -> None:
        if "handler" not in link.interfaces:
            await super().link_put(link)
            return
        me = self.context.provider_id if self.context else ""
        if link.source != me:
            raise ProviderError(
                f"handler link {link.source} → {link.target}: messages flow from the provider "
                f"to the component, so put it with source={me or 'the provider'} and "
                f"target=<component> (subscriptions= in its config)"
            )
        config = {**link.target_config, **link.source_config}
        subjects = [s.strip() for s in config.get("subscriptions", "").split(",") if s.strip()]
        if not subjects:
            raise ProviderError(
                f"handler link {link.source} → {link.target} has no subscriptions: add "
                "subscriptions=subject1,subject2 to the link's source config"
            )
        for subject in subjects:
            if problem := _subject_problem(subject, wildcards=True):
                raise ProviderError(f"handler link {link.source} → {link.target}: {problem}")
        queue = config.get("queue_group", "").strip()
        if queue and (problem := _subject_problem(queue)):
            raise ProviderError(f"handler link queue_group={queue!r}: {problem}")
        await self._unsubscribe(link.key)  # a re-put replaces the old subscriptions
        await self._subscribe(link.key, link.target, subjects, queue)
        await super().link_put(link)

    async def link_del(self, link: Link) -> None:
        await super().link_del(link)
        await self._unsubscribe(link.key)

    async def _subscribe(self, key: tuple[str, str, str], component: str,
                         subjects: list[str], queue: str) -> None:
        nc = self._connection()
        handler = _Handler(component)
        self._handlers[key] = handler

        async def on_message(msg: Msg) -> None:
            await self._slots.acquire()  # backpressure: NATS buffers while every slot is busy
            task = asyncio.create_task(self._deliver(component, msg))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

        for subject in subjects:
            handler.subscriptions.append(await nc.subscribe(subject, queue=queue, cb=on_message))
        await flush(nc)  # subscribed for real before link_put returns
        self.log.info("messaging-nats: %s ← %s%s", component, ",".join(subjects),
                      f" (queue {queue})" if queue else "")

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _unsubscribe(self, key: tuple[str, str, str]) -> None:
        handler = self._handlers.pop(key, None)
        if handler is None:
            return
        for sub in handler.subscriptions:
            with contextlib.suppress(Exception):  # connection already closed: nothing to undo
                await sub.unsubscribe()
        if self.nc is not None and self.nc.is_connected:
            with contextlib.suppress(Exception):
                await flush(self.nc)

    async def _deliver(self, component: str, msg: Msg) -> None:
        """One message to the component's handler; every failure is logged, none escapes."""
        invoke = self.context.invoke if self.context else None
        if invoke is None:
            self.log.error("messaging-nats: no invoke in the provider context; dropping a "
                           "message on %s for %s", msg.subject, component)
            return
        message = {"subject": msg.subject, "body": msg.data, "reply-to": msg.reply or None}
        try:
            result = await asyncio.wait_for(
                invoke(component, HANDLE_MESSAGE, message, timeout=self.handler_timeout_s),
                self.handler_timeout_s + 1.0,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.warning("messaging-nats: %s failed on a message on %s: %s",
                             component, msg.subject, exc or type(exc).__name__)
            return
        if isinstance(result, Err):
            self.log.warning("messaging-nats: %s refused a message on %s: %s",
                             component, msg.subject, result.value)

    def _connection(self) -> Client:
        if self.nc is None:
            raise ProviderError("messaging-nats is not started (no NATS connection)")
        return self.nc


class Consumer:
    """``wasmcloud:messaging/consumer`` for the components linked to the provider."""

    def __init__(self, provider: NatsMessaging) -> None:
        self._p = provider

    def _check(self, subject: str) -> str | None:
        if problem := _subject_problem(subject):
            return problem
        if self._p.restricted and subject.startswith(_RESERVED):
            return (f"subject {subject!r} belongs to the lattice; give messaging-nats a "
                    "url= of its own to use it")
        return None

    async def publish(self, msg: Mapping[str, Any]) -> Ok | Err:
        subject, reply = msg["subject"], msg.get("reply-to") or ""
        if problem := self._check(subject) or (reply and self._check(reply)):
            return Err(problem)
        try:
            await self._p._connection().publish(subject, bytes(msg["body"]), reply=reply)
        except Exception as exc:
            return Err(f"cannot publish on {subject}: {exc or type(exc).__name__}")
        return Ok(None)

    async def request(self, subject: str, body: bytes, timeout_ms: int) -> Ok | Err:
        if problem := self._check(subject):
            return Err(problem)
        timeout_ms = timeout_ms or self._p.request_timeout_ms
        try:
            reply = await self._p._connection().request(subject, bytes(body),
                                                        timeout=timeout_ms / 1000)
        except NoRespondersError:
            return Err(f"no responders on {subject}")
        except (NatsTimeoutError, TimeoutError):
            return Err(f"no reply on {subject} within {timeout_ms} ms")
        except Exception as exc:
            return Err(f"request on {subject} failed: {exc or type(exc).__name__}")
        return Ok({"subject": reply.subject, "body": reply.data, "reply-to": reply.reply or None})


async def _connect(url: str, timeout_ms: int) -> Client:
    """A connection of the provider's own; unreachable within the timeout → ``ProviderError``."""
    nc = Client()
    connected = False

    async def on_error(exc: Exception) -> None:  # failures to connect are reported once, below
        if connected:
            logging.getLogger("trellis.provider").warning("messaging-nats: NATS: %s", exc)

    try:
        await asyncio.wait_for(
            nc.connect(url, connect_timeout=max(1, timeout_ms // 1000), error_cb=on_error,
                       max_reconnect_attempts=-1, name="trellis messaging-nats"),
            timeout_ms / 1000,
        )
    except Exception as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        raise ProviderError(
            f"messaging-nats: cannot connect to url={url} within {timeout_ms} ms "
            f"(connect_timeout_ms): {exc or type(exc).__name__}"
        ) from exc
    connected = True
    return nc
