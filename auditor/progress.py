"""Progress on stderr: bars on a terminal, periodic log lines anywhere else, silent when quiet.

stdout stays machine-readable.  Messages go through the ``auditor`` logger, so ``-v`` /
``--quiet`` (or a notebook's own logging set-up) decide what is shown.  Without a
terminal (a CI job's log) a progress bar would be redrawn into garbage such as
``252/… 0:0…``; there each task logs a line when it starts, at most every
``interval`` seconds while it runs, and when it ends, with the time it took.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

log = logging.getLogger("auditor")


class StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time: rich redirects it while a bar is
    live, so log lines land above the bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # a log line must never be what fails the gate
            self.handleError(record)


def configure_logging(verbosity: int = 0, *, quiet: bool = False) -> None:
    """Set up the ``auditor`` logger for the CLI: INFO by default, DEBUG with ``-v``,
    WARNING with ``--quiet``.  Idempotent (one handler however often it is called)."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbosity > 0 else logging.INFO)
    log.setLevel(level)
    if not any(isinstance(h, StderrHandler) for h in log.handlers):
        handler = StderrHandler()
        fmt = "%(message)s" if sys.stderr.isatty() else "%(asctime)s auditor: %(message)s"
        handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False


class Progress:
    """``with Progress(quiet=False) as p: advance = p.task("embedding", total); advance(n)``.

    ``live``: draw bars (default: when stderr is a terminal); otherwise log lines.
    Quiet when asked, or when the ``auditor`` logger does not show INFO (``--quiet``).
    """

    def __init__(self, *, quiet: bool = False, live: bool | None = None, interval: float = 10.0) -> None:
        self.quiet = quiet or not log.isEnabledFor(logging.INFO)
        self.live = sys.stderr.isatty() if live is None else live
        self.interval = interval
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if not self.quiet and self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as _RichProgress

            self._bar = _RichProgress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._bar.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
            self._bar = None

    def task(self, description: str, total: int) -> Callable[[int], None]:
        """Start a task of ``total`` steps; returns ``advance(n)``."""
        if self.quiet:
            return lambda n: None
        if self._bar is not None:
            task_id = self._bar.add_task(description, total=total)
            bar = self._bar
            return lambda n: bar.advance(task_id, n)
        return _LogTask(description, total, self.interval)

    def log(self, message: str) -> None:
        """A message for the reader (above the bars on a terminal, a log line elsewhere)."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(message, highlight=False, markup=False)
        else:
            log.info("%s", message)


class _LogTask:
    """``advance(n)`` for a log: a line at the start, every ``interval`` s, and at the end."""

    def __init__(self, description: str, total: int, interval: float) -> None:
        self.description, self.total, self.interval = description, total, interval
        self.done = 0
        self.start = self.last = time.monotonic()
        log.info("%s: started (%s)", description, f"{total} steps" if total else "size unknown")
        if total == 0:
            self.total = -1  # unknown: never "finished" by count

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        finished = self.total > 0 and self.done >= self.total
        if finished:
            log.info("%s: %d/%d done in %.1f s", self.description, self.done, self.total, now - self.start)
            self.last = float("inf")  # one closing line, whatever follows
        elif now - self.last >= self.interval:
            self.last = now
            if self.total > 0:
                pct = 100 * self.done / self.total
                rate = self.done / max(now - self.start, 1e-9)
                left = (self.total - self.done) / rate if rate > 0 else float("nan")
                log.info(
                    "%s: %d/%d (%.0f%%), %.1f s so far, ~%.0f s left",
                    self.description, self.done, self.total, pct, now - self.start, left,
                )  # fmt: skip
            else:
                log.info("%s: %d so far, %.1f s", self.description, self.done, now - self.start)
