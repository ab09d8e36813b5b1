"""Done, or train it and record it: the one way every experiment trains a network.

A run (`ticketx.train.Run`) lives in its folder. Its result is written there last, atomically:
`result.json` (the record) or, for a run that keeps its weights (a search round, which prunes
from them), `result.pt` (the record, the final prunable weights and the snapshots). A run whose
result is there with its key is done and is never built or trained again; an unfinished one
resumes from its last epoch checkpoint. Runs handed over together share a recipe and go to the
trainer in one call, so a trainer that trains several networks at once gets all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ticketx import store
from ticketx import train as trainer
from ticketx.train import Recipe, Run, TrainResult


@dataclass
class Outcome:
    """What a finished run left: its record, and its final weights and snapshots when it keeps them."""

    record: dict[str, Any]
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # the final prunable weights
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # absolute step -> state
    fresh: bool = False  # trained in this call (not read from its folder)


def _result_path(run: Run) -> Path | None:
    if run.folder is None:
        return None
    return run.folder / ("result.pt" if run.keep_weights else "result.json")


def stored(run: Run) -> Outcome | None:
    """The run's stored outcome, or None when it is not done (or its result belongs to another key)."""
    path = _result_path(run)
    if path is None or not path.exists():
        return None
    if not run.keep_weights:
        saved = store.read_json(path)
        return Outcome(saved) if saved.get("key") == run.key else None
    saved = store.load_torch(path, "run result")
    record = saved["record"]
    if "key" in record and record["key"] != run.key:  # results written before runs had keys carry none
        return None
    snaps = {int(k): v for k, v in saved.get("snapshots", {}).items()}
    return Outcome(record, saved["weights"], snaps)


def record_of(run: Run, result: TrainResult) -> dict[str, Any]:
    """The record of a freshly trained run: what it was, then what training measured."""
    record = {
        "key": run.key, **run.info, **result.info, "test_acc": result.test_acc, "val_acc": result.val_acc,
        "train_acc": result.train_acc, "seconds": result.seconds, "steps": result.steps, "history": result.history,
    }
    if result.noise is not None:  # trained on noisy labels: how much of the noise it fitted, and what it was
        record.update(memorised=result.memorised, label_noise=result.noise)
    return record


def recipe_key(recipe: Recipe) -> str:
    """What two recipes must share for their runs to go to the trainer in one call: the data set (name and
    shape: the experiments that build them load one data set once), the settings, the device and the
    cohort setting."""
    return store.fingerprint([recipe.data.name, list(recipe.data.train_x.shape), recipe.spec.model_dump(),
                              str(recipe.device), str(recipe.cohort), recipe.channels_last, recipe.compile])


def ensure(runs: Sequence[Run], recipe: Recipe, reporter: Any = None, *, names: Sequence[str] = ()) -> list[Outcome]:
    """Each run's outcome: read when it is done, else trained (all the runs not done, in one call to the
    trainer) and recorded in its folder, result last. In the order of `runs`.

    `names`: the tensors of the state (parameters or buffers) whose final values a run that keeps its
    weights stores.
    """
    outcomes: dict[int, Outcome] = {i: o for i, run in enumerate(runs) if (o := stored(run)) is not None}
    position = {id(run): i for i, run in enumerate(runs)}

    def record(run: Run, result: TrainResult) -> None:
        outcomes[position[id(run)]] = _record(run, result, names)

    todo = [run for i, run in enumerate(runs) if i not in outcomes]
    if todo:
        trainer.train(todo, recipe, reporter, done=record)
    return [outcomes[i] for i in range(len(runs))]


def _record(run: Run, result: TrainResult, names: Sequence[str]) -> Outcome:
    """Write a freshly trained run's result in its folder (last: the run is done once it exists)."""
    record = record_of(run, result)
    outcome = Outcome(record, fresh=True)
    path = _result_path(run)
    if run.keep_weights:
        assert result.model is not None
        state = result.model.state_dict()
        outcome.weights = {n: state[n].detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
                           for n in names}
        outcome.snapshots = result.snapshots
        if path is not None:
            store.save_torch(path, {"record": record, "weights": outcome.weights,
                                    "snapshots": {str(k): v for k, v in result.snapshots.items()}})
    elif path is not None:
        store.write_json(path, record)
    if run.checkpoint is not None:
        store.remove_file(run.checkpoint)
    return outcome
