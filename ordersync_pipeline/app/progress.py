"""A progress bar for long syncs, fed by the partitions the sync assets finish (the ``ordersync.progress``
log records the asset factory emits), drawn with rich only when the output is a terminal."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["partition_progress"]


class _Advance(logging.Handler):
    def __init__(self, progress: Progress, task_id: int) -> None:
        super().__init__(level=logging.DEBUG)
        self._progress, self._task = progress, task_id
        self.failed = 0

    def emit(self, record: logging.LogRecord) -> None:
        outcome = getattr(record, "ordersync_outcome", None)
        if outcome is None:
            return
        if not outcome.ok:
            self.failed += 1
        self._progress.advance(self._task)  # type: ignore[arg-type]


@contextmanager
def partition_progress(label: str, total: int, *, enabled: bool = True) -> Iterator[None]:
    """Show ``label`` with a bar over ``total`` partitions while the block runs (terminals only)."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal or total <= 1:
        yield
        return
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
    task_id = progress.add_task(label, total=total)
    handler = _Advance(progress, task_id)
    logger = logging.getLogger("ordersync.progress")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        with progress:
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        logger.propagate = True
