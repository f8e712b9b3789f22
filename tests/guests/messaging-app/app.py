"""The messaging-app test guest.

As a handler it answers requests (``echo:`` + body, published to the message's reply-to) and
refuses a body of ``fail`` with an error, so tests can check that an error never kills the
subscription. As a sender it publishes and requests through the consumer import.
"""

from __future__ import annotations

import wit_world
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import consumer
from wit_world.imports.types import BrokerMessage


class Handler(exports.Handler):
    def handle_message(self, msg: BrokerMessage) -> None:
        if msg.body == b"fail":
            raise Err(f"refusing message on {msg.subject}")
        if msg.reply_to is not None:
            consumer.publish(BrokerMessage(msg.reply_to, b"echo:" + msg.body, None))


class WitWorld(wit_world.WitWorld):
    def send(self, subject: str, body: bytes) -> None:
        consumer.publish(BrokerMessage(subject, body, None))

    def ask(self, subject: str, body: bytes, timeout_ms: int) -> bytes:
        return consumer.request(subject, body, timeout_ms).body
