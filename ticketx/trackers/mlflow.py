"""MLflow (`pip install "ticketx[mlflow]"`: mlflow-skinny, the tracking client): a run per network.

`--tracker mlflow[:URI]` (default: a local file store, `<output>/mlruns`; a path or any tracking
URI, e.g. a server's or `sqlite:///mlflow.db` with the full mlflow). The experiment is the
study's (or ticket's) name; the config goes in as flat parameters (`train.lr`). A resumed run
continues its MLflow run, after the last step MLflow holds.

MLflow 3 keeps its file store in "maintenance mode" and refuses it unless
$MLFLOW_ALLOW_FILE_STORE is set: it is the one store mlflow-skinny can write without a server or
a database driver, so for a folder (or `file:` URI) ticketx sets it, unless you did.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

from ticketx.trackers.base import TrackedRun, Tracker, flat, register

MAX_PARAM = 500  # characters of a parameter's value that every MLflow store accepts


class MlflowRun(TrackedRun):
    client: Any

    def _log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def _table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self.client.log_text(self.id, json.dumps({"columns": columns, "data": rows}, default=str), f"{name}.json")

    def _image(self, name: str, path: Path, step: int) -> None:
        self.client.log_artifact(self.id, str(path), "plots")

    def _finish(self, ok: bool) -> None:
        self.client.set_terminated(self.id, "FINISHED" if ok else "KILLED")


@register
class Mlflow(Tracker):
    name = "mlflow"
    module = "mlflow"
    extra = "mlflow"

    @property
    def uri(self) -> str:
        if self.where and "://" in self.where or (self.where or "").startswith("file:"):
            return str(self.where)
        return (Path(self.where).expanduser() if self.where else self.root / "mlruns").resolve().as_uri()

    def open(self, name: str, config: dict[str, Any], *, resume: Optional[tuple[str, int]], kind: str) -> TrackedRun:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = self.uri
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        client = MlflowClient(tracking_uri=uri)
        last = -1
        if resume is None:
            exp = client.get_experiment_by_name(self.group)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(self.group)
            run_id = client.create_run(exp_id, run_name=name, tags={"ticketx.kind": kind}).info.run_id
            params = [Param(k, str(v)[:MAX_PARAM]) for k, v in flat(config).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
                client.log_batch(run_id, params=params[i: i + 100])
        else:
            run_id = resume[0]
            for key in client.get_run(run_id).data.metrics:  # steps logged after the last record
                last = max([last, *(m.step for m in client.get_metric_history(run_id, key))])
        run = MlflowRun(self, name, run_id, last_step=last)
        run.client = client
        return run
