"""Human output: one Rich console on stderr (machine output goes to stdout) and progress bars."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

console = Console(stderr=True, highlight=False)
if not console.is_terminal and "COLUMNS" not in os.environ:
    console.width = 140  # logs and pipes: Rich's 80-column default squeezes the result tables


class Reporter:
    """Progress for training runs; the library talks to this, never to Rich directly.

    The base class is silent (library use, tests). `RichReporter` draws bars.
    """

    def start(self, label: str, total: int) -> Any:
        return None

    def update(self, task: Any, completed: int, **fields: Any) -> None:
        pass

    def finish(self, task: Any) -> None:
        pass

    def log(self, message: str) -> None:
        pass


class RichReporter(Reporter):
    """Rich progress bars: one per training run (removed when done), plus persistent log lines."""

    def __init__(self, progress: Any | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = progress or Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal and not os.environ.get("TICKETX_PROGRESS"),
        )
        self._owned = progress is None

    def __enter__(self) -> "RichReporter":
        if self._owned:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._owned:
            self.progress.stop()

    def start(self, label: str, total: int) -> Any:
        return self.progress.add_task(label, total=total, status="")

    def update(self, task: Any, completed: int, **fields: Any) -> None:
        status = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        self.progress.update(task, completed=completed, status=status)

    def finish(self, task: Any) -> None:
        self.progress.remove_task(task)

    def log(self, message: str) -> None:
        if self.progress.disable:
            console.print(message)
        else:
            self.progress.console.print(message)


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
