"""``logging``: ``wasi:logging/logging`` into Python logging, one logger per component.

A guest's ``log(level, context, message)`` becomes a record on the logger
``trellis.component.<component id>`` (the link's source), so handlers and levels can be set per
component with the standard ``logging`` configuration. The record carries structured fields in
``extra``: ``component_id``, ``log_context`` (the guest's context string) and ``wasi_level``.

Levels: ``trace`` → ``TRACE`` (5, registered with ``logging.addLevelName``), ``debug``,
``info``, ``warn`` → ``WARNING``, ``error``, ``critical``. An unknown level (a newer WIT)
logs at ``INFO`` rather than failing the guest.
"""

from __future__ import annotations

import logging
from typing import Any

from .sdk import Link, Provider

TRACE = logging.DEBUG - 5
if logging.getLevelName(TRACE) == f"Level {TRACE}":
    logging.addLevelName(TRACE, "TRACE")

LEVELS: dict[str, int] = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

LOGGER_PREFIX = "trellis.component"


def component_logger(component_id: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_PREFIX}.{component_id}")


class ComponentLog:
    """``wasi:logging/logging`` for one component. Synchronous on purpose: a log call is
    cheap, and a plain host function avoids suspending the guest."""

    def __init__(self, component_id: str) -> None:
        self.component_id = component_id
        self.logger = component_logger(component_id)

    def log(self, level: str, context: str, message: str) -> None:
        py_level = LEVELS.get(level, logging.INFO)
        if not self.logger.isEnabledFor(py_level):
            return
        extra = {"component_id": self.component_id, "log_context": context,
                 "wasi_level": level}
        if context:
            self.logger.log(py_level, "[%s] %s", context, message, extra=extra)
        else:
            self.logger.log(py_level, "%s", message, extra=extra)


class LoggingProvider(Provider):
    """Built-in ``logging`` provider; needs no config."""

    name = "logging"
    interfaces = ("wasi:logging/logging",)

    def implementation(self, interface: str, link: Link) -> Any:
        return ComponentLog(link.source)
