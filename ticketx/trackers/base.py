"""The tracker interface: a `Tracker` (where one command logs) opens a `TrackedRun` per network.

An adapter (one file per tool, registered in `TRACKERS`) implements a few primitives: open or
reopen a run, log scalars at a step, log a table and an image, flush, finish. Everything else is
here, once for all of them:

- **Steps.** Scalars are indexed by the network's global step (the learning-rate schedule's), so a
  rewound network's curves start at its rewind step, and a resumed run continues its own tracker
  run: `<run folder>/tracking.json` keeps each tracker's run id and the last step it logged,
  written at every epoch end (when the checkpoint is) after the tool has flushed; steps up to
  that one are never logged twice. An adapter that can read back what its tool holds (MLflow)
  also skips steps logged after the last record.
- **Where.** `--tracker NAME[:where]`: a folder for TensorBoard, a project for W&B, a tracking URI
  for MLflow; by default under the command's output folder (`root`). Network runs are named by
  their folder below `root` (`ticket/round_02`, `runs/random-mask-r01-s0-<key>`), stable across
  resumes and workers.
- **Only rank 0** of a DDP run logs: the trainer gives other ranks a silent reporter, and
  `open_tracker` returns None there.
- **A missing extra** is one UsageError naming the pip command, before anything trains; the tool
  itself is imported only when the first run opens (`ticketx --help` never imports one).
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

from ticketx import distributed, store
from ticketx.errors import UsageError
from ticketx.registry import Registry

STATE = "tracking.json"  # in a run's folder: {tracker name: {"key", "id", "name", "step"}}


class TrackedRun:
    """One network (or a summary) in a tracker: its config once, then scalars by step, never twice.

    Adapters override the `_` methods; `log`, `checkpoint` and `finish` are the interface.
    """

    def __init__(self, tracker: "Tracker", name: str, run_id: str, *, last_step: int = -1,
                 state: Optional[Path] = None, key: str = "") -> None:
        self.tracker, self.name, self.id = tracker, name, run_id
        self.last_step = last_step  # the last step the tool holds: later steps only
        self.state, self.key = state, key
        self.finished = False

    def log(self, step: int, values: Mapping[str, Any]) -> bool:
        """Log `values` (finite numbers; others dropped) at `step`; False (nothing logged) for a step
        at or before the last one logged (a resumed run replaying steps its tool already holds)."""
        step = int(step)
        if step <= self.last_step:
            return False
        clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
        if clean:
            self._log(step, clean)
        self.last_step = step
        return True

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]], step: int = 0) -> None:
        """A table (a study's summary): one row per mapping, the given columns."""
        self._table(name, list(columns), [[_cell(r.get(c)) for c in columns] for r in rows], step)

    def image(self, name: str, path: Path, step: int = 0) -> None:
        """A PNG (a study's plot)."""
        self._image(name, Path(path), step)

    def checkpoint(self) -> None:
        """Flush the tool, then record the last step logged (every epoch end): a resume skips to after it."""
        self._flush()
        self._save()

    def finish(self, ok: bool = True) -> None:
        """Flush, record the last step, close (`ok` False: stopped before its end, to be resumed)."""
        if self.finished:
            return
        self.finished = True
        self._flush()
        self._save()
        self._finish(ok)

    def _save(self) -> None:
        if self.state is None:
            return
        saved = _read_state(self.state)
        saved[self.tracker.name] = {"key": self.key, "id": self.id, "name": self.name, "step": self.last_step}
        store.write_json(self.state, saved)

    # ---- what an adapter implements ----
    def _log(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def _table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        pass

    def _image(self, name: str, path: Path, step: int) -> None:
        pass

    def _flush(self) -> None:
        pass

    def _finish(self, ok: bool) -> None:
        pass


def _cell(v: Any) -> Any:
    return "" if v is None else v if isinstance(v, (int, float, str, bool)) else str(v)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = store.read_json(path) if path.exists() else {}
    except Exception:  # noqa: BLE001 - an unreadable record: start a new tracker run
        return {}
    return data if isinstance(data, dict) else {}


class Tracker:
    """Where one command logs its networks (an adapter per tool, in `TRACKERS`).

    `where`: the tool's destination as given after `NAME:` (None: its default under `root`);
    `root`: the command's output folder (run names are their folders below it); `group`: what the
    runs belong to (the study's name, the ticket's) for tools that group runs.
    """

    name: ClassVar[str] = ""
    module: ClassVar[str] = ""  # the package an adapter imports, checked before anything trains
    extra: ClassVar[str] = ""  # pip install "ticketx[<extra>]"

    def __init__(self, where: Optional[str], root: Path, group: str) -> None:
        if importlib.util.find_spec(self.module) is None:
            raise UsageError(f"--tracker {self.name} needs {self.module}, which is not installed: "
                             f"pip install \"ticketx[{self.extra}]\"")
        self.where, self.root, self.group = where, Path(root), group

    def run(self, name: str, config: Mapping[str, Any], *, folder: Optional[Path] = None, key: str = "",
            kind: str = "network") -> TrackedRun:
        """Open the run `name` (or reopen the one `folder`'s record names, for the same `key`)."""
        state = Path(folder) / STATE if folder is not None else None
        saved = _read_state(state).get(self.name) if state is not None else None
        if saved is not None and saved.get("key") != key:
            saved = None  # the folder's record belongs to another run
        resume = None if saved is None else (str(saved["id"]), int(saved.get("step", -1)))
        run = self.open(saved["name"] if saved else name, dict(config), resume=resume, kind=kind)
        run.state, run.key = state, key
        if resume is not None:
            run.last_step = max(run.last_step, resume[1])
        return run

    def name_of(self, folder: Optional[Path], label: str) -> str:
        """A network run's name: its folder below `root` ('ticket/round_02'), else its label as a slug."""
        if folder is not None:
            try:
                rel = Path(folder).resolve().relative_to(self.root.resolve())
            except ValueError:
                rel = Path(Path(folder).name)
            parts = [p[: -len(".pt.work")] if p.endswith(".pt.work") else p for p in rel.parts]
            return "/".join(parts) or "run"
        return re.sub(r"[^A-Za-z0-9_.=-]+", "-", label).strip("-") or "run"

    def open(self, name: str, config: dict[str, Any], *, resume: Optional[tuple[str, int]], kind: str) -> TrackedRun:
        """The adapter's: a new run (or `resume` = (id, last step recorded) to continue)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the tool holds for the whole command (after its last run)."""


TRACKERS: Registry[type[Tracker]] = Registry("tracker")


def register(cls: type[Tracker]) -> type[Tracker]:
    """Class decorator: an adapter under its `name`."""
    TRACKERS.add(cls.name, cls)
    return cls


def parse_tracker(text: str) -> tuple[str, Optional[str]]:
    """'tensorboard' -> ('tensorboard', None); 'wandb:my-project' -> ('wandb', 'my-project'); the name checked."""
    name, sep, where = str(text).strip().partition(":")
    TRACKERS[name.strip().lower()]  # "did you mean"
    return name.strip().lower(), (where.strip() or None) if sep else None


def open_tracker(text: Optional[str], *, root: Path, group: str) -> Optional[Tracker]:
    """The tracker `--tracker NAME[:where]` names (None: none; and on DDP ranks other than 0)."""
    if not text:
        return None
    name, where = parse_tracker(text)
    tracker = TRACKERS[name](where, Path(root), group)
    return tracker if distributed.is_main() else None


def flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}: for tools whose parameters are flat (lists as text)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat(v, key + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
        else:
            out[key] = str(v)
    return out


def log_rounds(tracker: Tracker, name: str, config: Mapping[str, Any], rounds: Sequence[Mapping[str, Any]],
               kind: str = "pai") -> None:
    """A ticket's rounds as one run (nothing trained: prune at initialisation): density (and accuracy
    where measured) by round."""
    run = tracker.run(name, config, kind=kind)
    for r, rec in enumerate(rounds):
        run.log(r, {"round/density": rec.get("density"), "round/test_accuracy": rec.get("test_acc")})
    run.finish()
