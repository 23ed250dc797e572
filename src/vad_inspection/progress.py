"""Progress bars that read well both on a terminal and in a log file.

On a terminal a bar redraws ten times a second. Written to a file or a pipe (CI, a robot's launch
log, ``make demo > log``) every redraw is a carriage-return-separated line, thousands of them per
minute; there it redraws every ``LOG_INTERVAL_S`` seconds and once at the end instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

#: Seconds between redraws when the output is not a terminal.
LOG_INTERVAL_S = 10.0


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    unit: str,
    enabled: bool = True,
    **options: Any,
) -> tqdm:
    """A tqdm bar over ``iterable`` (disabled when ``enabled`` is False), paced for its output."""
    stream = options.pop("file", None) or sys.stderr
    interactive = bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(
        iterable,
        desc=desc,
        unit=unit,
        disable=not enabled,
        file=stream,
        mininterval=0.1 if interactive else LOG_INTERVAL_S,
        **options,
    )
