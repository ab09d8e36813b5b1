"""Weights & Biases (`pip install "ticketx[wandb]"`): one W&B run per network, grouped by study or ticket.

`--tracker wandb[:PROJECT]` (default project `ticketx`; `ENTITY/PROJECT` also works). Offline (run
files under `<output>/wandb`, to `wandb sync` later) unless you are logged in (`wandb login` or
$WANDB_API_KEY); $WANDB_MODE, when set, decides. A resumed run continues its W&B run (same id).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Optional

from ticketx.trackers.base import TrackedRun, Tracker, register


def logged_in() -> bool:
    """Whether W&B has credentials here ($WANDB_API_KEY or a netrc entry), without asking its server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbRun(TrackedRun):
    run: Any

    def _log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def _table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        import wandb

        self.run.log({name: wandb.Table(columns=columns, data=rows)}, step=step)

    def _image(self, name: str, path: Path, step: int) -> None:
        import wandb

        self.run.log({name: wandb.Image(str(path))}, step=step)

    def _finish(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


@register
class Wandb(Tracker):
    name = "wandb"
    module = "wandb"
    extra = "wandb"

    @property
    def mode(self) -> str:
        return os.environ.get("WANDB_MODE") or ("online" if logged_in() else "offline")

    def open(self, name: str, config: dict[str, Any], *, resume: Optional[tuple[str, int]], kind: str) -> TrackedRun:
        import wandb

        entity, _, project = (self.where or "ticketx").rpartition("/")
        self.root.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=project, entity=entity or None, name=name, group=self.group, job_type=kind,
                         config=config, id=resume[0] if resume else secrets.token_hex(4), resume="allow",
                         dir=str(self.root), mode=self.mode, reinit="create_new",
                         settings=wandb.Settings(silent=True, console="off"))
        out = WandbRun(self, name, run.id)
        out.run = run
        return out
