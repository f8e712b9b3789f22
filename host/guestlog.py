"""What components running on a host print: one log record per line, under the logger
``trellis.component.<component id>`` (stdout at INFO, stderr at WARNING).

A component on a host has no terminal of its own; dropping its output would take away the
first debugging tool every language has (``print``). Records carry the component id and the
stream (``extra``: ``component``, ``stream``), so a log shipper can route them, and they pass
through the host's logging configuration like everything else it logs. One ``GuestOutput``
serves every instance of a component; writes come from whichever thread runs the guest.
"""

from __future__ import annotations

import logging
import threading

MAX_LINE = 16 * 1024
"""Bytes of an unterminated line kept before it is logged anyway (a guest that never writes
a newline must not grow host memory)."""


class GuestOutput:
    """A WASI stdout/stderr sink (``WasiOptions.stdout``, ``wasi_http_imports(stdout=…)``)."""

    def __init__(self, component_id: str, stream: str) -> None:
        self.component_id = component_id
        self.stream = stream
        self.level = logging.WARNING if stream == "stderr" else logging.INFO
        self.log = logging.getLogger(f"trellis.component.{component_id}")
        self._partial = b""
        self._lock = threading.Lock()

    def __call__(self, chunk: bytes) -> None:
        if not self.log.isEnabledFor(self.level):
            return
        with self._lock:
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            if len(self._partial) > MAX_LINE:
                lines.append(self._partial)
                self._partial = b""
        extra = {"component": self.component_id, "stream": self.stream}
        for line in lines:
            self.log.log(self.level, "%s", line.rstrip(b"\r").decode("utf-8", "replace"),
                         extra=extra)
