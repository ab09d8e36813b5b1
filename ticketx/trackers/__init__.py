"""Experiment trackers: where researchers watch training (TensorBoard, Weights & Biases, MLflow).

Optional extras, imported only when a run opens: `pip install "ticketx[tensorboard]"` (or
`[wandb]`, `[mlflow]`). `--tracker NAME[:where]` on find / transfer / pai / stability / study run,
or a study file's `tracking:` block. The interface and what every adapter shares: `base`; one
file per tool, registered in `TRACKERS`.
"""

from ticketx.trackers.base import STATE, TRACKERS, TrackedRun, Tracker, flat, log_rounds, open_tracker, parse_tracker
from ticketx.trackers import tensorboard, wandb, mlflow  # noqa: F401,I001  (registers the adapters, in this order)

__all__ = ["STATE", "TRACKERS", "TrackedRun", "Tracker", "flat", "log_rounds", "open_tracker", "parse_tracker"]
