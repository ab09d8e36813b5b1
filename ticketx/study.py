"""Studies: one YAML file -> a grid of cells (ticket searches and transfers) -> run, skip, resume, collect.

A **cell** is one unit of work: a *search* cell finds one ticket (`find.find`), a *transfer* cell
retrains one round of one ticket on one target with one seed, with its baselines and the target's
own ticket (`transfer.transfer`). Every cell is keyed by a fingerprint of its full resolved
configuration and lives in `<out>/cells/<kind>-<readable name>-<key>/`; its `done.json` is written
last. So rerunning a study skips finished cells without loading any data, changing one setting
changes the keys (and so reruns) only of the cells it reaches, and an interrupted study resumes:
unfinished searches continue from their work folder, unfinished networks from their last epoch.

Networks trained by transfer cells live in one shared folder `<out>/runs/`, keyed by their own
configuration, so a network two cells share (the target's own ticket, retrained next to every
source's ticket) is trained once.

Validation happens before any training: schema (unknown keys with "did you mean", types, ranges),
then names (models, data sets, class subsets) and cross-field checks. Every error is one line
naming the file, the line and the key path: `studies/x.yaml:12: sources[0].optimzer: unknown key`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from ticketx.errors import TicketxError, UsageError
from ticketx.spec import BASELINES, FindSpec, PruneSpec, TrainSpec, TransferSpec
from ticketx.steps import check_step

STUDY_FORMAT = "ticketx-study"
STUDY_VERSION = 1


# --------------------------------------------------------------------------------------------
# Schema. Blocks mirror TrainSpec / PruneSpec with every field optional (an override), so the
# constraints (ranges, literals) are the very same ones the CLI enforces.


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _as_list(v: Any) -> Any:
    """A scalar where a list is expected is a list of one: `seeds: 0` == `seeds: [0]`."""
    return [v] if v is not None and not isinstance(v, (list, tuple)) else v


def _step_or_error(v: Any) -> Any:
    # check_step raises UsageError, which pydantic would not turn into a located error.
    if v is None:
        return v
    try:
        return check_step(v)
    except UsageError as err:
        raise ValueError(str(err)) from None


def _optional_fields(spec: type[BaseModel]) -> dict[str, Any]:
    fields = {}
    for name, info in spec.model_fields.items():
        fi = copy.deepcopy(info)
        fi.default, fi.default_factory = None, None
        fields[name] = (Optional[info.annotation], fi)
    return fields


class _TrainBase(_Block):
    @field_validator("length", "warmup", "eval_every", mode="before", check_fields=False)
    @classmethod
    def _steps(cls, v: Any) -> Any:
        return _step_or_error(v)

    @field_validator("length", check_fields=False)
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if v is not None and (v == "0" or float(v[:-2]) <= 0):
            raise ValueError("training length must be positive, e.g. '160ep' or '30000it'")
        return v

    @field_validator("milestones", mode="before", check_fields=False)
    @classmethod
    def _milestones(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s for s in v.replace(" ", "").split(",") if s]
        if isinstance(v, list):
            return [_step_or_error(s) for s in v]
        return v


class _PruneBase(_Block):
    @field_validator("rewind", mode="before", check_fields=False)
    @classmethod
    def _rewind(cls, v: Any) -> Any:
        return _step_or_error(v)

    @field_validator("keep_dense", mode="before", check_fields=False)
    @classmethod
    def _names(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s for s in v.replace(" ", "").split(",") if s]
        return v


TrainSettings = create_model("TrainSettings", __base__=_TrainBase, **_optional_fields(TrainSpec))
PruneSettings = create_model("PruneSettings", __base__=_PruneBase, **_optional_fields(PruneSpec))


class TrainBlock(TrainSettings):  # type: ignore[misc, valid-type]
    """Training overrides, plus per-optimizer overrides applied when that optimizer is used."""

    sgd: Optional[TrainSettings] = None  # type: ignore[valid-type]
    adam: Optional[TrainSettings] = None  # type: ignore[valid-type]

    def chain(self, optimizer: str) -> list[dict[str, Any]]:
        """[common overrides, overrides for `optimizer`], without unset keys."""
        common = {k: v for k, v in self.model_dump(exclude={"sgd", "adam"}).items() if v is not None}
        sub = getattr(self, optimizer)
        return [common, {k: v for k, v in sub.model_dump().items() if v is not None} if sub else {}]


class SearchBlock(_Block):
    """Ticket-search settings: training overrides, pruning, default seeds."""

    train: TrainBlock = Field(default_factory=TrainBlock)
    prune: PruneSettings = Field(default_factory=PruneSettings)  # type: ignore[valid-type]
    seeds: list[int] = Field(default_factory=lambda: [0])  # for sources that name none

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_list(cls, v: Any) -> Any:
        return _as_list(v)

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v: list[int]) -> list[int]:
        return _distinct_seeds(v)


def _distinct_seeds(v: list[int]) -> list[int]:
    if not v:
        raise ValueError("no cells: give at least one seed")
    if min(v) < 0 or len(set(v)) != len(v):
        raise ValueError(f"seeds must be distinct non-negative integers, got {v}")
    return v


class TransferBlock(_Block):
    """Transfer settings: what is retrained on each target, how, and against what."""

    train: TrainBlock = Field(default_factory=TrainBlock)
    # 'same' retrains each ticket with the optimizer it was found with; a list crosses them
    # (Morcos et al. 2019 sec. 4.3: tickets found with Adam trained with SGD and vice versa).
    optimizer: list[Literal["same", "sgd", "adam"]] = Field(default_factory=lambda: ["same"])
    rounds: Any = None  # 'all' (every pruned round), a round or a list of rounds
    densities: Optional[list[float]] = None  # else: the round whose density is closest to each
    seeds: list[int] = Field(default_factory=lambda: [0])
    baselines: list[Literal["random-mask", "random-reinit", "dense"]] = Field(default_factory=lambda: list(BASELINES))
    own_ticket: bool = True  # also find a ticket on each target and retrain it next to the others
    # A target's labels mean something else than the source's even when their number matches
    # (digits 0-4 vs 5-9), so by default every transferred network, the own ticket included,
    # gets a fresh output layer (pruned at random to the ticket's output-layer density).
    head: Literal["auto", "reset"] = "reset"
    head_dense: bool = False

    @field_validator("optimizer", "seeds", "baselines", "densities", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        if isinstance(v, str) and "," in v:  # 'sgd, adam'
            return [s.strip() for s in v.split(",") if s.strip()]
        return _as_list(v)

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v: list[int]) -> list[int]:
        return _distinct_seeds(v)

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
        if v is None or v == "all":
            return v
        v = _as_list(v)
        if not isinstance(v, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in v):
            raise ValueError(f"expected 'all', a round number or a list of round numbers, got {v!r}")
        if not v:
            raise ValueError("no cells: give at least one round (or 'all')")
        if min(v) < 0:
            raise ValueError(f"rounds are 0 (dense) or more, got {min(v)}")
        return sorted(set(v))

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
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _rounds_or_densities(self) -> "TransferBlock":
        if self.rounds is not None and self.densities is not None:
            raise ValueError("give either rounds or densities, not both")
        return self


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


class Target(_Block):
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
        return _as_list(v)

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        return None if v is None else _distinct_seeds(v)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StudySpec(_Block):
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
    sources: list[Source]
    targets: list[Target]

    @field_validator("model", "sources", "targets", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return _as_list(v)

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


# --------------------------------------------------------------------------------------------
# Loading: YAML with line numbers, then the schema, then names and cross-field checks.


Path_ = tuple[Any, ...]


def _compose(text: str, file: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML and record the line of every key and list item (1-based), by key path."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = str(err.problem or err.context)
        # `targets: [digits[5-9]]`: a '[' inside a [...] list ends YAML's plain string.
        hint = "quote a data set with classes inside [...]: ['digits[5-9]'], or write one per line" \
            if "'['" in problem or "']'" in problem else None
        raise UsageError(f"{file}:{line}: invalid YAML: {problem}", hint) from None
    except yaml.YAMLError as err:
        raise UsageError(f"{file}: invalid YAML: {err}") from None
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}

    def walk(n: Any, path: Path_) -> None:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            seen: set[Any] = set()
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else None
                if key in seen:
                    raise UsageError(f"{file}:{k.start_mark.line + 1}: {_format_path(path + (key,))}: duplicate key")
                seen.add(key)
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, path + (i,))

    if node is not None:
        walk(node, ())
    return data, lines


def _format_path(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _line(lines: dict[Path_, int], path: Path_) -> int:
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return 1


def _model_at(cls: Any, path: Path_) -> Any:
    """The schema class that holds the keys at `path` (for "did you mean")."""
    for part in path:
        if isinstance(part, int):
            continue
        info = getattr(cls, "model_fields", {}).get(part)
        if info is None:
            return None
        cls = _inner_model(info.annotation)
        if cls is None:
            return None
    return cls


def _inner_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in get_args(ann):
        found = _inner_model(a)
        if found is not None:
            return found
    return None


def _schema_error(err: ValidationError, file: str, lines: dict[Path_, int]) -> UsageError:
    """The error nearest the top of the file, as one line: 'file:line: key.path: message'."""
    import difflib

    errors = sorted(err.errors(), key=lambda e: _line(lines, tuple(e.get("loc", ()))))
    e = errors[0]
    loc = tuple(e.get("loc", ()))
    kind = e.get("type", "")
    if kind == "extra_forbidden":
        parent = _model_at(StudySpec, loc[:-1])
        choices = list(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(str(loc[-1]), choices, n=1, cutoff=0.5)
        msg = "unknown key" + (f"; did you mean {close[0]!r}?" if close else f" (expected one of: {', '.join(choices)})")
    elif kind == "missing":
        msg = "missing (required)"
    else:
        msg = str(e.get("msg", "invalid value"))
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        value = e.get("input")
        if kind not in ("value_error",) and isinstance(value, (str, int, float, bool)):
            msg += f" (got {value!r})"
    return UsageError(f"{file}:{_line(lines, loc)}: {_format_path(loc)}: {msg}")


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

    @property
    def name(self) -> str:
        assert self.spec.name is not None
        return self.spec.name

    def error(self, path: Path_, message: str) -> UsageError:
        return UsageError(f"{self.file}:{_line(self.lines, path)}: {_format_path(path)}: {message}")


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; every problem is one UsageError naming file, line and key."""
    path = Path(path)
    file = str(path)
    if not path.exists():
        raise UsageError(f"study file not found: {file}")
    if path.is_dir():
        raise UsageError(f"{file} is a folder; give a study file (.yaml)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {file}: {err}") from None
    data, lines = _compose(text, file)
    if data is None:
        raise UsageError(f"{file}:1: the study file is empty", "see studies/quickstart.yaml for an example")
    if not isinstance(data, dict):
        raise UsageError(f"{file}:1: a study file is a mapping of keys (name, model, sources, targets, ...)")
    if any(not isinstance(k, str) for k in data):
        bad = next(k for k in data if not isinstance(k, str))
        raise UsageError(f"{file}:{_line(lines, (bad,))}: {bad!r}: keys must be names")
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as err:
        raise _schema_error(err, file, lines) from None
    if spec.name is None:
        stem = path.name.rsplit(".", 1)[0]
        spec.name = stem if _NAME.match(stem) else "study"
    if spec.data_dir:
        d = Path(spec.data_dir).expanduser()
        spec.data_dir = str(d if d.is_absolute() else (path.parent / d))
    study = Study(spec, file, text, lines, [], [], spec.channels)
    _check_names(study)
    study.cells = expand(study)  # resolves every configuration: errors surface here, before training
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


# --------------------------------------------------------------------------------------------
# Expansion into cells.


@dataclass
class Cell:
    """One unit of a study: a ticket search or a transfer of one round with one seed."""

    kind: Literal["search", "transfer"]
    key: str  # fingerprint of `config`
    id: str  # folder name under <out>/cells/
    title: str  # for humans
    short: str  # for the progress bar
    config: dict[str, Any]  # the full resolved configuration (what `key` is computed from)
    info: dict[str, Any]  # model, source, target, optimizers, seeds, round/density: for results
    find: Optional[FindSpec] = None
    transfer: Optional[TransferSpec] = None
    source: Optional[str] = None  # search cell id of the ticket (transfer cells)
    against: Optional[str] = None  # search cell id of the target's own ticket, if any
    networks: int = 0  # networks this cell trains when nothing is done yet (shared ones once)
    shared: list[str] = field(default_factory=list)  # run keys that other cells may also train


def _slug(text: str) -> str:
    """'digits[0-4]' -> 'digits0-4'; 'timm:resnet18' -> 'timm-resnet18' (readable folder names)."""
    s = re.sub(r"[^A-Za-z0-9.-]+", "-", text.replace("[", "").replace("]", "")).strip("-")
    return s[:40] or "x"


def train_spec(study: Study, model: str, phase: str, optimizer: Optional[str]) -> TrainSpec:
    """Training settings of one phase ('search' or 'transfer') for one model and optimizer.

    Later overrides win: the model's paper defaults, `train`, `train.<optimizer>`, `<phase>.train`,
    `<phase>.train.<optimizer>`. A paper's learning rate belongs to its optimizer: switching
    optimizer without giving `lr` anywhere uses that optimizer's default (transfer.DEFAULT_LR).
    """
    from ticketx.models import model_info
    from ticketx.transfer import DEFAULT_LR

    spec = study.spec
    values = dict(model_info(model).train_defaults)
    blocks = [spec.train, getattr(spec, phase).train]
    common = {}
    for b in blocks:
        common.update(b.chain("sgd")[0])
    opt = optimizer or common.get("optimizer") or values["optimizer"]
    chain = [part for b in blocks for part in b.chain(opt)]
    if opt != values["optimizer"] and not any("lr" in c for c in chain):
        values["lr"] = DEFAULT_LR[opt]
    for c in chain:
        values.update(c)
    values["optimizer"] = opt
    try:
        return TrainSpec(**values)
    except ValidationError as err:
        e = err.errors()[0]
        key = str(e["loc"][0]) if e.get("loc") else ""
        msg = str(e["msg"]).removeprefix("Value error, ")
        # point at the block that set the bad value (the latest override wins)
        candidates = [(phase, "train", opt, key), (phase, "train", key), ("train", opt, key), ("train", key)]
        where = next((c for c in candidates if c in study.lines), (phase, "train", key))
        raise study.error(where, f"{msg} (for {model} with {opt})") from None


def prune_spec(study: Study, model: str) -> PruneSpec:
    from ticketx.spec import resolve_prune

    over = {k: v for k, v in study.spec.search.prune.model_dump().items() if v is not None}
    try:
        return resolve_prune(model, over)
    except ValidationError as err:
        e = err.errors()[0]
        raise study.error(("search", "prune"), f"{'.'.join(map(str, e['loc']))}: {e['msg']}") from None


def _check_lengths(study: Study, model: str, train: TrainSpec, prune: PruneSpec) -> None:
    # Only comparable without the data set's size when both are in the same unit.
    if prune.rewind != "0" and prune.rewind[-2:] == train.length[-2:] and float(prune.rewind[:-2]) >= float(train.length[:-2]):
        raise study.error(("search", "prune", "rewind"),
                          f"rewind point {prune.rewind} is not before the end of training ({train.length}) for {model}")


def _search_cell(study: Study, model: str, data: str, train: TrainSpec, prune: PruneSpec, seed: int, role: str) -> Cell:
    from ticketx import store

    spec = FindSpec(data=data, model=model, image_size=study.spec.image_size, channels=study.channels, train=train,
                    prune=prune, seed=seed, deterministic=study.spec.deterministic)
    config = {"kind": "search", "find": spec.science()}
    key = store.fingerprint(config)
    return Cell(
        kind="search", key=key, id=f"search-{_slug(model)}-{_slug(data)}-{train.optimizer}-s{seed}-{key}",
        title=f"search {model} on {data} ({train.optimizer}, seed {seed})",
        short=f"search {data} {train.optimizer} s{seed}", config=config,
        info={"model": model, "data": data, "optimizer": train.optimizer, "seed": seed, "role": role,
              "rounds": prune.rounds},
        find=spec, networks=prune.rounds + 1,
    )


def _points(study: Study, model: str, prune: PruneSpec) -> list[tuple[str, Any]]:
    """What to transfer: [('round', r), ...] or [('density', d), ...] (default: every pruned round)."""
    tr = study.spec.transfer
    if tr.densities is not None:
        return [("density", d) for d in tr.densities]
    if tr.rounds is None or tr.rounds == "all":
        return [("round", r) for r in range(1, prune.rounds + 1)]
    too_far = [r for r in tr.rounds if r > prune.rounds]
    if too_far:
        raise study.error(("transfer", "rounds"),
                          f"round {too_far[0]} is past the last round of the search ({prune.rounds} rounds for {model})")
    return [("round", r) for r in tr.rounds]


def expand(study: Study) -> list[Cell]:
    """Every cell of the study, searches first, each once (identical configurations collapse)."""
    spec = study.spec
    tr = spec.transfer
    searches: dict[str, Cell] = {}
    transfers: dict[str, Cell] = {}
    own_runs: set[str] = set()
    for model in spec.model:
        prune = prune_spec(study, model)
        points = _points(study, model, prune)
        tickets: list[Cell] = []  # the source tickets, in study order
        for src, data in zip(spec.sources, study.sources):
            for opt in (list(src.optimizer) if src.optimizer else [None]):
                strain = train_spec(study, model, "search", opt)
                _check_lengths(study, model, strain, prune)
                for seed in src.seeds or spec.search.seeds:
                    cell = _search_cell(study, model, data, strain, prune, seed, "source")
                    if cell.key not in searches:
                        searches[cell.key] = cell
                        tickets.append(cell)
        for cell in tickets:
            seed = cell.info["seed"]
            for target in study.targets:
                for topt in dict.fromkeys(cell.info["optimizer"] if o == "same" else o for o in tr.optimizer):
                    ttrain = train_spec(study, model, "transfer", topt)
                    own = None
                    if tr.own_ticket:
                        own = _search_cell(study, model, target, train_spec(study, model, "search", topt), prune, seed, "own")
                        searches.setdefault(own.key, own)
                        if own.key in {t.key for t in tickets}:
                            # The own ticket is also a source: the cell that transfers it to its own
                            # data set trains it; every other cell would train the very same network.
                            own = None
                    for pi, (what, value) in enumerate(points):
                        # The dense network does not depend on the round (same rewind weights, no
                        # mask): it is trained once per ticket, target and seed.
                        baselines = [b for b in tr.baselines if b != "dense" or pi == 0]
                        for tseed in tr.seeds:
                            c = _transfer_cell(study, model, cell, own, target, ttrain, what, value, tseed, baselines)
                            if c.key in transfers:
                                continue
                            for run in c.shared:  # the own ticket's networks are shared by every source
                                if run in own_runs:
                                    c.networks -= 1
                                own_runs.add(run)
                            transfers[c.key] = c
    cells = sorted(searches.values(), key=lambda c: c.info["role"] == "own") + list(transfers.values())
    if not transfers:
        raise study.error(("targets",), "no cells: the study expands to no transfer")
    return cells


def _transfer_cell(study: Study, model: str, source: Cell, own: Optional[Cell], target: str, train: TrainSpec,
                   what: str, value: Any, seed: int, baselines: list[str]) -> Cell:
    from ticketx import store

    tr = study.spec.transfer
    spec = TransferSpec(
        target=target, rounds=[value] if what == "round" else None, density=value if what == "density" else None,
        train=train, baselines=baselines, seeds=[seed], head=tr.head, head_dense=tr.head_dense,
        deterministic=study.spec.deterministic,
    )
    config = {
        "kind": "transfer", "source": source.key, "against": own.key if own else None, "target": target,
        "image_size": study.spec.image_size, "channels": study.channels, what: value, "seed": seed,
        "train": train.model_dump(), "baselines": baselines, "head": tr.head, "head_dense": tr.head_dense,
        "deterministic": study.spec.deterministic,
    }
    key = store.fingerprint(config)
    point = f"r{value}" if what == "round" else f"d{value:g}"
    src = source.info
    return Cell(
        kind="transfer", key=key,
        id=f"transfer-{_slug(model)}-{_slug(src['data'])}-{src['optimizer']}-s{src['seed']}-to-{_slug(target)}-{train.optimizer}-{point}-s{seed}-{key}",
        title=f"transfer {src['data']} ({src['optimizer']}) -> {target} ({train.optimizer}), {what} {value:g}, seed {seed}",
        short=f"{src['data']}->{target} {train.optimizer} {point} s{seed}",
        config=config,
        info={"model": model, "source": src["data"], "search_optimizer": src["optimizer"], "search_seed": src["seed"],
              "target": target, "transfer_optimizer": train.optimizer, "seed": seed, what: value},
        transfer=spec, source=source.id, against=own.id if own else None,
        networks=1 + len(baselines) + (1 if own else 0),
        shared=[f"{own.key}|{what}{value}|{seed}|{store.fingerprint(config['train'])}"] if own else [],
    )


def count(cells: list[Cell]) -> dict[str, int]:
    """Cells by kind and networks to train (a network shared by cells counted once)."""
    out = {"search": 0, "transfer": 0, "networks": 0}
    for c in cells:
        out[c.kind] += 1
        out["networks"] += c.networks
    return out


# --------------------------------------------------------------------------------------------
# Running.


def cell_dir(out: Path, cell: Cell | dict[str, Any]) -> Path:
    return out / "cells" / (cell.id if isinstance(cell, Cell) else cell["id"])


def is_done(out: Path, cell: Cell | dict[str, Any]) -> bool:
    from ticketx import store

    marker = cell_dir(out, cell) / "done.json"
    if not marker.exists():
        return False
    try:
        saved = store.read_json(marker)
    except TicketxError:
        return False  # unreadable marker: the cell is redone (its finished parts are skipped)
    return saved.get("key") == (cell.key if isinstance(cell, Cell) else cell["key"])


def provenance(study: Study) -> dict[str, Any]:
    """The study record: the file as written, its resolved configuration, every cell, versions."""
    from ticketx import store

    return {
        "format": STUDY_FORMAT, "format_version": STUDY_VERSION,
        "name": study.name, "file": study.file, "text": study.text,
        "resolved": study.spec.model_dump(), "channels": study.channels,
        "counts": count(study.cells),
        "cells": [{"id": c.id, "kind": c.kind, "key": c.key, "title": c.title, "info": c.info, "source": c.source,
                   "against": c.against, "config": c.config} for c in study.cells],
        "versions": store.versions(),
    }


def write_provenance(study: Study, out: Path) -> None:
    """`<out>/study.json` (see `provenance`), keeping the time of the first run."""
    from ticketx import store

    path = out / "study.json"
    created = None
    if path.exists():
        try:
            created = store.read_json(path).get("created")
        except TicketxError:
            pass
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    store.write_json(path, {**provenance(study), "created": created or now, "updated": now})


class _StudyReporter:
    """Passes per-run progress through; drops the per-round tables a single search prints."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def start(self, label: str, total: int) -> Any:
        return self.inner.start(label, total)

    def update(self, task: Any, completed: int, **fields: Any) -> None:
        self.inner.update(task, completed, **fields)

    def finish(self, task: Any) -> None:
        self.inner.finish(task)

    def log(self, message: Any) -> None:
        if isinstance(message, str):
            self.inner.log(message)


def run_study(study: Study, out: str | Path, *, device: Optional[str] = None, data_dir: Any = None,
              reporter: Any = None) -> list[Cell]:
    """Run every cell not done yet, in order (searches first); return the cells."""
    from ticketx.threads import cpu_threads
    from ticketx.train import resolve_device

    out = Path(out)
    cells = study.cells
    device = device or study.spec.device
    dev = resolve_device(device)  # 'cuda' on a machine without one fails now, not after the first cells
    with cpu_threads(study.spec.cpu_threads if dev.type == "cpu" else None):
        return _run_cells(study, cells, out, device, data_dir, reporter)


def _run_cells(study: Study, cells: list[Cell], out: Path, device: str, data_dir: Any, reporter: Any) -> list[Cell]:
    from ticketx import find as F
    from ticketx import store
    from rich.markup import escape

    from ticketx import transfer as X
    from ticketx.ui import Reporter

    data_dir = data_dir or study.spec.data_dir
    reporter = reporter or Reporter()
    rep = _StudyReporter(reporter)
    write_provenance(study, out)
    done = [is_done(out, c) for c in cells]
    progress = getattr(reporter, "progress", None)
    overall = None
    if progress is not None:
        # Added first, so it sits above the per-run bars; skipped cells are counted as done from the start
        # so they do not make the ETA look faster than the work left.
        overall = progress.add_task(f"study {study.name}", total=len(cells), completed=sum(done), status="cells")
    todo = len(cells) - sum(done)
    if sum(done):
        reporter.log(f"[dim]{sum(done)} of {len(cells)} cells already done: skipped[/]")
    n = 0
    for cell, finished in zip(cells, done):
        if finished:
            continue
        n += 1
        if overall is not None:
            progress.update(overall, description=f"study {study.name}: {cell.short}")
        here = cell_dir(out, cell)
        store.write_json(here / "config.json", {"key": cell.key, "kind": cell.kind, "config": cell.config, "info": cell.info})
        t0 = time.perf_counter()
        try:
            if cell.kind == "search":
                assert cell.find is not None
                ticket = F.find(cell.find, here / "ticket.pt", data_dir=data_dir, device=device, reporter=rep)
                summary: Any = [{k: r.get(k) for k in ("round", "density", "test_acc", "val_acc", "seconds")} for r in ticket.rounds]
            else:
                assert cell.transfer is not None and cell.source is not None
                spec = cell.transfer.model_copy(update={
                    "against": str(cell_dir(out, {"id": cell.against}) / "ticket.pt") if cell.against else None})
                result = X.transfer(cell_dir(out, {"id": cell.source}) / "ticket.pt", spec, here, data_dir=data_dir,
                                    device=device, reporter=rep, runs_dir=out / "runs")
                summary = result["summary"]
        except TicketxError as err:
            raise type(err)(f"{cell.title}: {err}", err.hint or "finished cells are kept: rerun the same command to resume") from err
        store.write_json(here / "done.json", {  # written last: the cell is done only once this exists
            "key": cell.key, "kind": cell.kind, "summary": summary, "seconds": time.perf_counter() - t0,
            "versions": store.versions(),
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        if overall is not None:
            progress.advance(overall)
        reporter.log(f"[green]done[/] [{n}/{todo}] {escape(cell.title)} [dim]({time.perf_counter() - t0:.1f}s)[/]")
    if overall is not None:
        progress.update(overall, description=f"study {study.name}")
    return cells


# --------------------------------------------------------------------------------------------
# Results: one tidy row per trained network, from the cells that are done.

COLUMNS = ["study", "kind", "model", "source", "source_classes", "target", "target_classes", "search_optimizer",
           "transfer_optimizer", "search_seed", "seed", "round", "density", "label", "test_acc", "run_id", "cell",
           "versions"]


def _classes_of(name: str) -> str:
    return name[name.rfind("[") + 1:-1] if name.endswith("]") else ""


def _versions(v: dict[str, Any]) -> str:
    return " ".join(f"{k}={v[k]}" for k in sorted(v))


def load_provenance(out: Path) -> dict[str, Any]:
    from ticketx import store

    path = out / "study.json"
    if not path.exists():
        raise UsageError(f"{out} holds no study (no study.json)", "run it first: ticketx study run STUDY.yaml")
    prov = store.read_json(path)
    if not isinstance(prov, dict) or prov.get("format") != STUDY_FORMAT:
        raise UsageError(f"{path} is not a ticketx study record")
    if prov.get("format_version", 0) > STUDY_VERSION:
        raise UsageError(f"{path} was written by a newer ticketx (study format {prov['format_version']})", "upgrade ticketx")
    return prov


def collect(out: str | Path, prov: Optional[dict[str, Any]] = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(provenance, rows): one row per trained network in the finished cells of `<out>`.

    `prov` (default: `<out>/study.json`, the last run) says which cells belong to the study.
    """
    from ticketx import store

    out = Path(out)
    prov = prov or load_provenance(out)
    name = prov["name"]
    cells = {c["id"]: c for c in prov["cells"]}
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for c in prov["cells"]:
        if not is_done(out, c):
            continue
        here = cell_dir(out, c)
        done = store.read_json(here / "done.json")
        versions = _versions(done.get("versions", {}))
        info = c["info"]
        if c["kind"] == "search":
            for r in done["summary"]:
                rid = f"{c['id']}/round_{r['round']:02d}"
                rows.append({
                    "study": name, "kind": "search", "model": info["model"], "source": info["data"],
                    "source_classes": _classes_of(info["data"]), "target": info["data"],
                    "target_classes": _classes_of(info["data"]), "search_optimizer": info["optimizer"],
                    "transfer_optimizer": "", "search_seed": info["seed"], "seed": info["seed"], "round": r["round"],
                    "density": r["density"], "label": "search", "test_acc": r["test_acc"], "run_id": rid,
                    "cell": c["id"], "versions": versions,
                })
            continue
        result = store.read_json(here / "result.json")
        own = cells.get(c["against"])["info"] if c.get("against") in cells else None
        for run in result["runs"]:
            rid = f"{run['label']}-r{run['round']:02d}-s{run['seed']}-{run['key']}"
            if rid in seen:  # the own ticket's networks are shared by the cells of every source
                continue
            seen.add(rid)
            label = run["label"]
            src, sopt, sseed = info["source"], info["search_optimizer"], info["search_seed"]
            if label == "against":
                assert own is not None
                src, sopt, sseed = own["data"], own["optimizer"], own["seed"]
            if label in ("ticket", "against") and src == info["target"] and sopt == info["transfer_optimizer"]:
                label = "own-ticket"
            rows.append({
                "study": name, "kind": "transfer", "model": info["model"], "source": src,
                "source_classes": _classes_of(src), "target": info["target"], "target_classes": _classes_of(info["target"]),
                "search_optimizer": sopt, "transfer_optimizer": info["transfer_optimizer"], "search_seed": sseed,
                "seed": run["seed"], "round": run["round"], "density": run["density"], "label": label,
                "test_acc": run["test_acc"], "run_id": rid, "cell": c["id"], "versions": versions,
            })
    return prov, rows


def report(out: str | Path, *, density: Optional[float] = None, plots: bool = True,
           prov: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Write results.csv and the plots of `<out>`, print the transfer matrices; return what was written."""
    from ticketx import report as R
    from ticketx import store
    from ticketx.ui import console

    out = Path(out)
    if not out.is_dir():
        raise UsageError(f"no results in {out}: the study has not run there", "run it: ticketx study run STUDY.yaml [--out DIR]")
    if density is not None and not 0 < density <= 1:
        raise UsageError(f"--density is the fraction of weights kept, in (0, 1]; got {density:g}")
    prov, rows = collect(out, prov)
    done = sum(is_done(out, c) for c in prov["cells"])
    total = len(prov["cells"])
    csv_path = out / "results.csv"
    store.write_text(csv_path, R.csv_text(rows, COLUMNS))
    order = _order(prov)
    for table in R.study_matrices(rows, order, title=prov["name"]):
        console.print(table)
    written = {"csv": csv_path, "plots": [], "rows": len(rows), "cells_done": done, "cells": total}
    if plots and any(r["kind"] == "transfer" for r in rows):
        written["plots"] = R.study_plots(rows, order, out / "plots", density=density)
    state = "[green]complete[/]" if done == total else f"[yellow]{done} of {total} cells done[/] (partial results)"
    console.print(f"study [bold]{prov['name']}[/]: {state}; {len(rows)} trained networks in {csv_path}")
    for p in written["plots"]:
        console.print(f"  plot: {p}")
    return written


def _order(prov: dict[str, Any]) -> dict[str, list[str]]:
    """Sources and targets in the order the study file lists them (tables and plots follow it)."""
    sources: list[str] = []
    targets: list[str] = []
    for c in prov["cells"]:
        if c["kind"] == "search" and c["info"]["role"] == "source" and c["info"]["data"] not in sources:
            sources.append(c["info"]["data"])
        if c["kind"] == "transfer" and c["info"]["target"] not in targets:
            targets.append(c["info"]["target"])
    return {"sources": sources, "targets": targets}
