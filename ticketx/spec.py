"""Typed, validated configuration: the only place raw dicts and YAML are turned into settings.

Defaults that come from papers are cited where they are set: training defaults per model in
`models.py` (each model's own paper), pruning defaults here.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ticketx.steps import check_step


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainSpec(_Strict):
    """How one network is trained. Every field can be overridden from the CLI or a study file."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0, lt=1)
    batch_size: int = Field(128, ge=1, le=65536)
    length: str = "160ep"  # training length: '160ep' or '30000it'
    milestones: list[str] = Field(default_factory=list)  # lr drops by `gamma` at each step
    gamma: float = Field(0.1, gt=0, le=1)
    warmup: str = "0"  # linear lr warmup from 0 over this many steps (Frankle & Carbin 2019, VGG/ResNet)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # fp32 default: fidelity to the papers
    eval_every: str = "1ep"  # test accuracy is measured (never used to choose anything) this often
    val_split: float = Field(0.0, ge=0, lt=1)  # fraction of train held out as validation

    @field_validator("length", "warmup", "eval_every")
    @classmethod
    def _step(cls, v: Any) -> str:
        return check_step(v)

    @field_validator("milestones", mode="before")
    @classmethod
    def _milestones(cls, v: Any) -> list[str]:
        if isinstance(v, str):
            v = [s for s in v.replace(" ", "").split(",") if s]
        if not isinstance(v, list):
            raise ValueError("expected a list of steps, e.g. [80ep, 120ep]")
        return [check_step(s) for s in v]

    @field_validator("length", "eval_every")
    @classmethod
    def _positive_length(cls, v: str, info: Any) -> str:
        if v == "0" or float(v[:-2]) <= 0:
            what = "training length" if info.field_name == "length" else "the evaluation interval"
            raise ValueError(f"{what} must be positive, e.g. '160ep' or '30000it'")
        return v


class PruneSpec(_Strict):
    """How a ticket is found: iterative magnitude pruning with rewinding."""

    rounds: int = Field(10, ge=1, le=100)
    # 20% of the remaining weights per round: Frankle & Carbin 2019 (fc layers, global for
    # VGG/ResNet) and Morcos et al. 2019 ("pruned 20% per iteration").
    rate: float = Field(0.2, gt=0, lt=1)
    # Output layer rate; None = same as `rate`. Frankle & Carbin 2019 prune it at half the rate
    # (0.1) for LeNet and Conv-2/4/6: pass head_rate=0.1 to reproduce that.
    head_rate: Optional[float] = Field(None, ge=0, lt=1)
    # 'global' (one threshold over all layers) for deep nets: Frankle & Carbin 2019 sec. 4,
    # Morcos et al. 2019; 'layerwise' (each layer by itself) for LeNet/Conv-2/4/6: F&C 2019 sec. 2-3.
    scope: Literal["global", "layerwise"] = "global"
    keep_dense: list[str] = Field(default_factory=list)  # prunable tensors never pruned
    # Rewind point. '0' = original init (Frankle & Carbin 2019); '1ep' = late resetting
    # (Morcos et al. 2019 rewound to iteration 1 epoch's worth; Frankle et al. 2020).
    rewind: str = "1ep"

    @field_validator("rewind")
    @classmethod
    def _step(cls, v: Any) -> str:
        return check_step(v)

    @field_validator("keep_dense", mode="before")
    @classmethod
    def _names(cls, v: Any) -> list[str]:
        if isinstance(v, str):
            v = [s for s in v.replace(" ", "").split(",") if s]
        return list(v)


class FindSpec(_Strict):
    """One ticket search: a data set, a model, how to train, how to prune."""

    data: str
    model: str
    image_size: Optional[int] = Field(None, ge=4, le=1024)  # None = the model's native size
    channels: Optional[Literal[1, 3]] = None  # None = the data set's own channels
    train: TrainSpec = Field(default_factory=TrainSpec)
    prune: PruneSpec = Field(default_factory=PruneSpec)
    seed: int = Field(0, ge=0)
    init_seed: Optional[int] = Field(None, ge=0)  # weight initialisation; None = seed
    data_seed: Optional[int] = Field(None, ge=0)  # data order and augmentation; None = seed
    deterministic: bool = False

    @property
    def seeds(self) -> tuple[int, int]:
        """(init seed, data seed)."""
        return (self.seed if self.init_seed is None else self.init_seed,
                self.seed if self.data_seed is None else self.data_seed)

    def science(self) -> dict[str, Any]:
        """Everything that changes the result (the key of the run); not device or paths."""
        d = self.model_dump()
        d["init_seed"], d["data_seed"] = self.seeds
        d.pop("seed")
        return d


def resolve_train(model: str, overrides: dict[str, Any], base: dict[str, Any] | None = None) -> TrainSpec:
    """TrainSpec from (base or the model's paper defaults) updated with the given overrides."""
    from ticketx.models import model_info

    values = dict(base if base is not None else model_info(model).train_defaults)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainSpec(**values)


def resolve_prune(model: str, overrides: dict[str, Any]) -> PruneSpec:
    from ticketx.models import model_info

    values = dict(model_info(model).prune_defaults)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PruneSpec(**values)


def describe_validation_error(err: Any, source: str = "") -> str:
    """One line from a pydantic ValidationError: 'source: key.path: message'."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    msg = first.get("msg", "invalid value")
    if first.get("type") == "value_error":  # our validators' own words, without pydantic's prefix
        msg = msg.removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        msg = "unknown key"
    prefix = f"{source}: " if source else ""
    return f"{prefix}{loc}: {msg}" if loc else f"{prefix}{msg}"


BASELINES = ("random-mask", "random-reinit", "dense")


class TransferSpec(_Strict):
    """Retrain a ticket's round(s) on a target data set, with baselines at the same density."""

    target: str
    rounds: Optional[list[int]] = None  # None = `density`, else the ticket's last round
    density: Optional[float] = Field(None, gt=0, le=1)  # pick the round whose density is closest
    all_rounds: bool = False
    train: Optional[TrainSpec] = None  # None = the ticket's own training settings
    baselines: list[Literal["random-mask", "random-reinit", "dense"]] = Field(default_factory=lambda: list(BASELINES))
    seeds: list[int] = Field(default_factory=lambda: [0])
    # Output layer: 'auto' keeps the ticket's head when the number of classes matches and
    # replaces it otherwise; 'reset' always replaces it. A new head is pruned to the ticket's
    # output-layer density with a random mask unless head_dense.
    head: Literal["auto", "reset"] = "auto"
    head_dense: bool = False
    against: Optional[str] = None  # a ticket found on the target itself
    deterministic: bool = False

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one seed")
        if len(set(v)) != len(v) or min(v) < 0:
            raise ValueError("seeds must be distinct non-negative integers")
        return v

    @field_validator("baselines", mode="before")
    @classmethod
    def _baselines(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s for s in v.replace(" ", "").split(",") if s and s != "none"]
        return v
