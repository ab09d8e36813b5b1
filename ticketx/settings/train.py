"""Training and pruning settings, and the rules that tie them together (each written once here).

Defaults that come from papers are cited where they are set: training defaults per model in
`ticketx/models/` (each model's own paper), pruning defaults here.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_serializer

from ticketx.errors import UsageError
from ticketx.settings.base import Strict, as_list
from ticketx.steps import check_step, to_iterations

# A paper's learning rate belongs to its optimizer: switching optimizer without an lr uses the
# new optimizer's default (a ticket's SGD lr of 0.1 would make Adam diverge). 3e-4: Frankle &
# Carbin 2019 (Adam, Conv-4/6); 0.1: their SGD (VGG/ResNet).
DEFAULT_LR = {"sgd": 0.1, "adam": 3e-4}


def step_value(v: Any) -> str:
    """A step count as written ('20ep', '1000it', 500), checked; a ValueError pydantic can locate."""
    try:
        return check_step(v)
    except UsageError as err:  # pydantic locates ValueErrors, not our own errors
        raise ValueError(str(err)) from None


class TrainSpec(Strict):
    """How one network is trained. Every field can be overridden from the CLI or a study file.

    Each field's `description` is its documentation, also the help of its CLI option (ticketx.cli).
    """

    optimizer: Literal["sgd", "adam"] = Field("sgd", description="sgd or adam.")
    lr: float = Field(0.1, gt=0, le=10, description=(
        "Learning rate; switching the optimizer without one uses the new optimizer's default "
        f"(adam {DEFAULT_LR['adam']:g}, sgd {DEFAULT_LR['sgd']:g}: Frankle & Carbin 2019)."))
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD).")
    weight_decay: float = Field(1e-4, ge=0, lt=1, description="L2 weight decay.")
    batch_size: int = Field(128, ge=1, le=65536, description="Batch size.")
    length: str = Field("160ep", description="Training length: '160ep' or '30000it'.")
    milestones: list[str] = Field(default_factory=list, description=(
        "LR drops (each multiplies the learning rate by gamma), e.g. '80ep,120ep' ('' for none)."))
    gamma: float = Field(0.1, gt=0, le=1, description="LR multiplier at each milestone.")
    warmup: str = Field("0", description=(
        "Linear LR warmup from 0 over this many steps, e.g. '5ep' or '10000it' (Frankle & Carbin 2019, VGG/ResNet)."))
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description=(
        "fp32 (default, as the papers), bf16 or fp16 autocast."))
    eval_every: str = Field("1ep", description=(
        "Measure test accuracy every N steps, e.g. '1ep' (never used to choose anything)."))
    val_split: float = Field(0.0, ge=0, lt=1, description="Fraction of train held out as validation.")
    label_noise: float = Field(0.0, ge=0, lt=1, description=(
        "Fraction of each class's training labels replaced by a wrong one, exactly round(fraction x class "
        "size) per class, after the validation split (validation and test keep their true labels); the "
        "same for every network of a comparison."))
    noise_mode: Literal["symmetric", "pairflip"] = Field("symmetric", description=(
        "symmetric (the wrong label uniform over the other classes) or pairflip (class c becomes c+1 mod C: "
        "Han et al. 2018)."))
    noise_seed: Optional[int] = Field(None, ge=0, description=(
        "Seed of the label noise, its own random stream (default: the run's seed: a search's data seed, "
        "a transfer's seed)."))
    augment: bool = Field(True, description=(
        "Training augmentation (the data set's random crop and flip, if it has them); off: every epoch "
        "sees the training images as they are."))

    # Fields added after results were recorded appear in a dump (run keys, cell keys, a ticket's
    # metadata) only where they change something: every earlier key stays exactly as it was.
    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        d = handler(self)
        if not self.label_noise:  # no noise: its mode and seed change nothing
            for k in ("label_noise", "noise_mode", "noise_seed"):
                d.pop(k, None)
        if self.augment:
            d.pop("augment", None)
        return d

    def noise_seed_or(self, seed: int) -> int:
        """The label noise's seed: `noise_seed` when given, else the run's `seed`."""
        return int(seed if self.noise_seed is None else self.noise_seed)

    @field_validator("length", "warmup", "eval_every", mode="before")
    @classmethod
    def _step(cls, v: Any) -> str:
        return step_value(v)

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer(cls, v: Any) -> Any:
        from ticketx.errors import did_you_mean

        if isinstance(v, str) and v not in DEFAULT_LR:
            raise ValueError(did_you_mean(v, tuple(DEFAULT_LR), "optimizer"))
        return v

    @field_validator("milestones", mode="before")
    @classmethod
    def _milestones(cls, v: Any) -> list[str]:
        v = as_list(v)
        if not isinstance(v, list):
            raise ValueError("expected a list of steps, e.g. [80ep, 120ep]")
        return [step_value(s) for s in v]

    @field_validator("length", "eval_every")
    @classmethod
    def _positive_length(cls, v: str, info: Any) -> str:
        if v == "0" or float(v[:-2]) <= 0:
            what = "training length" if info.field_name == "length" else "the evaluation interval"
            raise ValueError(f"{what} must be positive, e.g. '160ep' or '30000it'")
        return v


class PruneSpec(Strict):
    """How a ticket is found: iterative pruning with rewinding (each `description` is also its CLI help)."""

    rounds: int = Field(10, ge=1, le=100, description="Pruning rounds after the dense round.")
    rate: float = Field(0.2, gt=0, lt=1, description=(
        "Fraction of the remaining weights pruned per round (0.2: Frankle & Carbin 2019, fc layers and "
        "global for VGG/ResNet; Morcos et al. 2019, \"pruned 20% per iteration\")."))
    head_rate: Optional[float] = Field(None, ge=0, lt=1, description=(
        "Rate for the output layer; none = the rate of the other layers (Frankle & Carbin 2019 prune "
        "it at half the rate, 0.1, for LeNet and Conv-2/4/6)."))
    scope: Literal["global", "layerwise"] = Field("global", description=(
        "global (one threshold over all layers, for deep nets: Frankle & Carbin 2019 sec. 4, Morcos "
        "et al. 2019) or layerwise (each layer by itself, for LeNet/Conv-2/4/6: F&C 2019 sec. 2-3)."))
    keep_dense: list[str] = Field(default_factory=list, description=(
        "Prunable tensors never pruned, comma-separated, e.g. 'conv1.weight'."))
    rewind: str = Field("1ep", description=(
        "Rewind point: 0 (the original init, Frankle & Carbin 2019), '1ep' or '500it' (late resetting: "
        "Morcos et al. 2019 rewound to 1 epoch's worth of iterations; Frankle et al. 2020)."))
    criterion: str = Field("magnitude", description=(
        "Which weights survive a round, scored from the rewind and the final weights: magnitude (the "
        "largest final |w|, Frankle & Carbin 2019) or another of Zhou et al. 2019's criteria (ticketx.criteria)."))
    rates: dict[str, float] = Field(default_factory=dict, description=(
        "Per-layer rates over `rate`: by layer kind ('conv', 'linear') or by tensor name, e.g. "
        "'conv=0.1,linear=0.2' (Frankle & Carbin 2019 prune Conv-2/4/6's conv layers at 10/10/15% and their "
        "fully-connected ones at 20%); the output layer takes head_rate when it is given."))
    retrain: Literal["rewind", "lr-rewind", "finetune"] = Field("rewind", description=(
        "How each round retrains after pruning (Renda, Frankle & Carbin, ICLR 2020): rewind (weights "
        "and lr schedule back to the rewind point: the lottery ticket), lr-rewind (the previous round's "
        "final weights, the lr schedule replayed from the rewind point) or finetune (the final weights "
        "at the final lr); each for the same number of steps. The ticket's rewind weights are the rewind "
        "point's in every mode."))
    schedule: Literal["uniform", "paper"] = Field("uniform", description=(
        "uniform: `rate` for every layer (Morcos et al. 2019) unless `rates` say otherwise; paper: the "
        "per-layer rates of the model's paper (Frankle & Carbin 2019 for LeNet and Conv-2/4/6; `ticketx "
        "models` lists them), under any rate given explicitly."))

    @field_validator("rates", mode="before")
    @classmethod
    def _rates(cls, v: Any) -> Any:
        if isinstance(v, str):  # 'conv=0.1,linear=0.2'
            out = {}
            for part in filter(None, (p.strip() for p in v.split(","))):
                key, sep, value = part.partition("=")
                if not sep:
                    raise ValueError(f"rates are written like 'conv=0.1,linear=0.2', got {part!r}")
                try:
                    out[key.strip()] = float(value)
                except ValueError:
                    raise ValueError(f"rate of {key.strip()!r} must be a number, got {value!r}") from None
            return out
        return v

    @field_validator("rates")
    @classmethod
    def _rate_values(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [f"{k}={r:g}" for k, r in v.items() if not 0 <= r < 1]
        if bad:
            raise ValueError(f"every rate must be in [0, 1): {', '.join(bad)}")
        return v

    @field_validator("criterion")
    @classmethod
    def _criterion(cls, v: str) -> str:
        from ticketx.criteria import CRITERIA

        try:
            CRITERIA[v]
        except UsageError as err:
            raise ValueError(str(err)) from None
        return v

    @field_validator("rewind", mode="before")
    @classmethod
    def _step(cls, v: Any) -> str:
        return step_value(v)

    @field_validator("keep_dense", mode="before")
    @classmethod
    def _names(cls, v: Any) -> list[str]:
        return list(as_list(v))


def train_settings(defaults: dict[str, Any], *overrides: dict[str, Any]) -> TrainSpec:
    """`defaults` updated by each override in turn (None = not given), with the optimizer's-lr rule.

    When the overrides switch the optimizer and none of them gives an lr, the new optimizer's
    default lr replaces the default one (DEFAULT_LR). The CLI, studies and Python callers all
    come through here, so the rule holds everywhere.
    """
    values = dict(defaults)
    given = [{k: v for k, v in o.items() if v is not None} for o in overrides]
    opt = next((o["optimizer"] for o in reversed(given) if "optimizer" in o), values.get("optimizer"))
    if opt != values.get("optimizer") and not any("lr" in o for o in given) and opt in DEFAULT_LR:
        values["lr"] = DEFAULT_LR[opt]
    for o in given:
        values.update(o)
    return TrainSpec(**values)


def resolve_train(model: str, overrides: dict[str, Any], base: dict[str, Any] | None = None) -> TrainSpec:
    """TrainSpec from (base or the model's paper defaults) updated with the given overrides."""
    from ticketx.models import model_info

    return train_settings(base if base is not None else model_info(model).train_defaults, overrides)


def resolve_prune(model: str, overrides: dict[str, Any]) -> PruneSpec:
    """The model's pruning defaults, then (with schedule 'paper') its paper's per-layer rates, then the overrides."""
    from ticketx.models import model_info

    info = model_info(model)
    given = {k: v for k, v in overrides.items() if v is not None and v != {}}
    values = dict(info.prune_defaults)
    if given.get("schedule") == "paper":
        if not info.paper_prune:
            raise UsageError(f"{model} has no paper pruning schedule (schedule: paper)",
                             "give its rates yourself: rates: {conv: 0.1, linear: 0.2}")
        values.update(info.paper_prune)
    values.update(given)
    return PruneSpec(**values)


def rewind_problem(rewind: str, length: str, iterations_per_epoch: int | None = None) -> str | None:
    """Why the rewind point is not before the end of training, or None.

    Without the data set's size (`iterations_per_epoch` None) only steps in the same unit can
    be compared; with it, every pair. The one place this rule lives.
    """
    if rewind == "0":
        return None
    if iterations_per_epoch is None:
        if rewind[-2:] == length[-2:] and float(rewind[:-2]) >= float(length[:-2]):
            return f"rewind point {rewind} is not before the end of training ({length})"
        return None
    r, total = to_iterations(rewind, iterations_per_epoch), max(1, to_iterations(length, iterations_per_epoch))
    if r >= total:
        return f"rewind point {rewind} ({r} steps) is not before the end of training ({total} steps)"
    return None
