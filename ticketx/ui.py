"""Human output: one Rich console on stderr (machine output goes to stdout) and progress bars."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from rich.console import Console

console = Console(stderr=True, highlight=False)
if not console.is_terminal and "COLUMNS" not in os.environ:
    console.width = 140  # logs and pipes: Rich's 80-column default squeezes the result tables


class Reporter:
    """Progress for training runs; the library talks to this, never to Rich directly.

    The base class is silent (library use, tests). `RichReporter` draws bars on a terminal and
    falls back to `PlainReporter`'s one line per epoch elsewhere. `update` fields are a status:
    train() sends `epoch` and `loss`, `acc` after an evaluation, and at each epoch end `img_s`
    (training images/s). With a `tracker` (ticketx.trackers), `track` opens a tracker run that
    the trainer logs each network's curves to while it trains.
    """

    tracker: Any = None  # a ticketx.trackers.Tracker, or None: nothing is tracked

    def track(self, name: str, config: Any, *, folder: Any = None, key: str = "", kind: str = "network") -> Any:
        """A tracker run (ticketx.trackers.TrackedRun) for one network or summary, or None without a tracker.

        Named by its `folder` below the tracker's root (else by `name`); a run with a folder
        continues its tracker run when it resumes (same `key`)."""
        if self.tracker is None:
            return None
        return self.tracker.run(self.tracker.name_of(folder, name), config, folder=folder, key=key, kind=kind)

    def start(self, label: str, total: int) -> Any:
        return None

    def update(self, task: Any, completed: int, **fields: Any) -> None:
        pass

    def finish(self, task: Any) -> None:
        pass

    def log(self, message: str) -> None:
        pass


@dataclass
class _Run:
    label: str
    total: int
    first: int | None = None  # the step the run started (or resumed) at
    t0: float = 0.0


class PlainReporter(Reporter):
    """One plain line per training epoch, for logs that are not a terminal (Slurm, CI, a pipe).

    A progress bar cannot be drawn there, and without one nothing would appear until a round's
    table: this prints, at each epoch end, the run's label (with its round), the epoch, step,
    loss, test accuracy when it was measured, images/s and the time left at this session's pace.
    """

    def __init__(self, write: Callable[[str], None] | None = None, clock: Callable[[], float] = time.perf_counter,
                 tracker: Any = None) -> None:
        self.write = write or (lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
        self.clock = clock
        self.tracker = tracker

    def start(self, label: str, total: int) -> Any:
        return _Run(label, total)

    def update(self, task: Any, completed: int, **fields: Any) -> None:
        if task.first is None:
            task.first, task.t0 = completed, self.clock()
        if "img_s" not in fields:  # only epoch ends make a line
            return
        parts = [task.label]
        if "epoch" in fields:
            parts.append(f"epoch {fields['epoch']}")
        parts.append(f"step {completed}/{task.total}")
        if isinstance(fields.get("loss"), float):
            parts.append(f"loss {fields['loss']:.4f}")
        if isinstance(fields.get("acc"), float):
            parts.append(f"acc {100 * fields['acc']:.2f}%")
        parts.append(f"{fields['img_s']:,.0f} img/s")
        done = completed - task.first
        if done > 0 and completed < task.total:
            left = (self.clock() - task.t0) / done * (task.total - completed)
            parts.append(f"eta {_duration(left)}")
        self.write("  ".join(parts))

    def log(self, message: str) -> None:
        console.print(message)


def _duration(seconds: float) -> str:
    """'1:02:03', '2:03' (h:mm:ss or m:ss)."""
    s = int(round(seconds))
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RichReporter(Reporter):
    """Rich progress bars: one per training run (removed when done), plus persistent log lines.

    When stderr is not a terminal (and $TICKETX_PROGRESS is unset) the bars are off and runs are
    reported by a `PlainReporter` instead.
    """

    def __init__(self, progress: Any | None = None, tracker: Any = None) -> None:
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
        self.plain = PlainReporter() if self.progress.disable else None
        self.tracker = tracker

    def __enter__(self) -> "RichReporter":
        if self._owned:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._owned:
            self.progress.stop()

    def start(self, label: str, total: int) -> Any:
        if self.plain is not None:
            return self.plain.start(label, total)
        return self.progress.add_task(label, total=total, status="")

    def update(self, task: Any, completed: int, **fields: Any) -> None:
        if self.plain is not None:
            self.plain.update(task, completed, **fields)
            return
        names = {"img_s": "img/s"}
        status = "  ".join(f"{names.get(k, k)} {v:.4g}" if isinstance(v, float) else f"{names.get(k, k)} {v}"
                           for k, v in fields.items())
        self.progress.update(task, completed=completed, status=status)

    def finish(self, task: Any) -> None:
        if self.plain is None:
            self.progress.remove_task(task)

    def log(self, message: str) -> None:
        if self.progress.disable:
            console.print(message)
        else:
            self.progress.console.print(message)
