"""A transfer, resolved: the ticket loaded and checked once, rounds chosen, the own ticket matched."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from ticketx.errors import UsageError
from ticketx.settings.base import Strict, as_list, check_seeds
from ticketx.settings.train import TrainSpec, train_settings

if TYPE_CHECKING:
    from ticketx.ticket import Ticket


def default_baselines() -> list[str]:
    from ticketx.baselines import DEFAULT

    return list(DEFAULT)


class TransferSpec(Strict):
    """Retrain a ticket's round(s) on a target data set, with baselines at the same density."""

    target: str
    rounds: Optional[list[int]] = None  # None = `density`, else the ticket's last round
    density: Optional[float] = Field(None, gt=0, le=1)  # pick the round whose density is closest
    # pick the pruned round whose remaining prunable weights are nearest (log scale): tickets of
    # different widths compared at equal size, not only at equal density (Frankle & Carbin 2019
    # compare networks by weights remaining)
    weights: Optional[int] = Field(None, ge=1)
    all_rounds: bool = False
    train: Optional[TrainSpec] = None  # None = the ticket's own training settings
    baselines: list[str] = Field(default_factory=default_baselines)
    seeds: list[int] = Field(default_factory=lambda: [0])
    # Output layer (`head_rule`): 'auto' (default) keeps a ticket's output layer exactly when the
    # target is the data set the ticket was found on, with the same class names in the same
    # order (retraining on the source itself, or with another optimizer: Morcos et al. 2019 keep
    # the whole ticket there), and gives a new, seeded one otherwise (Morcos et al. 2019 replace
    # the output layer across data sets). 'new' always gives a new one; 'keep' always keeps it
    # (allowed only when the class names are the target's: same-sized label sets can mean other
    # things, digits 0-4 vs 5-9). Applied per arm: an own ticket is on its own data.
    head: Literal["auto", "new", "keep"] = "auto"
    # Every arm's output layer dense (a kept one unmasked, a new one unpruned) instead of pruned
    # to the ticket's output-layer density: either way all arms compare like with like.
    head_dense: bool = False
    own_ticket: Optional[str] = None  # a ticket found on the target itself, retrained next to the ticket
    deterministic: bool = False
    # What the pruned weights hold while every arm trains (Zhou et al. 2019's mask-0 actions,
    # ticketx.deconstruct): 'zero' (the lottery ticket's rule), 'frozen' at their starting value,
    # or 'zhou': zero where the ticket's weight moved toward zero in the round that pruned it,
    # frozen elsewhere. Held exactly after every optimizer step (train.MaskEnforcer).
    mask0: Literal["zero", "frozen", "zhou"] = "zero"

    @field_validator("seeds", "rounds", mode="before")
    @classmethod
    def _int_list(cls, v: Any, info: Any) -> Any:
        v = as_list(v)
        if isinstance(v, list) and not all(isinstance(x, int) or (isinstance(x, str) and x.isdigit()) for x in v):
            what = "--seeds expects integers like '0,1,2'" if info.field_name == "seeds" else \
                "--round expects round numbers like '3' or '1,3,5'"
            raise ValueError(f"{what}, got {','.join(map(str, v))!r}")
        return None if v is None else [int(x) for x in v]

    @model_validator(mode="after")
    def _one_choice_of_rounds(self) -> "TransferSpec":
        if sum([self.rounds is not None, self.density is not None, self.weights is not None, self.all_rounds]) > 1:
            raise ValueError("give only one of --round, --density, --weights and --rounds")
        return self

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        return check_seeds(v)

    @field_validator("baselines", mode="before")
    @classmethod
    def _baselines(cls, v: Any) -> Any:
        from ticketx.baselines import BASELINES

        v = [b for b in as_list(v) if b != "none"]
        try:
            return BASELINES.check(v)
        except UsageError as err:
            raise ValueError(str(err)) from None


@dataclass(frozen=True)
class TransferPlan:
    """Everything a transfer needs, checked (but `check_head`, which needs the target's data)."""

    ticket_path: Path
    ticket: "Ticket"
    spec: TransferSpec
    train: TrainSpec
    rounds: tuple[int, ...]
    own: Optional["Ticket"] = None
    own_rounds: dict[int, int] = field(default_factory=dict)  # ticket round -> own ticket's round


# The label noise a ticket's search trained with belongs to its data, not to its recipe: a transfer
# retrains on clean target labels unless it is given its own noise.
NOISE_FIELDS = ("label_noise", "noise_mode", "noise_seed")


def ticket_train_spec(ticket: "Ticket", overrides: dict[str, Any], *, keep_noise: bool = True) -> TrainSpec:
    """The ticket's own training settings updated with the given overrides (the optimizer's-lr rule applies);
    without `keep_noise`, without its search's label noise (a transfer's target labels are its own)."""
    own = {k: v for k, v in ticket.meta["train"].items() if keep_noise or k not in NOISE_FIELDS}
    return train_settings(own, overrides)


def check_compatible(ticket: "Ticket", model: str | None, image_size: int | None, width: float | None = None) -> None:
    """Reject a ticket that does not match the requested model, image size or width, listing what differs."""
    from ticketx.ticket import width_of

    problems = []
    if model and model != ticket.meta["model"]:
        problems.append(f"model: ticket {ticket.meta['model']!r} vs requested {model!r}")
    if image_size and image_size != ticket.meta["image_size"]:
        problems.append(f"image size: ticket {ticket.meta['image_size']} vs requested {image_size}")
    if width is not None and float(width) != width_of(ticket.meta):
        problems.append(f"width: ticket {width_of(ticket.meta):g} vs requested {float(width):g}")
    if problems:
        raise UsageError("the ticket does not fit the request: " + "; ".join(problems),
                         "a ticket is tied to its architecture and input size; the target's images are resized to the ticket's")


def choose_rounds(ticket: "Ticket", spec: TransferSpec) -> list[int]:
    if spec.all_rounds:  # every pruned round: at round 0 the ticket is the dense network
        return list(range(1, ticket.num_rounds + 1))
    if spec.rounds:
        bad = [r for r in spec.rounds if not 0 <= r <= ticket.num_rounds]
        if bad:
            raise UsageError(f"round {bad[0]} is not in the ticket (rounds 0..{ticket.num_rounds})")
        return sorted(set(spec.rounds))
    if spec.density is not None:
        return [ticket.round_for_density(spec.density)]
    if spec.weights is not None:
        return [ticket.round_for_weights(spec.weights)]
    return [ticket.num_rounds]


def load_checked(path: str | Path, what: str = "ticket") -> "Ticket":
    """Load a ticket and check its metadata and tensors against the model it names (before any data)."""
    from ticketx import ticket as ticketfile

    path = Path(path)
    if not path.exists():
        raise UsageError(f"{what} not found: {path}")
    t = ticketfile.load(path)
    ticketfile.check_meta(t, path)
    ticketfile.check_architecture(t)
    return t


DENSITY_TOLERANCE = 0.01  # relative: the own ticket is compared only at the ticket's density


def match_own_rounds(ticket: "Ticket", own: "Ticket", rounds: list[int]) -> dict[int, int]:
    """The own ticket's round at the density of each of the ticket's rounds (within 1%, relative)."""
    from ticketx.ticket import match_round

    out = {}
    for r in rounds:
        d = ticket.rounds[r]["density"]
        m = match_round(own, d, tol=DENSITY_TOLERANCE)
        if m is None:
            have = ", ".join(f"{100 * x['density']:.2f}%" for x in own.rounds)
            raise UsageError(f"the own ticket has no round at {100 * d:.2f}% weights remaining (round {r} of the ticket), "
                             f"within {100 * DENSITY_TOLERANCE:g}% relative; it has {have}",
                             "search the own ticket with the same pruning rate, scope and output-layer rate")
        out[r] = m
    return out


def same_classes(ticket: "Ticket", target: str, target_classes: list[str]) -> bool:
    """Whether `target` is the ticket's own data set with its class names in the same order."""
    classes = ticket.meta.get("classes")
    return bool(classes) and ticket.meta.get("data") == target and list(map(str, classes)) == list(map(str, target_classes))


def head_rule(rule: str, ticket: "Ticket", target: str, target_classes: list[str]) -> str:
    """'keep' or 'new': the output layer one arm's network gets on `target` under `rule`
    ('auto': keep exactly when the target is the ticket's own data set and classes; a ticket
    whose metadata has no class names gets a new one)."""
    if rule == "auto":
        return "keep" if same_classes(ticket, target, target_classes) else "new"
    return rule


def check_head(spec: TransferSpec, ticket: "Ticket", target_classes: list[str]) -> None:
    """'keep' the ticket's output layer only when its class names are the target's."""
    if spec.head == "keep" and list(ticket.meta.get("classes", [])) != list(target_classes):
        raise UsageError(f"--keep-head: the ticket's classes ({', '.join(map(str, ticket.meta.get('classes', [])))}) "
                         f"are not the target's ({', '.join(map(str, target_classes))})",
                         "a kept output layer would start class i of the target from another class's weights; "
                         "drop --keep-head for a new output layer")


def resolve_transfer(ticket_path: str | Path, spec: TransferSpec, *, train: dict[str, Any] | None = None,
                     model: str | None = None, image_size: int | None = None, width: float | None = None) -> TransferPlan:
    """Load the ticket (and own ticket) once, run every check that needs no target data, return the plan."""
    from ticketx.data import parse_data
    from ticketx.ticket import width_of

    spec = spec.model_copy(update={"target": parse_data(spec.target).name})
    ticket = load_checked(ticket_path)
    check_compatible(ticket, model, image_size, width)
    tspec = spec.train if spec.train is not None else ticket_train_spec(ticket, train or {}, keep_noise=False)
    rounds = choose_rounds(ticket, spec)
    if "invert" in spec.baselines:
        from ticketx.baselines import invert_problem

        problem = invert_problem(ticket)
        if problem:
            raise UsageError(f"--baselines invert: {problem}", "drop invert, or use a prune-at-init ticket (ticketx pai)")
    from ticketx.baselines import mask0_problem

    problem = mask0_problem(ticket, spec.mask0)
    if problem:
        raise UsageError(problem, "use --mask0 frozen, or find the ticket again with `ticketx find`")
    own, own_rounds = None, {}
    if spec.own_ticket:
        own = load_checked(spec.own_ticket, "own ticket")
        if own.meta["model"] != ticket.meta["model"] or own.meta["image_size"] != ticket.meta["image_size"]:
            raise UsageError(f"the own ticket is a {own.meta['model']} at {own.meta['image_size']} px; "
                             f"the ticket is a {ticket.meta['model']} at {ticket.meta['image_size']} px")
        if width_of(own.meta) != width_of(ticket.meta):
            raise UsageError(f"the own ticket is a {own.meta['model']} of width {width_of(own.meta):g}; "
                             f"the ticket's is width {width_of(ticket.meta):g}",
                             "the own ticket is searched at the ticket's width (find --width)")
        if own.meta["data"] != spec.target:
            raise UsageError(f"the own ticket was found on {own.meta['data']}, not on the target {spec.target}",
                             "the own ticket is a ticket found on the target itself")
        own_rounds = match_own_rounds(ticket, own, rounds)
        problem = mask0_problem(own, spec.mask0)
        if problem:
            raise UsageError(f"the own ticket: {problem}")
    return TransferPlan(Path(ticket_path), ticket, spec, tspec, tuple(rounds), own, own_rounds)


def resolve_transfer_options(ticket_path: str | Path, target: str, *, round_: str | None = None, density: float | None = None,
                             rounds: str | None = None, train: dict[str, Any] | None = None, model: str | None = None,
                             image_size: int | None = None, width: float | None = None, device: str = "auto",
                             **fields: Any) -> TransferPlan:
    """The CLI's options (lists as text: '1,3,5', 'all') -> a checked TransferPlan."""
    from ticketx.settings.base import describe_validation_error
    from ticketx.runtime import resolve_device

    all_rounds = rounds is not None and rounds.strip().lower() == "all"
    listed = round_ if round_ is not None else (None if all_rounds else rounds)
    if round_ is not None and rounds is not None:
        raise UsageError("give only one of --round, --density, --weights and --rounds")
    try:
        spec = TransferSpec(target=target, rounds=listed, density=density, all_rounds=all_rounds,
                            **{k: str(v) if isinstance(v, Path) else v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        raise UsageError(f"invalid transfer option: {describe_validation_error(err)}") from None
    resolve_device(device)
    try:
        return resolve_transfer(ticket_path, spec, train=train, model=model, image_size=image_size, width=width)
    except ValidationError as err:
        raise UsageError(f"invalid training option: {describe_validation_error(err)}") from None


def default_out(ticket_path: str | Path, target: str) -> Path:
    """runs/transfer/<ticket>-to-<target> (target made a safe folder name)."""
    import re

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", target).strip("_")
    return Path("runs") / "transfer" / f"{Path(ticket_path).stem}-to-{safe}"
