"""TensorBoard (`pip install "ticketx[tensorboard]"`): one event folder per network under `where`.

`--tracker tensorboard[:DIR]` (default `<output>/tensorboard`); view with `tensorboard --logdir DIR`.
A resumed run reopens its folder with `purge_step` one after the last step recorded, so events a
killed run wrote after its last record are hidden and logged again (once).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ticketx.trackers.base import TrackedRun, Tracker, flat, register


class TensorBoardRun(TrackedRun):
    writer: Any

    def _log(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def _table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r) + " |" for r in rows]
        self.writer.add_text(name, "\n".join(lines), step)

    def _image(self, name: str, path: Path, step: int) -> None:
        from matplotlib.image import imread

        self.writer.add_image(name, imread(str(path))[..., :3], step, dataformats="HWC")

    def _flush(self) -> None:
        self.writer.flush()

    def _finish(self, ok: bool) -> None:
        self.writer.close()


@register
class TensorBoard(Tracker):
    name = "tensorboard"
    module = "tensorboard"
    extra = "tensorboard"

    @property
    def folder(self) -> Path:
        return Path(self.where).expanduser() if self.where else self.root / "tensorboard"

    def open(self, name: str, config: dict[str, Any], *, resume: Optional[tuple[str, int]], kind: str) -> TrackedRun:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = self.folder / name
        # step 0 holds the config: a run resumed before its first point purges from step 1
        writer = SummaryWriter(log_dir=str(log_dir), purge_step=max(1, resume[1] + 1) if resume is not None else None)
        run = TensorBoardRun(self, name, str(log_dir))
        run.writer = writer
        if resume is None:
            writer.add_text("config", "```json\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)
            _hparams(writer, config)
        return run


def _hparams(writer: Any, config: dict[str, Any]) -> None:
    """The config in TensorBoard's HParams tab (flat: 'train.lr'), in the run's own event file."""
    from torch.utils.tensorboard.summary import hparams

    values = {k: v for k, v in flat(config).items() if isinstance(v, (int, float, str, bool))}
    exp, ssi, sei = hparams(values, {"test/accuracy": 0.0})
    for s in (exp, ssi, sei):
        writer.file_writer.add_summary(s)
