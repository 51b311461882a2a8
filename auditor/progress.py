"""Progress bars on stderr (rich), silent when quiet.  stdout stays machine-readable."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any


class Progress:
    """``with Progress(quiet=False) as p: advance = p.task("embedding", total); advance(n)``."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if not self.quiet:
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
        if self._bar is None:
            return lambda n: None
        task_id = self._bar.add_task(description, total=total)
        bar = self._bar
        return lambda n: bar.advance(task_id, n)

    def log(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(message, highlight=False, markup=False)
