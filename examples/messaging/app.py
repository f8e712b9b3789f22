"""A NATS message handler: answers each request with its body shouted and its words counted.

``handle-message`` runs once per message on the subjects the provider → component link
subscribes to. The component replies by publishing to the message's ``reply-to`` through its
``consumer`` import (the component → provider link); a message without one is dropped.
"""

from __future__ import annotations

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import consumer
from wit_world.imports.types import BrokerMessage


class Handler(exports.Handler):
    def handle_message(self, msg: BrokerMessage) -> None:
        try:
            text = msg.body.decode()
        except UnicodeDecodeError:
            raise Err(f"{msg.subject}: the body is not UTF-8") from None
        if msg.reply_to is not None:
            words = len(text.split())
            answer = f"{text.upper()}! ({words} word{'' if words == 1 else 's'} on {msg.subject})"
            consumer.publish(BrokerMessage(msg.reply_to, answer.encode(), None))
