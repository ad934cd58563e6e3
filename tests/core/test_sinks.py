"""The terminal sink: a redrawn bar on a terminal, plain progress lines in a log file."""

from __future__ import annotations

import io

from aime_core.sinks import TerminalSink


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_into_a_file_the_bar_is_plain_lines_every_5_percent_and_at_the_end():
    log = io.StringIO()
    sink = TerminalSink(desc="run", stream=log, line_seconds=3600)
    sink.metrics(1, {"loss": 2.5})
    for done in range(0, 1001):
        sink.progress(done, 1000, "step")
    sink.event("alert", {"message": "recon went NaN at step 7"})
    sink.close()
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    progress = [ln for ln in lines if ln.startswith("run:")]
    assert len(progress) == 21  # 0 %, 5 %, ..., 100 %
    assert "1000/1000" in progress[-1] and "loss=2.5" in progress[-1]
    assert "[alert] recon went NaN at step 7" in lines


def test_into_a_file_a_slow_run_still_logs_every_line_seconds(monkeypatch):
    clock = iter(float(t) for t in range(0, 10_000, 10))  # each call 10 s later
    monkeypatch.setattr("aime_core.sinks.time.monotonic", lambda: next(clock))
    log = io.StringIO()
    sink = TerminalSink(desc="slow", stream=log, line_seconds=30)
    for done in range(0, 13):  # 13 updates inside the first 5 % bucket of 1000
        sink.progress(done, 1000, "step")
    assert len(log.getvalue().splitlines()) == 5  # t=0 (first), then every 30 s: 30, 60, 90, 120


def test_on_a_terminal_the_bar_redraws_in_place():
    tty = FakeTerminal()
    sink = TerminalSink(desc="run", stream=tty)
    for done in range(0, 51):
        sink.progress(done, 50, "step")
    sink.close()
    assert tty.getvalue().count("\r") >= 50 and "50/50" in tty.getvalue()
