"""The `ticketx` command: parse options -> build a spec -> call the library -> render.

No science here. Known errors become one red line and an exit code (1 runtime, 2 usage);
set TICKETX_DEBUG=1 or pass --debug for the traceback. Human output goes to stderr, machine
output (paths, JSON) to stdout.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from inspect import Parameter, signature
from typing import Annotated, Any, Callable, Optional

import typer

from ticketx.errors import TicketxError, UsageError

app = typer.Typer(
    name="ticketx",
    help="Lottery-ticket transfer studies: find tickets by iterative magnitude pruning, transfer them, compare to baselines.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

_DEBUG = {"on": bool(os.environ.get("TICKETX_DEBUG"))}


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors (or set TICKETX_DEBUG=1).")] = False,
) -> None:
    if debug:
        _DEBUG["on"] = True


# ---- help read when it is shown ---------------------------------------------------------------
# An option documented by a settings schema (a field's `description` and bounds) or listing a
# registry's names carries a placeholder in its help, filled in only when a command's help is
# printed: the schemas need pydantic and the registries torch, which `ticketx --help` (and a
# command that needs neither) must not wait for. Placeholders:
#   {TrainSpec.lr}         the field's description and bounds ({PruneSpec.rate}, ...)
#   {TrainSpec.lr:default}  "[default: <the field's default>]"
#   {names:baselines}      the registry's names (baselines, criteria, pai), read from the registry
#   {default:baselines}    the baselines a transfer runs by default
SCHEMAS = {"TrainSpec": "ticketx.settings.train", "PruneSpec": "ticketx.settings.train"}
REGISTRIES = {"baselines": ("ticketx.baselines", "BASELINES"), "criteria": ("ticketx.criteria", "CRITERIA"),
              "pai": ("ticketx.pai", "CRITERIA")}
PLACEHOLDER = r"\{(?:(\w+)\.(\w+)(?::(default))?|(names|default):(\w+))\}"


def schema_field(spec: str, field: str) -> Any:
    """The pydantic FieldInfo of `spec.field` (e.g. 'TrainSpec', 'lr'): imports the schema."""
    import importlib

    return getattr(importlib.import_module(SCHEMAS[spec]), spec).model_fields[field]


def field_help(spec: str, field: str) -> str:
    """The field's description and its bounds ('[0<x<=10]'), as the schema declares them."""
    info = schema_field(spec, field)
    if not info.description:
        raise AssertionError(f"{spec}.{field} has no description: its CLI option has no help")
    lo = hi = ""
    for m in info.metadata:
        for name, fmt in (("ge", "{}<="), ("gt", "{}<")):
            if getattr(m, name, None) is not None:
                lo = fmt.format(getattr(m, name))
        for name, fmt in (("le", "<={}"), ("lt", "<{}")):
            if getattr(m, name, None) is not None:
                hi = fmt.format(getattr(m, name))
    return info.description + (f" [{lo}x{hi}]" if lo or hi else "")


def registry_names(kind: str) -> list[str]:
    """The names registered in REGISTRIES[kind], in registration order (imports the registry)."""
    import importlib

    module, attr = REGISTRIES[kind]
    return getattr(importlib.import_module(module), attr).names()


def _one_of(items: list[str]) -> str:
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else "".join(items)


def _names_help(kind: str) -> str:
    if kind == "pai":  # each with its paper: 'snip (Lee et al. 2019)'
        from ticketx.pai import get

        return _one_of([f"{n} ({get(n).cite})" for n in registry_names(kind)])
    return ", ".join(registry_names(kind))


def fill_help(text: str) -> str:
    """`text` with every placeholder filled in (Rich markup in what is filled in is escaped)."""
    import re

    from rich.markup import escape

    def fill(m: re.Match[str]) -> str:
        spec, field, default, kind, name = m.groups()
        if spec is not None and default is not None:
            return escape(f"[default: {schema_field(spec, field).default}]")
        if spec is not None:
            return escape(field_help(spec, field))
        if kind == "names":
            return escape(_names_help(name))
        if name != "baselines":
            raise AssertionError(f"unknown help placeholder {m[0]}")
        from ticketx.baselines import DEFAULT

        return escape(",".join(DEFAULT))

    return re.sub(PLACEHOLDER, fill, text)


class Command(typer.core.TyperCommand):
    """A command whose options' help placeholders are filled in when its help is printed."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for p in self.params:
            if isinstance(getattr(p, "help", None), str):
                p.help = fill_help(p.help)  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


def field_option(spec: str, field: str, *decls: str, note: str = "", **kw: Any) -> Any:
    """The typer.Option of the settings field `spec.field`: flag --field-name unless `decls` are
    given, help from the schema (its description and bounds, see fill_help), then `note` (what
    the option's default None means in this command). The schema validates the value."""
    flags = decls or (f"--{field.replace('_', '-')}",)
    return typer.Option(*flags, help=f"{{{spec}.{field}}}" + (f" {note}" if note else ""), **kw)


# ---- options (each declared once) ---------------------------------------------------------
Data = Annotated[str, typer.Option("--data", "-d", help="Data set: cifar10, svhn, digits, 'cifar10[0-4]', imagefolder:PATH, ... (see `ticketx datasets`).")]
Model = Annotated[str, typer.Option("--model", "-m", help="Model: lenet_300_100, conv4, vgg19, resnet20, timm:NAME, ... (see `ticketx models`).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")]
Cohort = Annotated[str, typer.Option("--cohort", help=(
    "Networks trained together in one step: a number, or auto (a fixed rule by device and network kind, README "
    "\"Performance\"). Speed only: each network's numbers agree with its own training to float rounding, and run "
    "keys do not change \\[default: 1, one at a time]."))]
CompileOpt = Annotated[Optional[str], typer.Option("--compile", metavar="off|auto|on", help=(
    "torch.compile the training step: on, off, or auto (on only where it was measured to pay for a whole run, never "
    "with --deterministic; README \"Performance\": at present nowhere). Speed only, like --cohort: run keys do not "
    "change, float rounding may \\[default: $TICKETX_COMPILE, else auto]."))]


def _compile(value: Optional[str]) -> None:
    """--compile given: the process's setting ($TICKETX_COMPILE, so worker processes get it too)."""
    if value is not None:
        from ticketx.runtime import set_compile

        set_compile(value)


Deterministic = Annotated[bool, typer.Option("--deterministic", help="Bit-identical results for the same seeds: on CPU always, on CUDA where PyTorch allows (see runtime.set_deterministic).")]
ImageSize = Annotated[Optional[int], typer.Option("--image-size", help="Resize images to this size \\[default: the model's native size].")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Where data sets live \\[default: $TICKETX_DATA or the user cache].")]
TicketOut = Annotated[Path, typer.Option("--out", "-o", help="Ticket file to write.")]
TrackerOpt = Annotated[Optional[str], typer.Option(
    "--tracker", metavar="NAME[:WHERE]",
    help="Log each network's config and curves while it trains: tensorboard[:DIR], wandb[:PROJECT] (offline unless "
         "logged in) or mlflow[:URI] \\[default WHERE: under the output folder]; pip install \"ticketx[NAME]\".")]


def _tracker(text: Optional[str], root: Path, group: str) -> Any:
    """The tracker `--tracker` names (None without one): a missing extra is a usage error now, before training."""
    if not text:
        return None
    from ticketx.trackers import open_tracker

    return open_tracker(text, root=root, group=group)


Width = Annotated[float, typer.Option("--width", help=(
    "Multiplier of every hidden layer's units or channels (1 = the paper's network; recorded in the ticket)."))]

# Training options, shared by every command that trains: declared here once and added to each
# such command by @training_options. Each is a TrainSpec field of the same name (help, bounds and
# validation from there), but --epochs, which is --length Nep: a new option is one line here.
TRAINING_OPTIONS: dict[str, tuple[Any, Any]] = {
    "optimizer": (Optional[str], field_option("TrainSpec", "optimizer", note="\\[default: the model's paper]")),
    "lr": (Optional[float], field_option("TrainSpec", "lr")),
    "momentum": (Optional[float], field_option("TrainSpec", "momentum")),
    "nesterov": (Optional[bool], field_option("TrainSpec", "nesterov", "--nesterov/--no-nesterov")),
    "weight_decay": (Optional[float], field_option("TrainSpec", "weight_decay")),
    "batch_size": (Optional[int], field_option("TrainSpec", "batch_size")),
    "epochs": (Optional[float], typer.Option("--epochs", help="Training length in epochs (same as --length Nep).")),
    "length": (Optional[str], field_option("TrainSpec", "length")),
    "milestones": (Optional[str], field_option("TrainSpec", "milestones")),
    "gamma": (Optional[float], field_option("TrainSpec", "gamma")),
    "warmup": (Optional[str], field_option("TrainSpec", "warmup")),
    "precision": (Optional[str], field_option("TrainSpec", "precision")),
    "eval_every": (Optional[str], field_option("TrainSpec", "eval_every")),
    "val_split": (Optional[float], field_option("TrainSpec", "val_split")),
    "label_noise": (Optional[float], field_option("TrainSpec", "label_noise")),
    "noise_mode": (Optional[str], field_option("TrainSpec", "noise_mode", note="{TrainSpec.noise_mode:default}")),
    "noise_seed": (Optional[int], field_option("TrainSpec", "noise_seed")),
    "augment": (Optional[bool], field_option("TrainSpec", "augment", "--augment/--no-augment")),
}


def training_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the TRAINING_OPTIONS to `command`'s options; it receives them as `train` (a dict of overrides)."""
    from typing import get_type_hints

    sig = signature(command)
    hints = get_type_hints(command, include_extras=True)  # this module uses postponed (string) annotations
    extra = [Parameter(name, Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[typ, opt])
             for name, (typ, opt) in TRAINING_OPTIONS.items()]
    params = [p.replace(annotation=hints[p.name]) for p in sig.parameters.values() if p.name != "train"]

    @functools.wraps(command)
    def wrapper(**kw: Any) -> Any:
        return command(train=train_overrides(**{name: kw.pop(name) for name in TRAINING_OPTIONS}), **kw)

    wrapper.__signature__ = sig.replace(parameters=[*params, *extra], return_annotation=None)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*params, *extra]}
    del wrapper.__wrapped__  # typer must read the signature above, not the command's own
    return wrapper


def train_overrides(**kw: Any) -> dict[str, Any]:
    """TrainSpec overrides from CLI values (None = not given); --epochs N is --length Nep."""
    epochs = kw.pop("epochs", None)
    if epochs is not None:
        if kw.get("length") is not None:
            raise UsageError("give either --epochs or --length, not both")
        if epochs <= 0:
            raise UsageError(f"--epochs must be positive, got {epochs:g}")
        kw["length"] = f"{epochs:g}ep"
    if kw.get("milestones") is not None and kw["milestones"].strip() == "":
        kw["milestones"] = []
    return {k: v for k, v in kw.items() if v is not None}


# ---- commands -------------------------------------------------------------------------------
@app.command(cls=Command)
@training_options
def find(
    data: Data,
    model: Model,
    out: TicketOut = Path("ticket.pt"),
    rounds: Annotated[Optional[int], field_option("PruneSpec", "rounds", note="{PruneSpec.rounds:default}")] = None,
    prune_rate: Annotated[Optional[float], field_option("PruneSpec", "rate", "--prune-rate", note="{PruneSpec.rate:default}")] = None,
    head_rate: Annotated[Optional[float], field_option("PruneSpec", "head_rate", note="\\[default: --prune-rate]")] = None,
    prune_rates: Annotated[Optional[str], field_option("PruneSpec", "rates", "--prune-rates")] = None,
    schedule: Annotated[Optional[str], field_option("PruneSpec", "schedule", note="{PruneSpec.schedule:default}")] = None,
    scope: Annotated[Optional[str], field_option("PruneSpec", "scope", note="\\[default: the model's paper]")] = None,
    keep_dense: Annotated[Optional[str], field_option("PruneSpec", "keep_dense")] = None,
    rewind: Annotated[Optional[str], field_option("PruneSpec", "rewind", note="\\[default: the model's paper]")] = None,
    criterion: Annotated[Optional[str], field_option("PruneSpec", "criterion", note="One of: {names:criteria}. {PruneSpec.criterion:default}")] = None,
    retrain: Annotated[Optional[str], field_option("PruneSpec", "retrain", note="{PruneSpec.retrain:default}")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for weight init and data order.")] = 0,
    init_seed: Annotated[Optional[int], typer.Option("--init-seed", help="Override the weight-initialisation seed.")] = None,
    data_seed: Annotated[Optional[int], typer.Option("--data-seed", help="Override the data-order/augmentation seed.")] = None,
    width: Width = 1.0,
    device: Device = "auto", deterministic: Deterministic = False, image_size: ImageSize = None, data_dir: DataDir = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing ticket made with other settings.")] = False,
    tracker: TrackerOpt = None,
    compile_: CompileOpt = None,
    train: dict[str, Any] | None = None,
) -> None:
    """Find a ticket by iterative magnitude pruning with rewinding; rerun the same command to resume."""
    from ticketx import interrupt
    from ticketx.search import find as run_find
    from ticketx.report import round_table
    from ticketx.settings import resolve_search
    from ticketx.ui import RichReporter, console

    spec = resolve_search(data, model, train=train, prune={"rounds": rounds, "rate": prune_rate, "head_rate": head_rate,
                        "rates": prune_rates, "schedule": schedule, "scope": scope, "keep_dense": keep_dense, "rewind": rewind, "criterion": criterion,
                        "retrain": retrain},
                        image_size=image_size, seed=seed, init_seed=init_seed, data_seed=data_seed, deterministic=deterministic,
                        width=width)
    _compile(compile_)
    tracking = _tracker(tracker, out.parent, out.name.rsplit(".", 1)[0])
    with RichReporter(tracker=tracking) as rep:
        ticket = run_find(spec, out, data_dir=data_dir, device=device, reporter=rep, force=force)
    interrupt.finished(str(out))  # a Ctrl-C from now on changes nothing: say so, exit 0
    console.print(round_table(ticket.rounds, title=f"{spec.model} on {ticket.meta['data']}"))
    console.print(f"[green]ticket written:[/] {out}")
    typer.echo(str(out))


def _head_rule(keep: bool, new: bool) -> str:
    from ticketx.errors import UsageError

    if keep and new:
        raise UsageError("give only one of --keep-head and --new-head")
    return "keep" if keep else "new" if new else "auto"


@app.command(cls=Command)
@training_options
def transfer(
    ticket: Annotated[Path, typer.Argument(help="Ticket file written by `ticketx find`.")],
    to: Annotated[str, typer.Option("--to", help="Target data set, e.g. svhn, 'cifar10[5-9]', imagefolder:PATH.")],
    round_: Annotated[Optional[str], typer.Option("--round", help="Round(s) to transfer, e.g. '3' or '1,3,5' \\[default: the last].")] = None,
    density: Annotated[Optional[float], typer.Option("--density", help="Transfer the round whose density is closest to this (0-1].")] = None,
    weights: Annotated[Optional[int], typer.Option("--weights", help="Transfer the pruned round whose remaining prunable weights are nearest this count (log scale).", min=1)] = None,
    rounds: Annotated[Optional[str], typer.Option("--rounds", help="'all' to transfer every pruned round (or a list like --round).")] = None,
    baselines: Annotated[Optional[str], typer.Option("--baselines", help="Comma-separated, of: {names:baselines}; or 'none'. \\[default: {default:baselines}]")] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds; each trains every network once.")] = "0",
    own_ticket: Annotated[Optional[Path], typer.Option("--own-ticket", help="A ticket found on the target itself, retrained next to the ticket.")] = None,
    against: Annotated[Optional[Path], typer.Option("--against", hidden=True)] = None,  # the old name of --own-ticket
    keep_head: Annotated[bool, typer.Option("--keep-head", help="Keep the ticket's output layer (only when its class names are the target's).")] = False,
    new_head: Annotated[bool, typer.Option("--new-head", help="A new output layer even on the ticket's own classes \\[default: kept exactly when the target is the ticket's data set with its classes, else new].")] = False,
    reset_head: Annotated[bool, typer.Option("--reset-head", hidden=True)] = False,  # the old name of --new-head
    head_dense: Annotated[bool, typer.Option("--head-dense", help="Every arm's output layer dense (kept or new) instead of pruned to the ticket's output-layer density.")] = False,
    mask0: Annotated[Optional[str], typer.Option("--mask0", help="What the pruned weights hold while every arm trains (Zhou et al. 2019): zero (default), frozen (at their starting value), zhou (zero where the weight moved toward zero in the round that pruned it, frozen elsewhere).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Check that the ticket is this model.")] = None,
    width: Annotated[Optional[float], typer.Option("--width", help="Check that the ticket's network has this width.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder \\[default: runs/transfer/<ticket>-to-<target>].")] = None,
    device: Device = "auto", deterministic: Deterministic = False, image_size: ImageSize = None, data_dir: DataDir = None,
    tracker: TrackerOpt = None,
    cohort: Cohort = "1",
    compile_: CompileOpt = None,
    train: dict[str, Any] | None = None,
) -> None:
    """Retrain a ticket on a target data set next to its baselines (controls at the same density)."""
    from ticketx import cohort as cohorts
    from ticketx import interrupt, store
    from ticketx.report import transfer_table
    from ticketx.settings.transfer import default_out, resolve_transfer_options
    from ticketx.transfer import transfer as run_transfer
    from ticketx.ui import RichReporter, console

    together = cohorts.parse(cohort)
    _compile(compile_)
    plan = resolve_transfer_options(
        ticket, to, round_=round_, density=density, weights=weights, rounds=rounds, baselines=baselines, seeds=seeds,
        own_ticket=own_ticket or against, head=_head_rule(keep_head, new_head or reset_head), head_dense=head_dense,
        mask0=mask0, deterministic=deterministic, train=train, model=model, image_size=image_size, width=width, device=device)
    out = out or default_out(ticket, plan.spec.target)
    store.check_writable(out / "result.json")
    tracking = _tracker(tracker, out, out.name)
    with RichReporter(tracker=tracking) as rep:
        result = run_transfer(plan, out, data_dir=data_dir, device=device, reporter=rep, cohort=together)
    interrupt.finished(str(out / "result.json"))
    console.print(transfer_table(result))
    console.print(f"[green]results:[/] {out / 'result.json'}")
    typer.echo(str(out / "result.json"))


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="Ticket file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the metadata as JSON on stdout.")] = False,
) -> None:
    """Show a ticket's metadata and per-layer density for every round."""
    import json

    from ticketx.report import ticket_summary
    from ticketx.settings.transfer import load_checked
    from ticketx.ui import console

    t = load_checked(path)
    if as_json:
        meta = {k: v for k, v in t.meta.items() if k != "rounds"}
        meta["rounds"] = [{k: v for k, v in r.items() if k != "history"} for r in t.rounds]
        meta["format_version"] = t.format_version
        typer.echo(json.dumps(meta, indent=2, default=str))
        return
    for renderable in ticket_summary(t):
        console.print(renderable)


@app.command()
def compare(
    tickets: Annotated[list[Path], typer.Argument(help="Two or more ticket files of the same architecture.")],
    density: Annotated[Optional[float], typer.Option("--density", help="Compare at this density (0-1] \\[default: the first ticket's lowest].")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the layerwise density profiles as a PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print every figure as JSON on stdout.")] = False,
) -> None:
    """Overlap of kept weights between tickets at matched density, against chance."""
    import json

    from ticketx.compare import compare_tickets
    from ticketx.report import compare_table
    from ticketx.ui import console

    res = compare_tickets(tickets, density)
    console.print(compare_table(res))
    if plot is not None:
        from ticketx.compare import profile_plot

        profile_plot(res["masks"], plot)
        console.print(f"[green]plot:[/] {plot}")
    if as_json:
        typer.echo(json.dumps({k: v for k, v in res.items() if k != "masks"}, indent=2, default=str))


@app.command(cls=Command)
@training_options
def stability(
    ticket: Annotated[Path, typer.Argument(help="Ticket file.")],
    round_: Annotated[Optional[int], typer.Option("--round", help="Round to test \\[default: the last].")] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Data-order seeds in pairs, e.g. '0,1' (one pair of copies) or '0,1,2,3' (two pairs: the barrier with a 95% interval).")] = "0,1",
    points: Annotated[int, typer.Option("--points", help="Points on the straight line between the two networks.", min=3)] = 11,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write error along the path as a PNG.")] = None,
    device: Device = "auto", data_dir: DataDir = None, cohort: Cohort = "1",
    tracker: TrackerOpt = None,
    compile_: CompileOpt = None,
    train: dict[str, Any] | None = None,
) -> None:
    """Linear mode connectivity (Frankle et al. 2020): train two copies, report the error barrier between them."""
    import json

    from ticketx import cohort as cohorts
    from ticketx.settings.transfer import load_checked, ticket_train_spec
    from ticketx.stability import run_stability
    from ticketx.ui import RichReporter, console

    together = cohorts.parse(cohort)
    _compile(compile_)
    t = load_checked(ticket)
    tracking = _tracker(tracker, ticket.parent, f"{ticket.name.rsplit('.', 1)[0]}-stability")
    with RichReporter(tracker=tracking) as rep:
        res = run_stability(t, round_, seeds, ticket_train_spec(t, train or {}), points=points, device=device,
                            data_dir=data_dir, reporter=rep, cohort=together)
    from ticketx.report import pct_interval

    n = len(res.get("pairs", [res]))
    console.print(f"round {res['round']} ({100 * res['density']:.2f}% weights remaining), {n} pair(s) of copies: "
                  f"test error barrier {pct_interval(res.get('test_barrier_interval'))} points, train error barrier "
                  f"{pct_interval(res.get('train_barrier_interval'))} points"
                  + ("" if n > 1 else " (one pair: a single measurement; give --seeds 0,1,2,3 for an interval)"))
    if plot is not None:
        from ticketx.stability import path_plot

        path_plot(res, plot)
        console.print(f"[green]plot:[/] {plot}")
    typer.echo(json.dumps(res, default=str))


@app.command(cls=Command)
@training_options
def pai(
    data: Data,
    model: Model,
    densities: Annotated[str, typer.Option("--densities", help="Target densities, decreasing, e.g. '0.5,0.2,0.1'.")],
    criterion: Annotated[Optional[str], typer.Option("--criterion", help="How each weight is scored: {names:pai}. \\[required]")] = None,
    method: Annotated[Optional[str], typer.Option("--method", hidden=True)] = None,  # the old name of --criterion
    out: TicketOut = Path("ticket.pt"),
    scope: Annotated[str, field_option("PruneSpec", "scope")] = "global",
    iterations: Annotated[int, typer.Option("--iterations", help="SynFlow iterations per density.", min=1)] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Weight-initialisation and sampling seed.")] = 0,
    width: Width = 1.0,
    device: Device = "auto", image_size: ImageSize = None, data_dir: DataDir = None,
    tracker: TrackerOpt = None,
    train: dict[str, Any] | None = None,
) -> None:
    """Prune at initialisation (SNIP, GraSP, SynFlow) and write the masks as an ordinary ticket."""
    from ticketx.pai import write_pai_ticket
    from ticketx.ui import console

    if criterion is not None and method is not None and criterion != method:
        raise UsageError("give --criterion once (--method is its old name)")
    criterion = criterion or method
    if criterion is None:
        raise UsageError("Missing option '--criterion'.", "see 'ticketx pai --help'")
    stem = out.name.rsplit(".", 1)[0]
    tracking = _tracker(tracker, out.parent, stem)
    ticket = write_pai_ticket(criterion, data, model, densities, out, scope=scope, iterations=iterations, seed=seed,
                              device=device, image_size=image_size, data_dir=data_dir, train=train or {}, width=width)
    if tracking is not None:  # nothing trains: the masks' densities, by round
        from ticketx.trackers import log_rounds

        log_rounds(tracking, f"{stem}/pai", {k: v for k, v in ticket.meta.items() if k not in ("rounds", "versions")},
                   ticket.rounds)
    console.print(f"[green]ticket written:[/] {out} ({len(ticket.rounds) - 1} densities)")
    typer.echo(str(out))


@app.command(cls=Command)
@training_options
def supermask(
    data: Data,
    model: Model,
    densities: Annotated[str, typer.Option("--densities", help="Target densities, decreasing, e.g. '0.5,0.2,0.1'; each continues from the previous one.")],
    method: Annotated[str, typer.Option("--method", help="bernoulli (Zhou et al. 2019: sigmoid scores, sampled, straight-through) or edge-popup (Ramanujan et al. 2020: top-k scores per layer, straight-through).")] = "edge-popup",
    weights: Annotated[str, typer.Option("--weights", help="The frozen weights: init (the model's initialisation, as find's with the same seed) or signed-constant (sign(w_0) times the std of the layer's initial weights).")] = "init",
    mask_length: Annotated[str, typer.Option("--mask-length", help="Score-training steps per density, e.g. '20ep' or '300it'.")] = "20ep",
    mask_lr: Annotated[Optional[float], typer.Option("--mask-lr", help="Adam lr of the scores \\[default: bernoulli 0.1, edge-popup 0.01].")] = None,
    mask_batch_size: Annotated[int, typer.Option("--mask-batch-size", help="Batch size while learning the masks.", min=1)] = 60,
    profile: Annotated[str, typer.Option("--profile", metavar="uniform|imp|TICKET.pt", help="How many weights each layer keeps: uniform (every layer at the density: Ramanujan et al. 2020), imp (the counts find's layerwise schedule gives at the round nearest each density, the output layer at its head rate: Frankle & Carbin 2019; shaped by --prune-rate, --head-rate, --prune-rates, --schedule) or a ticket file (its per-layer counts at its nearest round).")] = "uniform",
    prune_rate: Annotated[Optional[float], field_option("PruneSpec", "rate", "--prune-rate", note="With --profile imp. \\[default: the model's]")] = None,
    head_rate: Annotated[Optional[float], field_option("PruneSpec", "head_rate", note="With --profile imp. \\[default: the model's]")] = None,
    prune_rates: Annotated[Optional[str], field_option("PruneSpec", "rates", "--prune-rates", note="With --profile imp.")] = None,
    schedule: Annotated[Optional[str], field_option("PruneSpec", "schedule", note="With --profile imp. {PruneSpec.schedule:default}")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="Also report, per density, the target's test accuracy with only a new output layer trained (every other weight frozen).")] = None,
    probe_length: Annotated[str, typer.Option("--probe-length", help="Steps of training the new output layer on --target.")] = "20ep",
    out: TicketOut = Path("ticket.pt"),
    seed: Annotated[int, typer.Option("--seed", help="Weight-initialisation, score and data-order seed.")] = 0,
    device: Device = "auto", image_size: ImageSize = None, data_dir: DataDir = None,
    train: dict[str, Any] | None = None,
) -> None:
    """Learn supermasks over frozen random weights (no weight trained) and write them as an ordinary ticket."""
    from ticketx.report import round_table
    from ticketx.supermask import write_supermask_ticket
    from ticketx.ui import RichReporter, console

    with RichReporter() as rep:
        ticket, probes = write_supermask_ticket(
            method, data, model, densities, out, weights=weights, seed=seed, length=mask_length, lr=mask_lr,
            batch_size=mask_batch_size, target=target, probe_length=probe_length, device=device, image_size=image_size,
            data_dir=data_dir, train=train or {}, reporter=rep, profile=profile,
            prune={"rate": prune_rate, "head_rate": head_rate, "rates": prune_rates, "schedule": schedule})
    console.print(round_table(ticket.rounds, title=f"{method} supermask over {weights} weights, {model} on "
                                                    f"{ticket.meta['data']}: test accuracy of mask x weights, no weight trained"
                                                    f" ({ticket.meta['prune']['profile']} layer profile)"))
    for p in probes:
        console.print(f"{100 * p['density']:.2f}% weights remaining: {p['target']} test accuracy {100 * p['test_acc']:.2f}% "
                      "with only a new output layer trained")
    console.print(f"[green]ticket written:[/] {out}")
    typer.echo(str(out))


@app.command()
def datasets(data_dir: DataDir = None) -> None:
    """List the data sets ticketx knows, and whether each is present locally."""
    from ticketx.report import dataset_table
    from ticketx.ui import console

    console.print(dataset_table(data_dir))


@app.command()
def models() -> None:
    """List the models ticketx knows (plus any timm model as timm:NAME)."""
    from ticketx.report import model_table
    from ticketx.ui import console

    console.print(model_table())


# Exit codes: 1 runtime, 2 usage, 128 + signal number when interrupted (130 Ctrl-C, 143 SIGTERM).


def _click_errors() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(usage errors, exit requests, aborts) of click and of the copy of click that typer vendors."""
    import typer

    usage: list[type] = []
    exits: list[type] = [typer.Exit]
    aborts: list[type] = [typer.Abort]
    try:
        from typer._click.exceptions import ClickException

        usage.append(ClickException)
    except ImportError:  # pragma: no cover - typer versions that use click itself
        pass
    try:
        import click

        usage.append(click.ClickException)
        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
    except ImportError:  # pragma: no cover
        pass
    return tuple(usage), tuple(exits), tuple(aborts)


# ---- studies: one YAML file runs a grid of searches and transfers (ticketx.study) ----
study_app = typer.Typer(
    help="Studies: one YAML file runs a grid of ticket searches and transfers; resumable; transfer matrix, CSV and plots.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)
app.add_typer(study_app, name="study")

StudyFile = Annotated[Path, typer.Argument(help="Study file (YAML), e.g. studies/quickstart.yaml.")]
StudyOrFolder = Annotated[Path, typer.Argument(help="Study file (YAML) or a study's output folder (the study as it ran there).")]
StudyOut = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder \\[default: runs/<study name>, with "
                                                                     "+<overrides> when --set changes results].")]
Sets = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE",
    help="Override a key of the study file, e.g. train.lr=0.01, transfer.seeds=[0,1] or expect[0].by=2pt (the value is "
         "YAML; repeatable); validated like the file. Recorded in the study folder: give the same ones to continue it.")]
HeatDensity = Annotated[Optional[float], typer.Option("--density", help="Heatmap at the round closest to this density (0-1] \\[default: the lowest].")]


LeaseTimeout = Annotated[Optional[float], typer.Option(
    "--lease-timeout", min=0.1,
    help="Seconds without a heartbeat after which another worker takes a running cell over \\[default: 600].")]


def _study_out(s: Any, out: Optional[Path]) -> Path:
    from ticketx.study.runner import default_folder

    return out or default_folder(s)


def _load(study: Path, sets: Optional[list[str]], out: Optional[Path] = None) -> tuple[Any, Path, Optional[dict[str, Any]]]:
    """(study, folder, its record or None): a study file with its --set overrides and its folder, or
    a study folder's study as it ran there (its file and overrides as recorded; --set replaces
    those of the same keys)."""
    from ticketx.settings.overrides import parse_overrides
    from ticketx.study import load_provenance, load_study

    if not study.is_dir():
        s = load_study(study, overrides=sets or [])
        return s, _study_out(s, out), None
    if out is not None and out.resolve() != study.resolve():
        raise UsageError(f"give the study folder {study} or --out {out}, not both")
    prov = load_provenance(study)
    given = parse_overrides(sets)
    recorded = [t for t in prov.get("overrides") or []
                if not any(g.path[: len(p)] == p or p[: len(g.path)] == g.path for g in given
                           for p in [parse_overrides([t])[0].path])]
    s = load_study(prov.get("file") or "study.yaml", text=prov["text"], overrides=[*recorded, *(g.text for g in given)])
    return s, study, prov


JUnitOut = Annotated[Optional[Path], typer.Option("--junit", help="Write the claims' verdicts as JUnit XML (one test case per claim).")]
JSONOut = Annotated[Optional[Path], typer.Option("--json", help="Write the claims' verdicts as JSON.")]
MarkdownOut = Annotated[Optional[Path], typer.Option(
    "--markdown", help="Write the claims, the summary at the claimed densities and links to the plots as GitHub-flavoured "
                       "Markdown (a CI job summary: append it to $GITHUB_STEP_SUMMARY).")]


def _check(s: Any, out: Path, prov: Any, junit: Optional[Path], json_out: Optional[Path],
           markdown: Optional[Path] = None, notes: Optional[list[str]] = None) -> int:
    """Judge the study's claims on `out`, print the table, write the reports; the exit code.

    `notes`: claims changed after results existed (study.runner.claim_overrides), shown first."""
    from rich.markup import escape

    from ticketx.study.expect import evaluate, exit_code, table, write_reports
    from ticketx.ui import console

    results = evaluate(out, s.claims, prov)
    for note in notes or []:
        console.print(f"[yellow]warning:[/] {escape(note)}", soft_wrap=True)
    console.print(table(results, f"{s.name}: expectations"))
    write_reports(results, s.name, junit, json_out, markdown, plots=sorted((out / "plots").glob("*.png")), notes=notes or [])
    code = exit_code(results)
    counts = {k: sum(r.outcome.status == k for r in results) for k in ("pass", "fail", "inconclusive", "unfinished")}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    colour = {0: "green", 1: "bold red"}.get(code, "yellow")
    console.print(f"[{colour}]{len(results)} claims: {summary}[/] (exit code {code})"
                  + "".join(f"; {kind}: {p}" for kind, p in (("junit", junit), ("json", json_out), ("markdown", markdown))
                          if p is not None))
    for r in results:
        if r.outcome.status != "pass":
            console.print(f"  [{'red' if r.outcome.status == 'fail' else 'yellow'}]{r.outcome.status}[/] {r.name} "
                          f"[dim]({r.where})[/]: {r.outcome.message}", soft_wrap=True, markup=True, highlight=False)
    return code


@study_app.command("run")
def study_run(
    study: StudyOrFolder,
    out: StudyOut = None,
    sets: Sets = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N \\[default: the study's, else auto].")] = None,
    data_dir: DataDir = None,
    density: HeatDensity = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-j", min=1, help="Worker processes on this machine (one per device with --devices; on CPU the cores are split) \\[default: 1].")] = None,
    devices: Annotated[Optional[str], typer.Option("--devices", help="GPUs for the workers, e.g. 0,1,2,3: one worker each (round-robin if --workers is larger).")] = None,
    cpu_threads: Annotated[Optional[int], typer.Option("--cpu-threads", min=1, help="PyTorch CPU threads per worker \\[default: the study's cpu_threads, else cores / workers].")] = None,
    lease_timeout: LeaseTimeout = None,
    do_report: Annotated[bool, typer.Option("--report/--no-report", help="Write results.csv, tables and plots, and check the claims (expect:), at the end.")] = True,
    junit: JUnitOut = None,
    json_out: JSONOut = None,
    markdown: MarkdownOut = None,
    tracker: Annotated[Optional[str], typer.Option(
        "--tracker", metavar="NAME[:WHERE]",
        help="Log every network (and the study's summary and plots) to tensorboard[:DIR], wandb[:PROJECT] or "
             "mlflow[:URI] \\[default: the study's tracking: block; WHERE under the study folder].")] = None,
    compile_: CompileOpt = None,
) -> None:
    """Run every cell of a study not done yet (rerun to resume), then report and check its claims (`expect:`).

    Exit code with claims: 0 all pass, 1 one fails, 3 one is inconclusive or unfinished (see `study check`).

    Any number of `study run` processes (here or on other machines sharing the folder) may work on
    one study at once: each cell is trained by one of them.
    """
    from ticketx.study import count, report, run_study
    from ticketx.study.local import parse_devices, spawn_workers, worker_slots
    from ticketx.study.runner import check_overrides, claim_overrides
    from ticketx.study.worker import DEFAULT_LEASE_TIMEOUT
    from ticketx.ui import RichReporter, console

    devs = parse_devices(devices) if devices is not None else None
    _compile(compile_)  # before the workers start: they inherit it
    if device is not None and devs is not None:
        raise UsageError("give --device (one worker) or --devices (one worker per device), not both")
    s, out, _ = _load(study, sets, out)
    c = count(s.cells)
    timeout = lease_timeout if lease_timeout is not None else s.spec.launcher.lease_timeout or DEFAULT_LEASE_TIMEOUT
    n = workers or (len(devs) if devs else 1)
    stab = f", {c['stability']} stability cells" if c.get("stability") else ""
    console.print(f"study [bold]{s.name}[/]: {c['search']} search cells, {c['transfer']} transfer cells{stab} -> {out}"
                  + (f" ({n} workers)" if n > 1 else "") + "".join(f"; --set {o.text}" for o in s.overrides))
    check_overrides(s, out)  # before any worker starts
    tracking = _tracker(tracker or (s.spec.tracking.text if s.spec.tracking else None), out, s.name)
    notes = claim_overrides(s, out)  # claims changed now, while results exist: recorded
    if n > 1:
        plan = worker_slots(n, devs, device or s.spec.device, cpu_threads or s.spec.cpu_threads)
        codes = spawn_workers(Path(study), out, plan, data_dir=data_dir, lease_timeout=timeout, overrides=sets or [],
                              tracker=tracker, log=lambda m: console.print(f"[dim]{m}[/]"))
        if any(codes):
            from ticketx.study.status import status

            st = status(out)
            first = st["failed_cells"][0] if st["failed_cells"] else None
            msg = f"{sum(1 for x in codes if x)} of {n} workers failed"
            if first:
                msg += f"; {st['failed']} cells failed, first: {first['title']}: {first['error']}"
            raise TicketxError(msg, f"logs in {out / 'logs'}; `ticketx study status {out}`; rerun to retry")
    else:
        with RichReporter(tracker=tracking) as rep:
            run_study(s, out, device=devs[0] if devs else device, data_dir=data_dir, reporter=rep,
                      lease_timeout=timeout, threads=cpu_threads)
    if do_report:
        written = report(out, density=density)
        if tracking is not None:  # the study as a whole: its summary table and plots
            from ticketx.study.results import track_study

            track_study(tracking, out, written)
    from ticketx import interrupt

    interrupt.finished(str(out))  # every cell is done and reported: a late Ctrl-C loses nothing
    # Claims are judged by the process that reports (workers run with --no-report), or when asked for a file.
    code = 0
    if s.claims and (do_report or junit or json_out or markdown):
        code = _check(s, out, None, junit, json_out, markdown, notes)
    elif markdown is not None:  # no claims: the job summary links the plots
        from ticketx.study.expect import write_reports

        write_reports([], s.name, markdown_path=markdown, plots=sorted((out / "plots").glob("*.png")), notes=notes)
    typer.echo(str(out))
    if code:
        raise typer.Exit(code)


@study_app.command("submit")
def study_submit(
    study: StudyOrFolder,
    out: StudyOut = None,
    sets: Sets = None,
    local: Annotated[bool, typer.Option("--local", help="Run the jobs as local processes (submitit's local executor) instead of Slurm.")] = False,
    workers: Annotated[Optional[int], typer.Option("--workers", "-j", min=1, help="Worker jobs in the array \\[default: launcher.workers, else one per cell up to 64].")] = None,
    array_parallelism: Annotated[Optional[int], typer.Option("--array-parallelism", min=1, help="At most this many array tasks running at once.")] = None,
    partition: Annotated[Optional[str], typer.Option("--partition", "-p", help="Slurm partition.")] = None,
    account: Annotated[Optional[str], typer.Option("--account", "-A", help="Slurm account.")] = None,
    gpus_per_task: Annotated[Optional[int], typer.Option("--gpus-per-task", "--gpus", min=0, help="GPUs per worker job \\[default: 1 on Slurm, 0 local].")] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option("--cpus-per-task", min=1, help="CPU cores per worker job (also its PyTorch threads).")] = None,
    mem_gb: Annotated[Optional[float], typer.Option("--mem-gb", min=0.1, help="Memory per worker job, GB.")] = None,
    time: Annotated[Optional[str], typer.Option("--time", "-t", help="Time limit per job: minutes or [D-]HH:MM:SS \\[default: 4:00:00]; a job that runs out is requeued and resumes.")] = None,
    slurm_arg: Annotated[Optional[list[str]], typer.Option("--slurm-arg", help="Extra sbatch flag, e.g. qos=high or --constraint=a100 (repeatable).")] = None,
    phases: Annotated[Optional[bool], typer.Option("--phases/--no-phases", help="Searches in a first array, transfers in a second one after it \\[default: on].")] = None,
    lease_timeout: LeaseTimeout = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda \\[default: the study's].")] = None,
    data_dir: DataDir = None,
) -> None:
    """Submit the study's workers as a Slurm job array (submitit) and return; watch with `study status`."""
    import json

    from ticketx.settings.study import parse_minutes
    from ticketx.study import count
    from ticketx.study.runner import done_ids
    from ticketx.study.slurm import launch_settings, parse_extra, submit
    from ticketx.ui import console

    minutes = None
    if time is not None:
        try:
            minutes = parse_minutes(time)
        except ValueError as err:
            raise UsageError(f"--time: {err}") from None
    extra = parse_extra(slurm_arg)
    s, out, _ = _load(study, sets, out)
    pending = len(s.cells) - len(done_ids(out, s.cells))
    launch = launch_settings(s, pending, cluster="local" if local else None, workers=workers,
                             array_parallelism=array_parallelism, partition=partition, account=account,
                             gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task, mem_gb=mem_gb, time=minutes,
                             extra=extra, phases=phases, lease_timeout=lease_timeout)
    c = count(s.cells)
    res = submit(s, out, launch, device=device, data_dir=data_dir, text=s.text if study.is_dir() else None)
    if not res["arrays"]:
        console.print(f"study [bold]{s.name}[/]: every cell is done in {out}; nothing to submit")
        typer.echo(json.dumps({k: v for k, v in res.items()}))
        return
    console.print(f"study [bold]{s.name}[/]: {c['search']} search + {c['transfer']} transfer cells, {pending} to do; "
                  f"{launch.cluster}: {launch.workers} workers, {launch.gpus_per_task} GPU(s) and {launch.time_min} min each")
    for a in res["arrays"]:
        ids = a["array"] if launch.cluster == "slurm" else ", ".join(a["jobs"])
        console.print(f"  {a['phase']} {'array' if launch.cluster == 'slurm' else 'jobs'} [bold]{ids}[/]: {len(a['jobs'])} workers"
                      + (" (starts after the search array)" if a["phase"] == "transfer" and launch.cluster == "slurm" else ""))
    console.print(f"watch:  ticketx study status {out}")
    if launch.cluster == "slurm":
        console.print(f"        squeue -j {','.join(a['array'] for a in res['arrays'])}")
    console.print(f"logs:   {out / 'slurm'} (jobs), {out / 'logs'} (workers)")
    typer.echo(json.dumps({"cluster": launch.cluster, "out": str(out),
                           "arrays": [{k: v for k, v in a.items() if k != "job_objects"} for a in res["arrays"]]}))


@study_app.command("status")
def study_status(
    study: Annotated[Path, typer.Argument(help="Study file (YAML) or a study's output folder.")],
    out: StudyOut = None,
    sets: Sets = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON on stdout.")] = False,
) -> None:
    """Cells done, running (by which worker, for how long), failed (error and log), pending; an ETA."""
    import json

    from rich.markup import escape
    from rich.table import Table

    from ticketx.study import provenance
    from ticketx.study.status import status
    from ticketx.ui import console

    if study.is_dir() and not sets:
        folder, prov = study, None
    else:
        s, folder, _ = _load(study, sets, out)
        prov = provenance(s)
        if not folder.is_dir():
            raise UsageError(f"no results in {folder}: the study has not run there", f"run it: ticketx study run {study}")
    st = status(folder, prov)
    eta = "unknown (no cell finished yet)" if st["eta_s"] is None else _duration(st["eta_s"])
    console.print(f"study [bold]{escape(st['name'])}[/] in {escape(str(folder))}: {st['cells']} cells: "
                  f"[green]{st['done']} done[/], [cyan]{st['running']} running[/], [red]{st['failed']} failed[/], "
                  f"{st['pending']} pending; ETA {eta}"
                  + (f" with {st['workers']} active workers" if st["workers"] else ""), soft_wrap=True)
    if st["running_cells"]:
        t = Table(title="running", title_justify="left")
        for col in ("cell", "worker", "job", "host", "pid", "for", "heartbeat"):
            t.add_column(col)
        for r in st["running_cells"]:
            beat = f"{r['heartbeat_s']:.0f}s ago" + (" [red](stale: will be taken over)[/]" if r["stale"] else "")
            t.add_row(escape(r["title"]), escape(str(r["worker"])), escape(str(r["job"] or "")), escape(str(r["host"])),
                      str(r["pid"]), _duration(r["for_s"]), beat)
        console.print(t)
    for f in st["failed_cells"]:
        console.print(f"[red]failed[/] {escape(f['title'])}: {escape(f['error'])} [dim](log: {escape(str(f['log']))})[/]",
                      soft_wrap=True)
    if as_json:
        typer.echo(json.dumps(st, default=str))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
@study_app.command("validate")
def study_validate(study: StudyFile, sets: Sets = None) -> None:
    """Check a study file without training: schema, names, ranges; print its cells by kind."""
    import json

    from ticketx.study import count, load_study
    from ticketx.study.cells import images_to_train
    from ticketx.ui import console

    s = load_study(study, overrides=sets or [])
    c = count(s.cells)
    cost = images_to_train(s.cells)
    stab = f", {c['stability']} stability cells" if c.get("stability") else ""
    console.print(f"[green]{study}{''.join(f' --set {o.text}' for o in s.overrides)}: valid.[/] study [bold]{s.name}[/]: "
                  f"{c['search']} search cells, {c['transfer']} transfer cells{stab}, {c['networks']} networks to train")
    by = ", ".join(f"{k} {v:.3g}" for k, v in cost["by_kind"].items())
    unknown = f"; not counted (size known once loaded): {', '.join(cost['unknown'])}" if cost["unknown"] else ""
    console.print(f"images to train: {cost['images']:.3g} ({by}; steps x batch, evaluation passes extra){unknown}. "
                  "Hours = images / (images per second of one device) / 3600")
    typer.echo(json.dumps({**c, "images": cost["images"]}))


@study_app.command("check")
def study_check(
    study: Annotated[Path, typer.Argument(help="Study file (YAML) or a study's output folder.")],
    out: StudyOut = None,
    sets: Sets = None,
    junit: JUnitOut = None,
    json_out: JSONOut = None,
    markdown: MarkdownOut = None,
) -> None:
    """Judge the study's claims (`expect:`) on its finished results; for CI.

    Exit code: 0 every claim passes, 1 a claim fails, 3 none fails but one is inconclusive (its
    interval straddles the threshold: more seeds needed) or its cells are not finished; 2 bad input.
    """
    from ticketx.study import provenance
    from ticketx.study.runner import claim_overrides

    s, folder, prov = _load(study, sets, out)  # a folder: the study as it ran there
    if not folder.is_dir():
        raise UsageError(f"no results in {folder}: the study has not run there", f"run it: ticketx study run {study}")
    if prov is None or sets:
        prov = {**(prov or {}), **provenance(s)}
    if not s.claims:
        raise UsageError(f"{s.file}: the study has no claims to check", "add an expect: block (README, \"Studies in CI\")")
    code = _check(s, folder, prov, junit, json_out, markdown, claim_overrides(s, folder))
    if code:
        raise typer.Exit(code)


@study_app.command("report")
def study_report(
    study: Annotated[Path, typer.Argument(help="Study file (YAML) or a study's output folder.")],
    out: StudyOut = None,
    sets: Sets = None,
    density: HeatDensity = None,
) -> None:
    """Tables, results.csv and plots from a study's finished cells (also while it is running)."""
    from ticketx.study import provenance, report

    if study.is_dir() and not sets:
        report(study, density=density)
        typer.echo(str(study / "results.csv"))
        return
    s, folder, _ = _load(study, sets, out)
    report(folder, density=density, prov=provenance(s))
    typer.echo(str(folder / "results.csv"))


def main() -> None:
    """Entry point: run the app, turning known errors into one line and an exit code."""
    import signal

    from rich.markup import escape

    from ticketx import distributed, interrupt
    from ticketx.ui import console

    # torchrun --nproc-per-node N -m ticketx ...: N processes train one run with DDP
    # (ticketx.distributed); only rank 0 prints and writes.
    rank = 0

    def fail(message: str, hint: str | None, code: int) -> None:
        from ticketx.settings.base import shorten_text

        interrupt.closing()
        if rank:  # another DDP rank: rank 0 reports usage errors; others may be this rank's alone
            if code == 2:
                sys.exit(code)
            console.quiet, message = False, f"rank {rank}: {message}"
        # Messages quote user input ('digits[a]', paths): escape it so Rich prints it verbatim, and
        # bound it (a value from a hostile study file is shortened where it is quoted; this is the net).
        console.print(f"[bold red]error:[/] {escape(shorten_text(message, 2000))}", soft_wrap=True)
        if hint:
            console.print(f"[dim]hint: {escape(hint)}[/]", soft_wrap=True)
        sys.exit(code)

    def interrupted() -> None:
        interrupt.closing()  # a second Ctrl-C must not cut this message short
        signum = interrupt.requested() or signal.SIGINT
        what, todo = interrupt.message(signum)
        done = interrupt.finished_what()
        if done is not None:  # the result was safely written before the signal
            interrupt.noted()
            console.print(f"[yellow]{what}[/] after {escape(done)} was written: it is complete; nothing to resume.",
                          soft_wrap=True)
            sys.exit(0)
        console.print(f"[yellow]{what}:[/] {todo}", soft_wrap=True)
        sys.exit(128 + int(signum))

    _DEBUG["on"] = os.environ.get("TICKETX_DEBUG", "") not in ("", "0")  # --debug sets it again
    usage, exits, aborts = _click_errors()
    try:
        rv: Any = 1
        with interrupt.handled():
            try:
                command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
                if distributed.launched() and command == "study":  # every rank would claim its own cells
                    raise UsageError("a study does not run under torchrun: its workers do not train one cell with DDP yet",
                                     "run one worker per GPU: ticketx study run STUDY --devices 0,1,...")
                if distributed.init() and not distributed.is_main():
                    rank = distributed.rank()
                    console.quiet = True  # human output from rank 0 only
                    sys.stdout = open(os.devnull, "w")  # and machine output
                rv = app(standalone_mode=False)
                interrupt.closing()
            except TicketxError as err:
                if _DEBUG["on"]:
                    raise
                fail(str(err), err.hint, err.exit_code)
            except KeyboardInterrupt:
                interrupted()
            except exits as err:
                interrupt.closing()
                sys.exit(err.exit_code)
            except aborts:
                interrupted()
            except usage as err:
                if _DEBUG["on"]:
                    raise
                message = err.format_message()
                if not message:  # no_args_is_help: the help was printed
                    sys.exit(err.exit_code)
                ctx = getattr(err, "ctx", None)
                hint = f"see '{ctx.command_path} --help'" if ctx is not None else None
                fail(message, hint, err.exit_code)
            except Exception as err:  # unexpected failures
                if _DEBUG["on"]:
                    raise
                interrupt.closing()
                console.quiet = False  # every DDP rank reports its own crash
                console.print(f"[bold red]internal error:[/] {f'rank {rank}: ' if rank else ''}{escape(type(err).__name__)}: "
                              f"{escape(str(err))}", soft_wrap=True)
                console.print("[dim]hint: rerun with --debug (or TICKETX_DEBUG=1) for the traceback and report it[/]")
                sys.exit(1)
            # In non-standalone mode typer turns a KeyboardInterrupt inside a command into Exit(130)
            # and returns the code instead of raising.
            if rv == 130:
                interrupted()
            if isinstance(rv, int) and rv:
                sys.exit(rv)
            if interrupt.requested():  # it came after the command's last write: nothing was lost
                interrupt.noted()
                what, _ = interrupt.message(interrupt.requested())
                console.print(f"[yellow]{what}[/] after the command had finished: its results are complete; nothing to resume.",
                              soft_wrap=True)
    finally:
        distributed.teardown(clean=rv in (None, 0))
