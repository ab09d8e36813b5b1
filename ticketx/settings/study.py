"""The study file: its base schema, line-numbered parsing and per-phase settings (resolved settings).

Every study has the keys below; the study axes (`ticketx.study.axes`) add theirs, and
`assemble` builds the whole schema from both. Validation happens before any training: schema
(unknown keys with "did you mean", types, ranges) here, then names and cross-field checks by the
axes (`ticketx.study.load`). Every error is one line naming the file, the line and the key path:
`studies/x.yaml:12: sources[0].optimzer: unknown key`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from ticketx.errors import UsageError
from ticketx.settings.base import Strict, as_list, check_seeds, error_message, partial, round_list, shorten, shorten_text
from ticketx.settings.overrides import Override, apply, origin, under
from ticketx.settings.train import (
    PruneSpec,
    TrainSpec,
    resolve_prune,
    rewind_problem,
    train_settings,
)
from ticketx.settings.transfer import default_baselines
from ticketx.settings.yamlfile import Path_, compose, format_path, line_of, max_bytes, schema_error, too_large

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
    """Ticket-search settings: training overrides and pruning (the search axes add their keys)."""

    train: TrainBlock = Field(default_factory=TrainBlock)
    prune: PruneSettings = Field(default_factory=PruneSettings)  # type: ignore[valid-type]


class TransferBlock(Strict):
    """Transfer settings: how tickets are retrained on each target and against what (the transfer axes
    add their keys: optimizer, rounds or densities, seeds)."""

    train: TrainBlock = Field(default_factory=TrainBlock)
    baselines: list[str] = Field(default_factory=default_baselines)
    own_ticket: bool = True  # also find a ticket on each target and retrain it next to the others
    # The own ticket's search starts from an initialisation independent of the source ticket's
    # by default, so "the transferred ticket matches the own ticket" is not built in by shared
    # weights; 'shared' (same init, different data) is a legitimate design when asked for.
    own_ticket_init: Literal["independent", "shared"] = "independent"
    # The output layer rule of settings.transfer.TransferSpec.head: 'auto' by default (kept on the
    # ticket's own data set and classes, new elsewhere), 'new', or 'keep' (only when the ticket's
    # class names are the target's). 'reset' is the old name of 'new'.
    head: Literal["auto", "new", "keep"] = "auto"
    head_dense: bool = False
    # What the pruned weights hold while every arm trains (settings.transfer.TransferSpec.mask0;
    # Zhou et al. 2019): zero (default; the cells of before), frozen, zhou.
    mask0: Literal["zero", "frozen", "zhou"] = "zero"

    @field_validator("head", mode="before")
    @classmethod
    def _head(cls, v: Any) -> Any:
        return "new" if v == "reset" else v

    @field_validator("baselines", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        if isinstance(v, str) and "," in v:  # 'random-mask, dense'
            return [s.strip() for s in v.split(",") if s.strip()]
        return as_list(v)

    @field_validator("baselines")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from ticketx.baselines import BASELINES

        try:
            v = BASELINES.check(v)
        except UsageError as err:
            raise ValueError(str(err)) from None
        if "invert" in v:  # a study's tickets are IMP searches (ticketx.baselines.invert_problem)
            raise ValueError("invert is defined for prune-at-init tickets (Frankle et al. 2021), and a study's tickets "
                             "are IMP searches: there is no single ranking of an IMP ticket's weights to invert")
        return v


class StabilityBlock(Strict):
    """Linear mode connectivity of each source ticket (ticketx.stability; Frankle et al. 2020).

    Off when the study has no `stability:` key. Per source ticket and round: two copies trained
    from the rewind point with the ticket's own recipe and data set, data seeds `seeds`; the
    error barrier on the straight line between them, at `points` evenly spaced alphas.
    """

    # 'all': every round, the dense network (round 0) included, so barrier vs density starts at
    # 100% (the reference: is the dense network itself stable from this rewind point?).
    rounds: Any = "all"
    seeds: list[int] = Field(default_factory=lambda: [0, 1])  # the copies' data-order seeds, in pairs
    points: int = Field(11, ge=3, le=101)  # alpha = 0, 1/(points-1), ..., 1 (3 = ends and midpoint)

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        return {} if v is True else v  # `stability: true`: every default

    @field_validator("rounds", mode="before")
    @classmethod
    def _rounds(cls, v: Any) -> Any:
        return round_list(v)  # the same forms and checks as transfer.rounds (settings.base)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_list(cls, v: Any) -> Any:
        if isinstance(v, str) and "," in v:  # '0, 1'
            return [s.strip() for s in v.split(",") if s.strip()]
        return as_list(v)

    @field_validator("seeds")
    @classmethod
    def _two_seeds(cls, v: list[int]) -> list[int]:
        if len(v) < 2 or len(v) % 2:
            raise ValueError(f"give the copies' data seeds in pairs (such as [0, 1], or [0, 1, 2, 3] for a barrier with "
                             f"an interval over two pairs), got {shorten(v)}")
        return check_seeds(v)


def _data_item(v: Any) -> Any:
    return {"data": v} if isinstance(v, str) else v


def _classes_text(v: Any) -> Any:
    """`classes: 0-4`, `classes: [0, 5, 7]` or `classes: 3` -> '0-4', '0,5,7', '3'."""
    if v is None:
        return v
    if isinstance(v, bool):
        raise ValueError(f"expected class indices such as 0-4 or [0, 5, 7], got {shorten(v)}")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in v):
        return ",".join(map(str, v))
    if isinstance(v, str):
        return v
    raise ValueError(f"expected class indices such as 0-4 or [0, 5, 7], got {shorten(v)}")


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
    """A data set to find tickets on (the search axes add their per-source keys: optimizer, seeds)."""


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


class TrackingBlock(Strict):
    """Where the study's networks are logged (ticketx.trackers): `tracking: tensorboard`,
    `tracking: wandb:my-project` or {tracker: mlflow, where: URI}. Not part of any cell's key:
    it changes where curves go, not what is computed. `study run --tracker` overrides it."""

    tracker: str
    where: Optional[str] = None  # a folder (tensorboard), a project (wandb), a tracking URI (mlflow); default: under the study folder

    @model_validator(mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        if isinstance(v, str):
            name, sep, where = v.partition(":")
            return {"tracker": name.strip(), **({"where": where.strip()} if sep and where.strip() else {})}
        return v

    @field_validator("tracker")
    @classmethod
    def _known(cls, v: str) -> str:
        from ticketx.trackers import TRACKERS

        try:
            TRACKERS[v.strip().lower()]
        except UsageError as err:
            raise ValueError(str(err)) from None
        return v.strip().lower()

    @property
    def text(self) -> str:
        """As `--tracker` takes it: 'NAME[:where]'."""
        return f"{self.tracker}:{self.where}" if self.where else self.tracker


def parse_minutes(v: Any) -> int:
    """A Slurm time limit as minutes: 90, '90', '1:30:00', '2-00:00:00', '45:00' (MM:SS)."""
    if isinstance(v, bool):
        raise ValueError(f"expected minutes or HH:MM:SS, got {shorten(v)}")
    if isinstance(v, (int, float)):
        if v <= 0:
            raise ValueError(f"a time limit is positive, got {v}")
        return max(1, int(round(v)))
    text = str(v).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise ValueError(f"expected minutes or [D-]HH:MM:SS, got {shorten(v)}")
    days, a, b, c = m.groups()
    if b is None and c is None and days is None:
        minutes = int(a)
    elif c is None and days is None:  # MM:SS, as sbatch reads it
        minutes = int(a) + (1 if int(b) else 0)
    else:
        minutes = int(days or 0) * 1440 + int(a) * 60 + int(b or 0) + (1 if c and int(c) else 0)
    if minutes <= 0:
        raise ValueError(f"a time limit is positive, got {shorten(v)}")
    return minutes


def parse_accuracy(v: Any) -> float:
    """An accuracy or a margin as a fraction: 0.8, '80%', '2pt' / '2 points' (= 0.02)."""
    if isinstance(v, bool):
        raise ValueError(f"expected an accuracy such as 0.8, '80%' or '2pt', got {shorten(v)}")
    if isinstance(v, (int, float)):
        x = float(v)
    else:
        m = re.fullmatch(r"\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*(%|pts?|points?)?\s*", str(v))
        if not m:
            raise ValueError(f"expected an accuracy such as 0.8, '80%' or '2pt', got {shorten(v)}")
        x = float(m.group(1)) / (100.0 if m.group(2) else 1.0)
    if not -1 <= x <= 1:
        raise ValueError(f"a bare number is a fraction of the test set (0.8 = 80%); write points as '{x:g}pt', got {v!r}")
    return x


CLAIM_KINDS = ("beats", "matches", "search_accuracy")


def claim_values(v: Any) -> Any:
    """A claim's filter as written -> a list: 'digits[0-4]' is one data set, not a comma list."""
    if isinstance(v, str) and "[" in v:
        return [v]
    return as_list(v)


ClaimValues = Annotated[Optional[list[Any]], BeforeValidator(claim_values)]


class ClaimSpec(Strict):
    """One expectation over the study's own results (`expect:`); judges results, never part of a cell's key.

    Exactly one of: `beats: ARM` (the lower end of the paired interval of ticket - ARM lies above
    `by`), `matches: ARM` (the interval lies within ±`within`), `search_accuracy: 0.8` (the
    search's test accuracy at `rounds`, default 0, is at least this). `rounds`, `min_density`,
    `max_density` and the keys the study axes add (`sources`, `targets`, ...) select the
    comparisons (default: all of them).
    """

    name: str
    beats: Optional[str] = None
    matches: Optional[str] = None
    search_accuracy: Optional[float] = None
    by: float = 0.0
    within: Optional[float] = None  # None: stats.MATCH_TOLERANCE (1 point)
    rounds: Optional[list[int]] = None  # round points only (with `weights`, both kinds of point)
    weights: Optional[list[int]] = None  # weights points (transfer.weights) only
    min_density: Optional[float] = Field(None, gt=0, le=1)
    max_density: Optional[float] = Field(None, gt=0, le=1)

    @field_validator("search_accuracy", "by", "within", mode="before")
    @classmethod
    def _accuracy(cls, v: Any) -> Any:
        return None if v is None else parse_accuracy(v)

    @field_validator("rounds", "weights", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return claim_values(v)

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
        if self.min_density is not None and self.max_density is not None and self.min_density > self.max_density:
            raise ValueError(f"min_density {self.min_density:g} is above max_density {self.max_density:g}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in CLAIM_KINDS if getattr(self, k) is not None)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StudySpec(Strict):
    """A whole study file: the keys every study has. `assemble` adds the study axes' keys (model,
    sources, targets, search.seeds, transfer.optimizer, ...) and the blocks that hold them."""

    name: Optional[str] = None  # default: the file name without .yaml; names the output folder
    description: str = ""
    image_size: Optional[int] = Field(None, ge=4, le=1024)  # None: each model's native size
    channels: Optional[Literal[1, 3]] = None  # None: the data sets' own (3 if they differ)
    deterministic: bool = False
    data_dir: Optional[str] = None  # relative paths are relative to the study file
    device: str = "auto"
    # CPU threads for training (None: PyTorch's default, one per core). Small nets on shared cores
    # train far faster on one thread: a busy 2-core machine measured 10-50x, as OpenMP workers
    # wait for each other at every op. Not part of any cell's key: it changes speed, not science.
    cpu_threads: Optional[int] = Field(None, ge=1, le=1024)
    # Networks trained together in one step (ticketx.cohort): a number or 'auto'. Not part of any
    # cell's key either: it changes speed (and float rounding, within tolerance), not what is trained.
    cohort: Union[Literal["auto"], int] = 1
    train: TrainBlock = Field(default_factory=TrainBlock)  # for every network, both phases
    search: SearchBlock = Field(default_factory=SearchBlock)
    transfer: TransferBlock = Field(default_factory=TransferBlock)
    stability: Optional[StabilityBlock] = None  # off when absent (`false` too)
    launcher: LauncherBlock = Field(default_factory=LauncherBlock)  # where workers run: not science
    tracking: Optional[TrackingBlock] = None  # where networks are logged (TensorBoard, W&B, MLflow): not science
    expect: list[ClaimSpec] = Field(default_factory=list)  # claims on the results (`study check`): not science

    @field_validator("stability", mode="before")
    @classmethod
    def _stability_off(cls, v: Any) -> Any:
        return None if v is False else v

    @field_validator("name")
    @classmethod
    def _name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _NAME.match(v):
            raise ValueError(f"{shorten(v)} is not a usable folder name: use letters, digits, '_', '-' and '.'")
        return v

    @field_validator("cohort")
    @classmethod
    def _cohort(cls, v: Any) -> Any:
        if v != "auto" and not 1 <= v <= 1024:
            raise ValueError(f"expected a number of networks from 1 to 1024 or 'auto', got {v!r}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", v):
            raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got {shorten(v)}")
        return v


@dataclass(frozen=True)
class OfBlocks:
    """An annotation that names an extended block: `OfBlocks(lambda b: list[b["source"]])`."""

    annotation: Callable[[dict[str, Any]], Any]


# The blocks a study axis may add keys to, and the classes they extend.
BLOCK_BASES: dict[str, type[Strict]] = {"search": SearchBlock, "transfer": TransferBlock, "source": Source}
Fields = dict[str, tuple[Any, Any]]


def assemble(fields: dict[str, Fields], claim_keys: list[str]) -> type[StudySpec]:
    """The study file's schema: the base blocks extended with the axes' keys.

    `fields[block]` maps a key to (annotation, default) for the blocks 'study', 'search',
    'transfer' and 'source'; an annotation may be a function of the extended blocks (a key whose
    items are sources: `lambda blocks: list[blocks['source']]`). `claim_keys` are the `expect:`
    keys that select comparisons by an axis (`sources`, `targets`).
    """
    from pydantic import create_model

    def resolve(spec: Fields, blocks: dict[str, Any]) -> dict[str, Any]:
        return {k: (ann.annotation(blocks) if isinstance(ann, OfBlocks) else ann, default) for k, (ann, default) in spec.items()}

    blocks: dict[str, Any] = {}
    for name, base in BLOCK_BASES.items():
        blocks[name] = create_model(base.__name__, __base__=base, **resolve(fields.get(name, {}), blocks))
    claim = create_model("ClaimSpec", __base__=ClaimSpec, **{k: (ClaimValues, None) for k in claim_keys})
    top = resolve(fields.get("study", {}), blocks)
    top.update(search=(blocks["search"], Field(default_factory=blocks["search"])),
               transfer=(blocks["transfer"], Field(default_factory=blocks["transfer"])),
               expect=(list[claim], Field(default_factory=list)))  # type: ignore[valid-type]
    return create_model("StudySpec", __base__=StudySpec, **top)


@dataclass
class Study:
    """A validated study: the spec, where it came from, and its data set names resolved."""

    spec: StudySpec
    file: str
    text: str
    lines: dict[Path_, int]
    channels: Optional[int]  # resolved: None = each data set's own (3 when they differ: the target axis)
    sources: list[str] = field(default_factory=list)  # canonical data set names, one per spec.sources item
    targets: list[str] = field(default_factory=list)
    cells: list[Any] = field(default_factory=list)  # ticketx.study.cells: the grid, expanded by the study axes
    claims: list[Any] = field(default_factory=list)  # ticketx.study.claims: `expect:`, resolved against the cells
    overrides: list[Override] = field(default_factory=list)  # `--set key=value`, applied before validation
    # Settings resolved once per (model, phase, optimizer), not once per cell: a grid of 100k cells
    # resolves the same few (train_spec, prune_spec). Never changed after they are made.
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        assert self.spec.name is not None
        return self.spec.name

    def error(self, path: Path_, message: str) -> UsageError:
        return located(self.file, self.lines, path, shorten_text(message), self.overrides)


def located(file: str, lines: dict[Path_, int], path: Path_, message: str, overrides: list[Override]) -> UsageError:
    """'file:line: key.path: message', or '--set key: message' when an override set that key (or
    one above it); an error about a block an override changed says which override."""
    o = origin(path, overrides)
    if o is not None:
        inner = f"{format_path(path)}: " if path != o.path else ""
        return UsageError(f"{o.name}: {inner}{message}")
    below = under(path, overrides)
    note = f" (with {', '.join('--set ' + b.text for b in below)})" if below else ""
    return UsageError(f"{file}:{line_of(lines, path)}: {format_path(path)}: {message}{note}")


def parse_study(path: str | Path, schema: type[StudySpec], text: Optional[str] = None,
                overrides: Optional[list[Override]] = None) -> Study:
    """Read a study file and validate it against `schema` (`assemble`); every problem is one UsageError
    naming file, line and key (or the override that set it). `text`: the file's contents as
    recorded (a study folder's study.json); `overrides`: `--set` values applied before validation."""
    path = Path(path)
    file = str(path)
    if text is None:
        if not path.exists():
            raise UsageError(f"study file not found: {file}")
        if path.is_dir():
            raise UsageError(f"{file} is a folder; give a study file (.yaml)")
        limit = max_bytes()
        try:
            size = path.stat().st_size
            if size > limit:  # refused before reading: a study file is never a large file
                raise too_large(file, size, limit)
            with open(path, "rb") as fh:
                raw = fh.read(limit + 1)  # a file that grows, or a pipe, is cut here
            if len(raw) > limit:
                raise too_large(file, max(size, len(raw)), limit)
            text = raw.decode()
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
    overrides = list(overrides or [])
    data = apply(data, overrides)
    try:
        spec = schema.model_validate(data)
    except ValidationError as err:
        raise schema_error(err, file, lines, schema, lambda loc, msg: located(file, lines, loc, msg, overrides)) from None
    if spec.name is None:
        stem = path.name.rsplit(".", 1)[0]
        spec.name = stem if _NAME.match(stem) else "study"
    if spec.data_dir:
        d = Path(spec.data_dir).expanduser()
        spec.data_dir = str(d if d.is_absolute() else (path.parent / d))
    return Study(spec, file, text, lines, spec.channels, overrides=overrides)


def data_name(study: Study, path: Path_, item: Target) -> str:
    """The canonical name of a data set item of the study file (`digits[0-4]`), or a file:line error."""
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


def train_spec(study: Study, model: str, phase: str, optimizer: Optional[str]) -> TrainSpec:
    """Training settings of one phase ('search' or 'transfer') for one model and optimizer.

    Later overrides win: the model's paper defaults, `train`, `train.<optimizer>`, `<phase>.train`,
    `<phase>.train.<optimizer>`. A paper's learning rate belongs to its optimizer: switching
    optimizer without giving `lr` anywhere uses that optimizer's default (spec.train_settings).
    """
    from ticketx.models import model_info

    memo = ("train_spec", model, phase, optimizer)
    if memo in study.memo:
        return study.memo[memo]
    spec = study.spec
    blocks = [spec.train, getattr(spec, phase).train]
    common: dict[str, Any] = {}
    for b in blocks:
        common.update(b.chain("sgd")[0])
    defaults = model_info(model).train_defaults
    opt = optimizer or common.get("optimizer") or defaults["optimizer"]
    chain = [part for b in blocks for part in b.chain(opt)]
    try:
        study.memo[memo] = train_settings(defaults, *chain, {"optimizer": opt})
        return study.memo[memo]
    except ValidationError as err:
        e = err.errors()[0]
        key = str(e["loc"][0]) if e.get("loc") else ""
        msg = error_message(e)
        # point at the block that set the bad value (the latest override wins)
        candidates = [(phase, "train", opt, key), (phase, "train", key), ("train", opt, key), ("train", key)]
        where = next((c for c in candidates if c in study.lines or origin(c, study.overrides)), (phase, "train", key))
        raise study.error(where, f"{msg} (for {model} with {opt})") from None


def prune_spec(study: Study, model: str) -> PruneSpec:
    memo = ("prune_spec", model)
    if memo in study.memo:
        return study.memo[memo]
    over = {k: v for k, v in study.spec.search.prune.model_dump().items() if v is not None}
    try:
        study.memo[memo] = resolve_prune(model, over)
        return study.memo[memo]
    except ValidationError as err:
        e = err.errors()[0]
        raise study.error(("search", "prune"), f"{'.'.join(map(str, e['loc']))}: {e['msg']}") from None


def check_lengths(study: Study, model: str, train: TrainSpec, prune: PruneSpec) -> None:
    problem = rewind_problem(prune.rewind, train.length)
    if problem:
        raise study.error(("search", "prune", "rewind"), f"{problem} for {model}")
