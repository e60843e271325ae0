"""Progress of the long commands (``export``, ``import``, ``migrate``) on stderr.

On a terminal it is a live bar (rich): what is counted, the bar, done/total, the percentage and
the time left. Anywhere else (a log file, a pipe, CI) it is a line about every tenth of the
way, ``export: users: 500/1000 (50%)``, so that logs stay readable. ``quiet`` shows nothing.
"""

from __future__ import annotations

import atexit
import math
import sys
import time
from typing import Any, TextIO

#: Seconds between two redraws of a bar (the last step always redraws).
REDRAW_INTERVAL = 0.1


class Progress:
    """Counts ``total`` steps of ``what``; call :meth:`advance` as they are done. The display
    ends by itself with the last step."""

    def __init__(
        self, what: str, total: int, *, quiet: bool = False, stream: TextIO | None = None
    ) -> None:
        self.what, self.total, self.done = what, total, 0
        self._stream = None if quiet else (stream or sys.stderr)
        self._step = max(1, math.ceil(total / 10))
        self._bar: _Bar | None = None
        if self._stream is not None and _is_terminal(self._stream) and total > 0:
            self._bar = _Bar(what, total, self._stream)

    def advance(self, count: int = 1) -> None:
        before, self.done = self.done, self.done + count
        if self._bar is not None:
            self._bar.update(self.done)
        elif self._stream and (
            self.done // self._step > before // self._step or self.done == self.total
        ):
            percent = 100 * self.done // self.total if self.total else 100
            print(
                f"{self.what}: {self.done}/{self.total} ({percent}%)", file=self._stream, flush=True
            )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        return False


class _Bar:
    """A rich progress bar drawn on demand (no refresh thread), ended at the last step or,
    if the command stops early, at exit (so the terminal gets its cursor back)."""

    def __init__(self, what: str, total: int, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.total = total
        self._progress: Any = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
            auto_refresh=False,
            redirect_stdout=False,  # export writes its document to stdout
            redirect_stderr=False,
        )
        self._task = self._progress.add_task(what, total=total)
        self._drawn = 0.0
        self._finished = False
        self._progress.start()
        atexit.register(self.finish)

    def update(self, done: int) -> None:
        self._progress.update(self._task, completed=done)
        now = time.monotonic()
        if done >= self.total:
            self.finish()
        elif now - self._drawn >= REDRAW_INTERVAL:
            self._drawn = now
            self._progress.refresh()

    def finish(self) -> None:
        """Draw the last state and give the line back (idempotent)."""
        atexit.unregister(self.finish)
        if not self._finished:
            self._finished = True
            self._progress.refresh()
            self._progress.stop()
