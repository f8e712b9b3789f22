"""Guest output on hosts: lines of stdout/stderr become log records naming the component."""

from __future__ import annotations

import logging

import pytest
from trellis.host import guestlog
from trellis.host.guestlog import GuestOutput


def test_lines_become_records_with_component_and_stream(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    out, err = GuestOutput("calc", "stdout"), GuestOutput("calc", "stderr")
    with caplog.at_level(logging.INFO, logger="trellis.component.calc"):
        out(b"one\r\ntw")
        out(b"o\nthree")  # a line split across writes is one record
        err(b"bad \xff thing\n")
    got = [(r.name, r.levelno, r.getMessage(), r.stream, r.component)  # type: ignore[attr-defined]
           for r in caplog.records]
    assert got == [
        ("trellis.component.calc", logging.INFO, "one", "stdout", "calc"),
        ("trellis.component.calc", logging.INFO, "two", "stdout", "calc"),
        ("trellis.component.calc", logging.WARNING, "bad \ufffd thing", "stderr", "calc"),
    ]
    assert out._partial == b"three"  # waits for its newline


def test_an_endless_line_is_logged_in_pieces(caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guestlog, "MAX_LINE", 10)
    out = GuestOutput("c", "stdout")
    with caplog.at_level(logging.INFO, logger="trellis.component.c"):
        for _ in range(5):
            out(b"xxxxxx")
    assert [r.getMessage() for r in caplog.records] == ["x" * 12, "x" * 12]
    assert out._partial == b"x" * 6


def test_nothing_is_kept_when_the_level_is_off(caplog: pytest.LogCaptureFixture) -> None:
    out = GuestOutput("quiet", "stdout")
    logging.getLogger("trellis.component.quiet").setLevel(logging.WARNING)
    try:
        out(b"unseen\npartial")
        assert caplog.records == [] and out._partial == b""
    finally:
        logging.getLogger("trellis.component.quiet").setLevel(logging.NOTSET)
