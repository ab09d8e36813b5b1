"""The study file: schema, line-numbered loading, names and per-phase settings (the resolve layer).

Validation happens before any training: schema (unknown keys with "did you mean", types, ranges),
then names (models, data sets, class subsets) and cross-field checks. Every error is one line
naming the file, the line and the key path: `studies/x.yaml:12: sources[0].optimzer: unknown key`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from ticketx.errors import UsageError
from ticketx.settings.base import Strict, as_list, check_seeds, error_message, partial
from ticketx.settings.train import (
    PruneSpec,
    TrainSpec,
    resolve_prune,
    rewind_problem,
    train_settings,
)
from ticketx.settings.transfer import default_baselines
from ticketx.settings.yamlfile import Path_, compose, format_path, line_of, schema_error

if TYPE_CHECKING:
    from ticketx.study.cells import Cell

# Blocks are TrainSpec / PruneSpec with every field optional (an override): the constraints
# (ranges, literals, validators) are the very same ones the CLI enforces, written once.


TrainSettings = partial(TrainSpec, "TrainSettings")
PruneSettings = partial(PruneSpec, "PruneSettings")


class TrainBlock(TrainSettings):  # type: ignore[misc, valid-type]
    """Training overrides, plus per-optimizer overrides applied when that optimizer is used."""

    sgd: Optional[TrainSettings] = None  # type: ignore[valid-type]
    adam: Optional[TrainSettings] = None  # type: ignore[valid-type]

    def chain(self, optimizer: str) -> list[dict[str, Any]]:
        """[common overrides, overrides for `optimizer`], without unset keys."""
        common = {k: v for k, v in self.model_dump(exclude={"sgd", "adam"}).items() if v is not None}
        sub = getattr(self, optimizer)
        return [common, {k: v for k, v in sub.model_dump().items() if v is not None} if sub else {}]


class SearchBlock(Strict):
    """Ticket-search settings: training overrides, pruning, default seeds."""

    train: TrainBlock = Field(default_factory=TrainBlock)
    prune: PruneSettings = Field(default_factory=PruneSettings)  # type: ignore[valid-type]
    seeds: list[int] = Field(default_factory=lambda: [0])  # for sources that name none
    # An axis: one ticket per criterion (Zhou et al. 2019), each transferred next to its own
    # baselines and an own ticket found with the same criterion. None: prune.criterion.
    criteria: Optional[list[str]] = None

    @field_validator("seeds", "criteria", mode="before")
    @classmethod
    def _seed_list(cls, v: Any) -> Any:
        return as_list(v)

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        from ticketx.criteria import CRITERIA

        if v is None:
            return v
        if not v:
            raise ValueError("no cells: give at least one criterion")
        try:
            return CRITERIA.check(v)
        except UsageError as err:
            raise ValueError(str(err)) from None

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v: list[int]) -> list[int]:
        return check_seeds(v)


def round_list(v: Any) -> Any:
    """`rounds:` as written -> None, 'all' or a sorted list of distinct round numbers (>= 0)."""
    if v is None or v == "all":
        return v
    v = as_list(v)
    if not isinstance(v, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in v):
        raise ValueError(f"expected 'all', a round number or a list of round numbers, got {v!r}")
    if not v:
        raise ValueError("no cells: give at least one round (or 'all')")
    if min(v) < 0:
        raise ValueError(f"rounds are 0 (dense) or more, got {min(v)}")
    return sorted(set(v))


class TransferBlock(Strict):
    """Transfer settings: what is retrained on each target, how, and against what."""

    train: TrainBlock = Field(default_factory=TrainBlock)
    # 'same' retrains each ticket with the optimizer it was found with; a list crosses them
    # (Morcos et al. 2019 sec. 4.3: tickets found with Adam trained with SGD and vice versa).
    optimizer: list[Literal["same", "sgd", "adam"]] = Field(default_factory=lambda: ["same"])
    rounds: Any = None  # 'all' (every pruned round), a round or a list of rounds
    densities: Optional[list[float]] = None  # else: the round whose density is closest to each
    seeds: list[int] = Field(default_factory=lambda: [0])
    baselines: list[str] = Field(default_factory=default_baselines)
    own_ticket: bool = True  # also find a ticket on each target and retrain it next to the others
    # The own ticket's search starts from an initialisation independent of the source ticket's
    # by default, so "the transferred ticket matches the own ticket" is not built in by shared
    # weights; 'shared' (same init, different data) is a legitimate design when asked for.
    own_ticket_init: Literal["independent", "shared"] = "independent"
    # The output layer rule of spec.transfer.TransferSpec.head ('new' by default; 'keep' only
    # when the ticket's class names are the target's). 'reset' is the old name of 'new'.
    head: Literal["new", "keep"] = "new"
    head_dense: bool = False

    @field_validator("head", mode="before")
    @classmethod
    def _head(cls, v: Any) -> Any:
        return "new" if v == "reset" else v

    @field_validator("optimizer", "seeds", "baselines", "densities", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        if isinstance(v, str) and "," in v:  # 'sgd, adam'
            return [s.strip() for s in v.split(",") if s.strip()]
        return as_list(v)

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v: list[int]) -> list[int]:
        return check_seeds(v)

    @field_validator("train")
    @classmethod
    def _no_optimizer(cls, v: TrainBlock) -> TrainBlock:
        # One place says how tickets are retrained, so that 'same' cannot be silently overridden.
        if v.optimizer is not None or any(b is not None and b.optimizer is not None for b in (v.sgd, v.adam)):
            raise ValueError("choose the transfer optimizer with transfer.optimizer (same, sgd, adam), not in transfer.train")
        return v

    @field_validator("rounds", mode="before")
    @classmethod
    def _rounds(cls, v: Any) -> Any:
        return round_list(v)

    @field_validator("densities")
    @classmethod
    def _densities(cls, v: Optional[list[float]]) -> Optional[list[float]]:
        if v is None:
            return v
        if not v:
            raise ValueError("no cells: give at least one density")
        bad = [d for d in v if not 0 < d <= 1]
        if bad:
            raise ValueError(f"a density is the fraction of weights kept, in (0, 1]; got {bad[0]}")
        return sorted(set(v), reverse=True)

    @field_validator("baselines")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from ticketx.baselines import BASELINES

        try:
            return BASELINES.check(v)
        except UsageError as err:
            raise ValueError(str(err)) from None

    @model_validator(mode="after")
    def _rounds_or_densities(self) -> "TransferBlock":
        if self.rounds is not None and self.densities is not None:
            raise ValueError("give either rounds or densities, not both")
        return self


class StabilityBlock(Strict):
    """Linear mode connectivity of each source ticket (ticketx.stability; Frankle et al. 2020).

    Off when the study has no `stability:` key. Per source ticket and round: two copies trained
    from the rewind point with the ticket's own recipe and data set, data seeds `seeds`; the
    error barrier on the straight line between them, at `points` evenly spaced alphas.
    """

    # 'all': every round, the dense network (round 0) included, so barrier vs density starts at
    # 100% (the reference: is the dense network itself stable from this rewind point?).
    rounds: Any = "all"
    seeds: list[int] = Field(default_factory=lambda: [0, 1])  # the two copies' data-order seeds
    points: int = Field(11, ge=3, le=101)  # alpha = 0, 1/(points-1), ..., 1 (3 = ends and midpoint)

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        return {} if v is True else v  # `stability: true`: every default

    @field_validator("rounds", mode="before")
    @classmethod
    def _rounds(cls, v: Any) -> Any:
        return round_list(v)  # the same forms and checks as transfer.rounds

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_list(cls, v: Any) -> Any:
        if isinstance(v, str) and "," in v:  # '0, 1'
            return [s.strip() for s in v.split(",") if s.strip()]
        return as_list(v)

    @field_validator("seeds")
    @classmethod
    def _two_seeds(cls, v: list[int]) -> list[int]:
        if len(v) != 2:
            raise ValueError(f"give the two copies' data seeds, exactly two (such as [0, 1]), got {v}")
        return check_seeds(v)


def _data_item(v: Any) -> Any:
    return {"data": v} if isinstance(v, str) else v


def _classes_text(v: Any) -> Any:
    """`classes: 0-4`, `classes: [0, 5, 7]` or `classes: 3` -> '0-4', '0,5,7', '3'."""
    if v is None:
        return v
    if isinstance(v, bool):
        raise ValueError(f"expected class indices such as 0-4 or [0, 5, 7], got {v!r}")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in v):
        return ",".join(map(str, v))
    if isinstance(v, str):
        return v
    raise ValueError(f"expected class indices such as 0-4 or [0, 5, 7], got {v!r}")


class Target(Strict):
    """A data set to transfer to: `cifar10`, `digits[5-9]`, or {data: digits, classes: 5-9}."""

    data: str
    classes: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _item(cls, v: Any) -> Any:
        return _data_item(v)

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, v: Any) -> Any:
        return _classes_text(v)


class Source(Target):
    """A data set to find tickets on, with its search optimizer(s) and seeds."""

    optimizer: Optional[list[Literal["sgd", "adam"]]] = None  # None: the study's / model's
    seeds: Optional[list[int]] = None  # None: search.seeds

    @field_validator("optimizer", "seeds", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return as_list(v)

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        return None if v is None else check_seeds(v)


class LauncherBlock(Strict):
    """How `ticketx study submit` runs the study's workers (Slurm via submitit, or local processes).

    Not part of any cell's key: it changes where and how fast cells run, not what they compute.
    Command-line options override these.
    """

    cluster: Optional[Literal["slurm", "local"]] = None  # None: Slurm if sbatch is available, else local
    workers: Optional[int] = Field(None, ge=1, le=100000)  # array size: worker jobs (default: one per cell, at most 64)
    array_parallelism: Optional[int] = Field(None, ge=1, le=100000)  # at most this many array tasks at once
    partition: Optional[str] = None
    account: Optional[str] = None
    gpus_per_task: Optional[int] = Field(None, ge=0, le=64)
    cpus_per_task: Optional[int] = Field(None, ge=1, le=1024)
    mem_gb: Optional[float] = Field(None, gt=0)
    time: Optional[Any] = None  # per job: minutes (int) or 'HH:MM:SS' / 'D-HH:MM:SS'
    extra: dict[str, Any] = Field(default_factory=dict)  # more sbatch flags: {qos: high, constraint: a100}
    setup: list[str] = Field(default_factory=list)  # shell lines run before each job (module load, conda activate)
    phases: bool = True  # search cells in a first array, transfers in a second one that starts after it
    lease_timeout: Optional[float] = Field(None, gt=0)  # seconds without heartbeat before a cell is taken over

    @field_validator("time")
    @classmethod
    def _time(cls, v: Any) -> Any:
        return None if v is None else parse_minutes(v)

    @field_validator("setup", mode="before")
    @classmethod
    def _setup(cls, v: Any) -> Any:
        return as_list(v)


def parse_minutes(v: Any) -> int:
    """A Slurm time limit as minutes: 90, '90', '1:30:00', '2-00:00:00', '45:00' (MM:SS)."""
    if isinstance(v, bool):
        raise ValueError(f"expected minutes or HH:MM:SS, got {v!r}")
    if isinstance(v, (int, float)):
        if v <= 0:
            raise ValueError(f"a time limit is positive, got {v}")
        return max(1, int(round(v)))
    text = str(v).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise ValueError(f"expected minutes or [D-]HH:MM:SS, got {v!r}")
    days, a, b, c = m.groups()
    if b is None and c is None and days is None:
        minutes = int(a)
    elif c is None and days is None:  # MM:SS, as sbatch reads it
        minutes = int(a) + (1 if int(b) else 0)
    else:
        minutes = int(days or 0) * 1440 + int(a) * 60 + int(b or 0) + (1 if c and int(c) else 0)
    if minutes <= 0:
        raise ValueError(f"a time limit is positive, got {v!r}")
    return minutes


def parse_accuracy(v: Any) -> float:
    """An accuracy or a margin as a fraction: 0.8, '80%', '2pt' / '2 points' (= 0.02)."""
    if isinstance(v, bool):
        raise ValueError(f"expected an accuracy such as 0.8, '80%' or '2pt', got {v!r}")
    if isinstance(v, (int, float)):
        x = float(v)
    else:
        m = re.fullmatch(r"\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*(%|pts?|points?)?\s*", str(v))
        if not m:
            raise ValueError(f"expected an accuracy such as 0.8, '80%' or '2pt', got {v!r}")
        x = float(m.group(1)) / (100.0 if m.group(2) else 1.0)
    if not -1 <= x <= 1:
        raise ValueError(f"a bare number is a fraction of the test set (0.8 = 80%); write points as '{x:g}pt', got {v!r}")
    return x


CLAIM_KINDS = ("beats", "matches", "search_accuracy")


class ClaimSpec(Strict):
    """One expectation over the study's own results (`expect:`); judges results, never part of a cell's key.

    Exactly one of: `beats: ARM` (the lower end of the paired interval of ticket - ARM lies above
    `by`), `matches: ARM` (the interval lies within ±`within`), `search_accuracy: 0.8` (the
    search's test accuracy at `rounds`, default 0, is at least this). `sources`, `targets`,
    `rounds`, `min_density` and `max_density` select the comparisons (default: all of them).
    """

    name: str
    beats: Optional[str] = None
    matches: Optional[str] = None
    search_accuracy: Optional[float] = None
    by: float = 0.0
    within: Optional[float] = None  # None: stats.MATCH_TOLERANCE (1 point)
    sources: Optional[list[str]] = None
    targets: Optional[list[str]] = None
    rounds: Optional[list[int]] = None
    min_density: Optional[float] = Field(None, gt=0, le=1)
    max_density: Optional[float] = Field(None, gt=0, le=1)

    @field_validator("search_accuracy", "by", "within", mode="before")
    @classmethod
    def _accuracy(cls, v: Any) -> Any:
        return None if v is None else parse_accuracy(v)

    @field_validator("sources", "targets", "rounds", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        if isinstance(v, str) and "[" in v:  # 'digits[0-4]': one data set, not a comma list
            return [v]
        return as_list(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a claim needs a name (it names the test case in JUnit reports)")
        return v.strip()

    @model_validator(mode="after")
    def _one_kind(self) -> "ClaimSpec":
        given_kinds = [k for k in CLAIM_KINDS if getattr(self, k) is not None]
        if len(given_kinds) != 1:
            raise ValueError(f"give exactly one of {', '.join(CLAIM_KINDS)} (got {', '.join(given_kinds) or 'none'})")
        kind = given_kinds[0]
        if "by" in self.model_fields_set and kind != "beats":
            raise ValueError("'by' (the margin to beat) goes with 'beats'")
        if self.within is not None and kind != "matches":
            raise ValueError("'within' (the tolerance) goes with 'matches'")
        if self.within is not None and self.within <= 0:
            raise ValueError(f"'within' is a positive tolerance, got {self.within:g}")
        if kind == "search_accuracy" and self.targets is not None:
            raise ValueError("a search has no target: select searches with 'sources' and 'rounds'")
        if self.min_density is not None and self.max_density is not None and self.min_density > self.max_density:
            raise ValueError(f"min_density {self.min_density:g} is above max_density {self.max_density:g}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in CLAIM_KINDS if getattr(self, k) is not None)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StudySpec(Strict):
    """A whole study file."""

    name: Optional[str] = None  # default: the file name without .yaml; names the output folder
    description: str = ""
    model: list[str]  # one model or a list
    image_size: Optional[int] = Field(None, ge=4, le=1024)  # None: each model's native size
    channels: Optional[Literal[1, 3]] = None  # None: the data sets' own (3 if they differ)
    deterministic: bool = False
    data_dir: Optional[str] = None  # relative paths are relative to the study file
    device: str = "auto"
    # CPU threads for training (None: PyTorch's default, one per core). Small nets on shared cores
    # train far faster on one thread: a busy 2-core machine measured 10-50x, as OpenMP workers
    # wait for each other at every op. Not part of any cell's key: it changes speed, not science.
    cpu_threads: Optional[int] = Field(None, ge=1, le=1024)
    train: TrainBlock = Field(default_factory=TrainBlock)  # for every network, both phases
    search: SearchBlock = Field(default_factory=SearchBlock)
    transfer: TransferBlock = Field(default_factory=TransferBlock)
    stability: Optional[StabilityBlock] = None  # off when absent (`false` too)
    sources: list[Source]
    targets: list[Target]
    launcher: LauncherBlock = Field(default_factory=LauncherBlock)  # where workers run: not science
    expect: list[ClaimSpec] = Field(default_factory=list)  # claims on the results (`study check`): not science

    @field_validator("model", "sources", "targets", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return as_list(v)

    @field_validator("stability", mode="before")
    @classmethod
    def _stability_off(cls, v: Any) -> Any:
        return None if v is False else v

    @field_validator("name")
    @classmethod
    def _name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _NAME.match(v):
            raise ValueError(f"{v!r} is not a usable folder name: use letters, digits, '_', '-' and '.'")
        return v

    @field_validator("model", "sources", "targets")
    @classmethod
    def _nonempty(cls, v: list[Any], info: Any) -> list[Any]:
        if not v:
            raise ValueError(f"no cells: give at least one {info.field_name.rstrip('s')}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", v):
            raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got {v!r}")
        return v


@dataclass
class Study:
    """A validated study: the spec, where it came from, and its data set names resolved."""

    spec: StudySpec
    file: str
    text: str
    lines: dict[Path_, int]
    sources: list[str]  # canonical data set names, one per spec.sources item
    targets: list[str]
    channels: Optional[int]  # resolved: None = each data set's own
    cells: list["Cell"] = field(default_factory=list)
    claims: list["Claim"] = field(default_factory=list)  # `expect:`, resolved against the cells

    @property
    def name(self) -> str:
        assert self.spec.name is not None
        return self.spec.name

    def error(self, path: Path_, message: str) -> UsageError:
        return UsageError(f"{self.file}:{line_of(self.lines, path)}: {format_path(path)}: {message}")


def load_study(path: str | Path, text: Optional[str] = None) -> Study:
    """Read and validate a study file; every problem is one UsageError naming file, line and key.

    `text`: the file's contents as recorded (a study folder's study.json), instead of reading `path`.
    """
    path = Path(path)
    file = str(path)
    if text is None:
        if not path.exists():
            raise UsageError(f"study file not found: {file}")
        if path.is_dir():
            raise UsageError(f"{file} is a folder; give a study file (.yaml)")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"cannot read {file}: {err}") from None
    data, lines = compose(text, file)
    if data is None:
        raise UsageError(f"{file}:1: the study file is empty", "see studies/quickstart.yaml for an example")
    if not isinstance(data, dict):
        raise UsageError(f"{file}:1: a study file is a mapping of keys (name, model, sources, targets, ...)")
    if any(not isinstance(k, str) for k in data):
        bad = next(k for k in data if not isinstance(k, str))
        raise UsageError(f"{file}:{line_of(lines, (bad,))}: {bad!r}: keys must be names")
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as err:
        raise schema_error(err, file, lines, StudySpec) from None
    if spec.name is None:
        stem = path.name.rsplit(".", 1)[0]
        spec.name = stem if _NAME.match(stem) else "study"
    if spec.data_dir:
        d = Path(spec.data_dir).expanduser()
        spec.data_dir = str(d if d.is_absolute() else (path.parent / d))
    study = Study(spec, file, text, lines, [], [], spec.channels)
    _check_names(study)
    from ticketx.study.cells import expand

    study.cells = expand(study)  # resolves every configuration: errors surface here, before training
    study.claims = resolve_claims(study)  # claims name only what the cells produce
    return study


def _data_name(study: Study, path: Path_, item: Target) -> str:
    from ticketx.data import parse_data

    try:
        base = parse_data(item.data)
    except UsageError as err:
        # `- digits[5-9]` (a plain string) is the item itself; `- data: ...` names the key.
        where = path + ("data",) if path + ("data",) in study.lines else path
        raise study.error(where, str(err)) from None
    if item.classes is None:
        return base.name
    if base.classes is not None:
        raise study.error(path + ("classes",), f"{item.data!r} already selects classes; give them in data or in classes, not both")
    try:
        return parse_data(f"{item.data}[{item.classes}]").name
    except UsageError as err:
        raise study.error(path + ("classes",), str(err)) from None


def _check_names(study: Study) -> None:
    from ticketx.data import DATASETS, parse_data
    from ticketx.models import model_info

    spec = study.spec
    for i, m in enumerate(spec.model):
        try:
            model_info(m)
        except UsageError as err:
            raise study.error(("model", i) if len(spec.model) > 1 else ("model",), str(err)) from None
    study.sources = [_data_name(study, ("sources", i), s) for i, s in enumerate(spec.sources)]
    study.targets = [_data_name(study, ("targets", i), t) for i, t in enumerate(spec.targets)]
    if spec.channels is None:
        # A ticket's first layer is sized by its data set's channels: when the sets differ, use RGB
        # everywhere (grayscale replicated), as Morcos et al. 2019 did for Fashion-MNIST.
        known = {DATASETS[parse_data(n).base].channels for n in study.sources + study.targets if parse_data(n).base in DATASETS}
        study.channels = 3 if len(known) > 1 else None


def train_spec(study: Study, model: str, phase: str, optimizer: Optional[str]) -> TrainSpec:
    """Training settings of one phase ('search' or 'transfer') for one model and optimizer.

    Later overrides win: the model's paper defaults, `train`, `train.<optimizer>`, `<phase>.train`,
    `<phase>.train.<optimizer>`. A paper's learning rate belongs to its optimizer: switching
    optimizer without giving `lr` anywhere uses that optimizer's default (spec.train_settings).
    """
    from ticketx.models import model_info

    spec = study.spec
    blocks = [spec.train, getattr(spec, phase).train]
    common: dict[str, Any] = {}
    for b in blocks:
        common.update(b.chain("sgd")[0])
    defaults = model_info(model).train_defaults
    opt = optimizer or common.get("optimizer") or defaults["optimizer"]
    chain = [part for b in blocks for part in b.chain(opt)]
    try:
        return train_settings(defaults, *chain, {"optimizer": opt})
    except ValidationError as err:
        e = err.errors()[0]
        key = str(e["loc"][0]) if e.get("loc") else ""
        msg = error_message(e)
        # point at the block that set the bad value (the latest override wins)
        candidates = [(phase, "train", opt, key), (phase, "train", key), ("train", opt, key), ("train", key)]
        where = next((c for c in candidates if c in study.lines), (phase, "train", key))
        raise study.error(where, f"{msg} (for {model} with {opt})") from None


def prune_spec(study: Study, model: str) -> PruneSpec:
    over = {k: v for k, v in study.spec.search.prune.model_dump().items() if v is not None}
    try:
        return resolve_prune(model, over)
    except ValidationError as err:
        e = err.errors()[0]
        raise study.error(("search", "prune"), f"{'.'.join(map(str, e['loc']))}: {e['msg']}") from None


def check_lengths(study: Study, model: str, train: TrainSpec, prune: PruneSpec) -> None:
    problem = rewind_problem(prune.rewind, train.length)
    if problem:
        raise study.error(("search", "prune", "rewind"), f"{problem} for {model}")


def own_init_seed(seed: int, init: str) -> Optional[int]:
    """The own ticket's weight-initialisation seed: the source's for 'shared', else one derived from it."""
    if init == "shared":
        return None
    from ticketx.runtime import own_ticket_init

    return own_ticket_init(seed)


# ---- expect: claims resolved against what the study produces ------------------------------


@dataclass(frozen=True)
class Claim:
    """A validated claim: its kind, arm and threshold, and the comparisons it covers.

    `points[model]` lists the (what, value) the claim covers: ('round', r) or ('density', d) as
    the study's transfer cells are keyed; for `search_accuracy`, ('round', r) of the searches.
    `densities[model]` maps each point to its density (for messages).
    """

    name: str
    kind: str
    arm: Optional[str]  # beats / matches: the baseline or 'own-ticket'
    threshold: float  # beats: margin; matches: tolerance; search_accuracy: the least accuracy
    sources: Optional[tuple[str, ...]]  # canonical data set names; None: every source
    targets: Optional[tuple[str, ...]]
    points: dict[str, tuple[tuple[str, Any], ...]]
    densities: dict[str, dict[tuple[str, Any], float]]
    where: str  # 'file:line' of the claim, for reports


def round_densities(study: Study, model: str, prune: PruneSpec, data: str, target: Optional[str] = None) -> list[float]:
    """The whole-network density of every round 0..rounds, before anything trains: of the search on
    `data`, or (with `target`) of its transfer there, whose output layer is rebuilt for the
    target's classes (dense with transfer.head_dense, else at the ticket's output-layer density).

    Exact-k pruning removes round(rate x remaining) weights per group whatever the weights are,
    so the counts follow from the tensor shapes alone (the model built on the meta device); a
    global group's share of the output layer is taken as the group's. Falls back to the body's
    (1 - rate)^r when the model cannot be built here (an image folder's classes are only known
    once it is scanned).
    """
    from ticketx.pruning import _groups, num_to_prune

    nominal = [(1 - prune.rate) ** r for r in range(prune.rounds + 1)]
    shapes = _sizes(study, model, data)
    out_head = _sizes(study, model, target) if target is not None else shapes
    if shapes is None or out_head is None:
        return nominal
    sizes, names, head = shapes
    new_head = out_head[0][head]
    groups = _groups(names, prune.scope, head, prune.head_rate, prune.rate, set(prune.keep_dense or ()))
    remaining = [sum(sizes[n] for n in g) for g, _ in groups]
    grouped = {n for g, _ in groups for n in g}
    fixed = sum(v for n, v in sizes.items() if n not in grouped and n != head)  # kept dense: never pruned
    total = sum(sizes.values()) - sizes[head] + new_head
    out = [1.0]
    for _ in range(prune.rounds):
        remaining = [left - num_to_prune(left, rate) for left, (_, rate) in zip(remaining, groups)]
        kept = fixed
        for (g, _), start, left in zip(groups, [sum(sizes[n] for n in g) for g, _ in groups], remaining):
            frac = left / start if start else 1.0
            body = sum(sizes[n] for n in g if n != head)
            kept += frac * body
            if head in g:
                kept += new_head if (target is not None and study.spec.transfer.head_dense) else round(frac * new_head)
        if head not in grouped:
            kept += new_head
        out.append(kept / total)
    return out


def _sizes(study: Study, model: str, data: str) -> Optional[tuple[dict[str, int], list[str], str]]:
    """(prunable tensor sizes, their names, the output layer's name) of `model` built for `data`."""
    import torch

    from ticketx.data import DATASETS, parse_data
    from ticketx.models import build_model, head_name, model_info, prunable_names

    try:
        d = parse_data(data)
        info = model_info(model)
        classes = len(d.classes) if d.classes is not None else DATASETS[d.base].num_classes
        channels = study.channels or (DATASETS[d.base].channels if d.base in DATASETS else info.channels)
        with torch.device("meta"):
            net = build_model(model, classes, channels, study.spec.image_size or info.image_size)
        names = prunable_names(net)
        return {n: p.numel() for n, p in net.named_parameters() if n in names}, names, head_name(net)
    except Exception:  # noqa: BLE001 - reported when the model is built for real
        return None


def _pick(study: Study, path: Path_, names: list[str], produced: list[str], what: str) -> tuple[str, ...]:
    """Canonical names of `names`, each one the study produces (else a 'did you mean' error)."""
    import difflib

    from ticketx.data import parse_data

    out = []
    for j, name in enumerate(names):
        try:
            canon = parse_data(name).name
        except UsageError:
            canon = name
        if canon not in produced:
            close = difflib.get_close_matches(canon, produced, n=1, cutoff=0.5)
            raise study.error(path + (j,), f"{name!r} is not a {what} of this study"
                              + (f"; did you mean {close[0]!r}?" if close else "") + f" (its {what}s: {', '.join(produced)})")
        out.append(canon)
    return tuple(dict.fromkeys(out))


def resolve_claims(study: Study) -> list[Claim]:
    """Each `expect:` item checked against the expanded cells: names, arms, rounds and densities it
    refers to must be ones the study produces (an error before anything trains)."""
    from ticketx.errors import did_you_mean
    from ticketx.stats import MATCH_TOLERANCE
    from ticketx.study.cells import _points

    spec = study.spec
    claims: list[Claim] = []
    seen: dict[str, int] = {}
    arms = [*spec.transfer.baselines, *(["own-ticket"] if spec.transfer.own_ticket else [])]
    for i, c in enumerate(spec.expect):
        at = ("expect", i)
        if c.name in seen:
            raise study.error(at + ("name",), f"claim name {c.name!r} is used twice (also expect[{seen[c.name]}]); names identify claims in reports")
        seen[c.name] = i
        kind = c.kind
        arm = getattr(c, kind) if kind in ("beats", "matches") else None
        if arm is not None and arm not in arms:
            from ticketx.baselines import BASELINES

            if arm in BASELINES or arm == "own-ticket":
                why = "transfer.own_ticket is false" if arm == "own-ticket" else "it is not in transfer.baselines"
                raise study.error(at + (kind,), f"the study does not train {arm!r} ({why}; it trains: {', '.join(arms)})")
            raise study.error(at + (kind,), did_you_mean(arm, arms, "arm").replace("choose from", "the study trains"))
        sources = _pick(study, at + ("sources",), c.sources, study.sources, "source") if c.sources is not None else None
        targets = _pick(study, at + ("targets",), c.targets, study.targets, "target") if c.targets is not None else None
        points: dict[str, tuple[tuple[str, Any], ...]] = {}
        densities: dict[str, dict[tuple[str, Any], float]] = {}
        for model in spec.model:
            prune = prune_spec(study, model)
            data = (sources or tuple(study.sources))[0]
            target = None if kind == "search_accuracy" else (targets or tuple(study.targets))[0]
            dens = round_densities(study, model, prune, data, target)
            if kind == "search_accuracy":
                avail = [("round", r) for r in range(prune.rounds + 1)]
                wanted = c.rounds if c.rounds is not None else ([0] if c.min_density is None and c.max_density is None else None)
            else:
                avail = _points(study, model, prune)
                wanted = c.rounds
            density = {p: (p[1] if p[0] == "density" else dens[p[1]]) for p in avail}
            if wanted is not None:
                if any(p[0] == "density" for p in avail):
                    raise study.error(at + ("rounds",), "the study transfers at densities (transfer.densities): select with min_density / max_density")
                have = [p[1] for p in avail]
                missing = [r for r in wanted if r not in have]
                if missing:
                    raise study.error(at + ("rounds",), f"round {missing[0]} is not one the study "
                                      f"{'searches' if kind == 'search_accuracy' else 'transfers'} (rounds: {', '.join(map(str, have))})")
                avail = [p for p in avail if p[1] in wanted]
            lo, hi = c.min_density, c.max_density
            picked = [p for p in avail if (lo is None or density[p] >= lo * (1 - 1e-9)) and (hi is None or density[p] <= hi * (1 + 1e-9))]
            if not picked:
                bounds = " and ".join(x for x in (f">= {lo:g}" if lo is not None else "", f"<= {hi:g}" if hi is not None else "") if x)
                listed = ", ".join(f"{p[0]} {p[1]:g}: {density[p]:.4g}" for p in avail)
                raise study.error(at + ("max_density" if hi is not None else "min_density",),
                                  f"no density of the study is {bounds} for {model} ({listed})")
            points[model] = tuple(picked)
            densities[model] = {p: density[p] for p in picked}
        threshold = (c.by if kind == "beats" else (c.within if c.within is not None else MATCH_TOLERANCE)
                     if kind == "matches" else float(c.search_accuracy))  # type: ignore[arg-type]
        claims.append(Claim(c.name, kind, arm, threshold, sources, targets, points, densities,
                            f"{study.file}:{line_of(study.lines, at)}"))
    return claims
