"""Progress bars: paced for a terminal or a log, and silent when disabled."""

from __future__ import annotations

import io

from vad_inspection.progress import LOG_INTERVAL_S, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_few_redraws_and_a_terminal_many() -> None:
    log, terminal = io.StringIO(), _Terminal()
    for stream in (log, terminal):
        bar = progress_bar(range(2000), desc="work", unit="it", file=stream)
        assert list(bar) == list(range(2000))
    assert progress_bar([], desc="x", unit="it", file=io.StringIO()).mininterval == LOG_INTERVAL_S
    assert progress_bar([], desc="x", unit="it", file=_Terminal()).mininterval == 0.1
    assert "2000/2000" in log.getvalue()  # the final state always reaches the log
    assert log.getvalue().count("\r") <= 3 < 2000


def test_disabled_writes_nothing() -> None:
    stream = io.StringIO()
    assert sum(progress_bar(range(10), desc="x", unit="it", enabled=False, file=stream)) == 45
    assert stream.getvalue() == ""
