"""A ticket search, resolved: names checked against the registries, cross-field rules applied."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BeforeValidator, Field, model_validator

from ticketx.errors import UsageError
from ticketx.settings.base import Strict
from ticketx.settings.train import PruneSpec, TrainSpec, resolve_prune, resolve_train, rewind_problem, step_value


class SupermaskSpec(Strict):
    """A ticket search that learns supermasks over frozen weights instead of pruning trained ones
    (ticketx.supermask; the study's `search.method` axis): at the densities of the search's IMP
    schedule, so that both kinds of ticket are compared at the same densities."""

    method: str  # a ticketx.supermask.METHODS name (checked by the study axis, which sees the registry)
    weights: Literal["init", "signed-constant"] = "init"
    profile: Literal["uniform", "imp"] = "imp"
    length: Annotated[str, BeforeValidator(step_value)] = "20ep"  # score-training steps per density
    lr: Optional[float] = Field(None, gt=0)  # None: the method's default (supermask.DEFAULT_LR)
    batch_size: int = Field(60, ge=1, le=1 << 20)



class SearchSpec(Strict):
    """One ticket search: a data set, a model, how to train, how to prune."""

    data: str
    model: str
    image_size: Optional[int] = Field(None, ge=4, le=1024)  # None = the model's native size
    channels: Optional[Literal[1, 3]] = None  # None = the data set's own channels
    width: float = Field(1.0, gt=0, le=1024)  # hidden-layer multiplier of the paper's network (ticketx.models.width)
    train: TrainSpec = Field(default_factory=TrainSpec)
    prune: PruneSpec = Field(default_factory=PruneSpec)
    seed: int = Field(0, ge=0)
    init_seed: Optional[int] = Field(None, ge=0)  # weight initialisation; None = seed
    data_seed: Optional[int] = Field(None, ge=0)  # data order and augmentation; None = seed
    deterministic: bool = False
    supermask: Optional[SupermaskSpec] = None  # None: iterative magnitude pruning (`find`)

    @model_validator(mode="after")
    def _rewind_before_end(self) -> "SearchSpec":
        problem = rewind_problem(self.prune.rewind, self.train.length)
        if problem:
            raise ValueError(problem)
        return self

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
        if d["prune"]["criterion"] == "magnitude":  # tickets found before criteria existed keep their keys
            d["prune"].pop("criterion")
        if d["prune"]["retrain"] == "rewind":  # ... and before retraining modes existed
            d["prune"].pop("retrain")
        if not d["prune"]["rates"]:  # ... and before per-layer rates (a schedule is resolved into them)
            d["prune"].pop("rates")
        d["prune"].pop("schedule")
        if d["width"] == 1:  # tickets found before widths existed keep their keys
            d.pop("width")
        if d["supermask"] is None:  # ... and IMP tickets, before supermask searches existed
            d.pop("supermask")
        return d

    @property
    def noise_seed(self) -> int:
        """The label noise's seed (with train.label_noise): train.noise_seed, else the data seed."""
        return self.train.noise_seed_or(self.seeds[1])


def check_names(spec: SearchSpec) -> None:
    """Data set, model (and its width) and --keep-dense tensors exist (registries; the model on the meta device)."""
    from ticketx.data import parse_data
    from ticketx.models import check_model_width, model_info, prunable_names_of

    parse_data(spec.data)
    info = model_info(spec.model)
    check_model_width(spec.model, spec.width)
    named = [k for k in spec.prune.rates if k not in ("conv", "linear")]
    if spec.prune.keep_dense or named:
        names = prunable_names_of(spec.model, spec.channels or info.channels, spec.image_size or info.image_size,
                                  width=spec.width)
        if names is None:
            return  # the model cannot be built without its data; find's pruning checks the names then
        missing = [n for n in spec.prune.keep_dense if n not in names]
        if missing:
            raise UsageError(f"--keep-dense names unknown tensors: {', '.join(missing)}", f"prunable tensors: {', '.join(names)}")
        missing = [n for n in named if n not in names]
        if missing:
            raise UsageError(f"--prune-rates names unknown tensors: {', '.join(missing)}",
                             f"give a layer kind (conv, linear) or a prunable tensor: {', '.join(names)}")


def resolve_search(data: str, model: str, *, train: dict[str, Any] | None = None, prune: dict[str, Any] | None = None,
                 **fields: Any) -> SearchSpec:
    """A checked SearchSpec from names and overrides (None = the model's paper default)."""
    from pydantic import ValidationError

    from ticketx.data import parse_data
    from ticketx.models import model_info
    from ticketx.settings.base import describe_validation_error

    parse_data(data)
    model_info(model)
    try:
        spec = SearchSpec(data=data, model=model, train=resolve_train(model, train or {}),
                        prune=resolve_prune(model, prune or {}), **{k: v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        raise UsageError(f"invalid option: {describe_validation_error(err)}") from None
    check_names(spec)
    return spec
