"""The `ticketx` command: parse options -> build a spec -> call the library -> render.

No science here. Known errors become one red line and an exit code (1 runtime, 2 usage);
set TICKETX_DEBUG=1 or pass --debug for the traceback. Human output goes to stderr, machine
output (paths, JSON) to stdout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

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


# ---- options shared by every command that trains (one definition, used everywhere) ----
Data = Annotated[str, typer.Option("--data", "-d", help="Data set: cifar10, svhn, digits, 'cifar10[0-4]', imagefolder:PATH, ... (see `ticketx datasets`).")]
Model = Annotated[str, typer.Option("--model", "-m", help="Model: lenet_300_100, conv4, vgg19, resnet20, timm:NAME, ... (see `ticketx models`).")]
Optimizer = Annotated[Optional[str], typer.Option("--optimizer", help="sgd or adam \\[default: the model's paper].")]
Lr = Annotated[Optional[float], typer.Option("--lr", help="Learning rate.")]
Momentum = Annotated[Optional[float], typer.Option("--momentum", help="SGD momentum.")]
Nesterov = Annotated[Optional[bool], typer.Option("--nesterov/--no-nesterov", help="Nesterov momentum (SGD).")]
WeightDecay = Annotated[Optional[float], typer.Option("--weight-decay", help="L2 weight decay.")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Batch size.")]
Epochs = Annotated[Optional[float], typer.Option("--epochs", help="Training length in epochs (same as --length Nep).")]
Length = Annotated[Optional[str], typer.Option("--length", help="Training length: '160ep' or '30000it'.")]
Milestones = Annotated[Optional[str], typer.Option("--milestones", help="LR drops, e.g. '80ep,120ep' ('' for none).")]
Gamma = Annotated[Optional[float], typer.Option("--gamma", help="LR multiplier at each milestone.")]
Warmup = Annotated[Optional[str], typer.Option("--warmup", help="Linear LR warmup length, e.g. '5ep' or '10000it'.")]
Precision = Annotated[Optional[str], typer.Option("--precision", help="fp32 (default, as the papers), bf16 or fp16 autocast.")]
EvalEvery = Annotated[Optional[str], typer.Option("--eval-every", help="Measure test accuracy every N steps, e.g. '1ep'.")]
ValSplit = Annotated[Optional[float], typer.Option("--val-split", help="Fraction of train held out as validation.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for weight init and data order.")]
InitSeed = Annotated[Optional[int], typer.Option("--init-seed", help="Override the weight-initialisation seed.")]
DataSeed = Annotated[Optional[int], typer.Option("--data-seed", help="Override the data-order/augmentation seed.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")]
Deterministic = Annotated[bool, typer.Option("--deterministic", help="Bit-identical results for the same seeds: on CPU always, on CUDA where PyTorch allows (see train.set_deterministic).")]
ImageSize = Annotated[Optional[int], typer.Option("--image-size", help="Resize images to this size \\[default: the model's native size].")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Where data sets live \\[default: $TICKETX_DATA or the user cache].")]


def train_overrides(**kw: Any) -> dict[str, Any]:
    """TrainSpec overrides from CLI values (None = not given)."""
    epochs, length = kw.pop("epochs", None), kw.pop("length", None)
    if epochs is not None and length is not None:
        raise UsageError("give either --epochs or --length, not both")
    if epochs is not None:
        if epochs <= 0:
            raise UsageError(f"--epochs must be positive, got {epochs:g}")
        kw["length"] = f"{epochs:g}ep"
    elif length is not None:
        kw["length"] = length
    if kw.get("milestones") is not None and kw["milestones"].strip() == "":
        kw["milestones"] = []
    if kw.get("optimizer") is not None and kw["optimizer"] not in ("sgd", "adam"):
        from ticketx.errors import did_you_mean

        raise UsageError("--optimizer: " + did_you_mean(kw["optimizer"], ("sgd", "adam"), "optimizer"))
    return {k: v for k, v in kw.items() if v is not None}


def _spec(factory: Any, what: str) -> Any:
    from pydantic import ValidationError

    from ticketx.spec import describe_validation_error

    try:
        return factory()
    except ValidationError as err:
        raise UsageError(f"invalid {what} option: {describe_validation_error(err)}") from None


@app.command()
def find(
    data: Data,
    model: Model,
    out: Annotated[Path, typer.Option("--out", "-o", help="Ticket file to write.")] = Path("ticket.pt"),
    rounds: Annotated[Optional[int], typer.Option("--rounds", help="Pruning rounds after the dense round \\[default 10].")] = None,
    prune_rate: Annotated[Optional[float], typer.Option("--prune-rate", help="Fraction of remaining weights pruned per round \\[default 0.2].")] = None,
    head_rate: Annotated[Optional[float], typer.Option("--head-rate", help="Rate for the output layer \\[default: --prune-rate; F&C 2019 used half].")] = None,
    scope: Annotated[Optional[str], typer.Option("--scope", help="global or layerwise \\[default: the model's paper].")] = None,
    keep_dense: Annotated[Optional[str], typer.Option("--keep-dense", help="Comma-separated tensors never pruned, e.g. 'conv1.weight'.")] = None,
    rewind: Annotated[Optional[str], typer.Option("--rewind", help="Rewind point: 0 (init), '1ep', '500it'.")] = None,
    optimizer: Optimizer = None, lr: Lr = None, momentum: Momentum = None, nesterov: Nesterov = None,
    weight_decay: WeightDecay = None, batch_size: BatchSize = None, epochs: Epochs = None, length: Length = None,
    milestones: Milestones = None, gamma: Gamma = None, warmup: Warmup = None, precision: Precision = None,
    eval_every: EvalEvery = None, val_split: ValSplit = None,
    seed: Seed = 0, init_seed: InitSeed = None, data_seed: DataSeed = None, device: Device = "auto",
    deterministic: Deterministic = False, image_size: ImageSize = None, data_dir: DataDir = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing ticket made with other settings.")] = False,
) -> None:
    """Find a ticket by iterative magnitude pruning with rewinding; rerun the same command to resume."""
    from ticketx.data import parse_data
    from ticketx.find import find as run_find
    from ticketx.models import model_info
    from ticketx.spec import FindSpec, resolve_prune, resolve_train
    from ticketx.ui import RichReporter, console

    parse_data(data)
    model_info(model)
    over = train_overrides(
        optimizer=optimizer, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
        batch_size=batch_size, epochs=epochs, length=length, milestones=milestones, gamma=gamma, warmup=warmup,
        precision=precision, eval_every=eval_every, val_split=val_split,
    )
    tspec = _spec(lambda: resolve_train(model, over), "training")
    pspec = _spec(lambda: resolve_prune(model, {"rounds": rounds, "rate": prune_rate, "head_rate": head_rate,
                                                "scope": scope, "keep_dense": keep_dense, "rewind": rewind}), "pruning")
    spec = _spec(lambda: FindSpec(data=data, model=model, image_size=image_size, train=tspec, prune=pspec, seed=seed,
                                  init_seed=init_seed, data_seed=data_seed, deterministic=deterministic), "find")
    with RichReporter() as rep:
        ticket = run_find(spec, out, data_dir=data_dir, device=device, reporter=rep, force=force)
    last = ticket.rounds[-1]
    console.print(f"[green]ticket written:[/] {out}  ({len(ticket.rounds) - 1} rounds, final density "
                  f"{100 * last['density']:.2f}%, test acc {100 * last['test_acc']:.2f}%)")
    typer.echo(str(out))


@app.command()
def transfer(
    ticket: Annotated[Path, typer.Argument(help="Ticket file written by `ticketx find`.")],
    to: Annotated[str, typer.Option("--to", help="Target data set, e.g. svhn, 'cifar10[5-9]', imagefolder:PATH.")],
    round_: Annotated[Optional[str], typer.Option("--round", help="Round(s) to transfer, e.g. '3' or '1,3,5' \\[default: the last].")] = None,
    density: Annotated[Optional[float], typer.Option("--density", help="Transfer the round whose density is closest to this (0-1].")] = None,
    rounds: Annotated[Optional[str], typer.Option("--rounds", help="'all' to transfer every round (or a list like --round).")] = None,
    baselines: Annotated[str, typer.Option("--baselines", help="Comma-separated: random-mask,random-reinit,dense (or 'none').")] = "random-mask,random-reinit,dense",
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds; each trains every network once.")] = "0",
    against: Annotated[Optional[Path], typer.Option("--against", help="A ticket found on the target itself, retrained at the same round.")] = None,
    reset_head: Annotated[bool, typer.Option("--reset-head", help="Replace the output layer even when the number of classes matches.")] = False,
    head_dense: Annotated[bool, typer.Option("--head-dense", help="Leave a new output layer dense instead of pruning it to the ticket's head density.")] = False,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Check that the ticket is this model.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder \\[default: runs/transfer/<ticket>-to-<target>].")] = None,
    optimizer: Optimizer = None, lr: Lr = None, momentum: Momentum = None, nesterov: Nesterov = None,
    weight_decay: WeightDecay = None, batch_size: BatchSize = None, epochs: Epochs = None, length: Length = None,
    milestones: Milestones = None, gamma: Gamma = None, warmup: Warmup = None, precision: Precision = None,
    eval_every: EvalEvery = None, val_split: ValSplit = None,
    device: Device = "auto", deterministic: Deterministic = False, image_size: ImageSize = None, data_dir: DataDir = None,
) -> None:
    """Retrain a ticket on a target data set against random-mask, random-reinit and dense baselines."""
    import re

    from ticketx import ticket as T
    from ticketx.data import parse_data
    from ticketx.report import transfer_table
    from ticketx.spec import TransferSpec
    from ticketx.transfer import check_compatible, target_train_spec
    from ticketx.transfer import transfer as run_transfer
    from ticketx.ui import RichReporter, console

    target = parse_data(to)
    chosen = [x for x in (round_, density, rounds) if x is not None]
    if len(chosen) > 1:
        raise UsageError("give only one of --round, --density and --rounds")
    all_rounds = rounds is not None and rounds.strip().lower() == "all"
    listed = round_ if round_ is not None else (rounds if rounds is not None and not all_rounds else None)
    round_list = None
    if listed is not None:
        if not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", listed):
            raise UsageError(f"--round expects round numbers like '3' or '1,3,5', got {listed!r}")
        round_list = [int(x) for x in listed.split(",")]
    if not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", seeds):
        raise UsageError(f"--seeds expects integers like '0,1,2', got {seeds!r}")
    if not ticket.exists():
        raise UsageError(f"ticket not found: {ticket}")
    if against is not None and not against.exists():
        raise UsageError(f"--against ticket not found: {against}")
    t = T.load(ticket)
    T.check_meta(t, ticket)
    check_compatible(t, model, image_size)
    over = train_overrides(
        optimizer=optimizer, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
        batch_size=batch_size, epochs=epochs, length=length, milestones=milestones, gamma=gamma, warmup=warmup,
        precision=precision, eval_every=eval_every, val_split=val_split,
    )
    tspec = _spec(lambda: target_train_spec(t, over), "training")
    spec = _spec(lambda: TransferSpec(
        target=target.name, rounds=round_list, density=density, all_rounds=all_rounds, train=tspec,
        baselines=baselines, seeds=[int(x) for x in seeds.split(",")], head="reset" if reset_head else "auto",
        head_dense=head_dense, against=str(against) if against else None, deterministic=deterministic,
    ), "transfer")
    if out is None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", target.name).strip("_")
        out = Path("runs") / "transfer" / f"{ticket.stem}-to-{safe}"
    # Everything checkable without the target data, before loading it (no work, no files).
    from ticketx import store
    from ticketx.train import resolve_device
    from ticketx.transfer import choose_rounds

    choose_rounds(t, spec)
    resolve_device(device)
    T.check_architecture(t)
    if against is not None:
        own = T.load(against)
        T.check_meta(own, against)
        T.check_architecture(own)
    store.check_writable(out / "result.json")
    with RichReporter() as rep:
        result = run_transfer(ticket, spec, out, data_dir=data_dir, device=device, reporter=rep)
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

    from rich.table import Table

    from ticketx import masks as M
    from ticketx import ticket as T
    from ticketx.report import layer_table, round_table
    from ticketx.ui import console

    t = T.load(path)
    T.check_meta(t, path)
    if as_json:
        meta = {k: v for k, v in t.meta.items() if k != "rounds"}
        meta["rounds"] = [{k: v for k, v in r.items() if k != "history"} for r in t.rounds]
        typer.echo(json.dumps(meta, indent=2, default=str))
        return
    m = t.meta
    info = Table.grid(padding=(0, 2))
    for label, value in [
        ("model", m["model"]), ("data", f"{m['data']}  ({m['num_classes']} classes, {m['channels']}x{m['image_size']}x{m['image_size']})"),
        ("optimizer", _train_line(m["train"])), ("pruning", _prune_line(m["prune"])),
        ("rewind point", f"step {m['rewind_step']} ({m['prune']['rewind']}) of {m['total_steps']}"),
        ("seeds", f"init {m['init_seed']}, data {m['data_seed']}" + ("  (deterministic)" if m.get("deterministic") else "")),
        ("versions", ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())),
        ("format", f"ticketx-ticket v{path and t.meta.get('format_version', 1)}"), ("created", m.get("created", "?")),
    ]:
        info.add_row(f"[bold]{label}", str(value))
    console.print(info)
    console.print(round_table(t.rounds, title="rounds"))
    per_round = [M.layer_densities(t.mask(r)) for r in range(t.num_rounds + 1)]
    console.print(layer_table(t.names, t.shapes, per_round))


def _train_line(tr: dict[str, Any]) -> str:
    s = f"{tr['optimizer']} lr {tr['lr']:g}"
    if tr["optimizer"] == "sgd":
        s += f" momentum {tr['momentum']:g}" + (" nesterov" if tr.get("nesterov") else "")
    s += f", wd {tr['weight_decay']:g}, batch {tr['batch_size']}, {tr['length']}"
    if tr.get("milestones"):
        s += f", lr x{tr['gamma']:g} at {','.join(tr['milestones'])}"
    if tr.get("warmup", "0") != "0":
        s += f", warmup {tr['warmup']}"
    return s + f", {tr.get('precision', 'fp32')}"


def _prune_line(p: dict[str, Any]) -> str:
    s = f"{p['scope']} magnitude, {100 * p['rate']:g}% of remaining per round"
    if p.get("head_rate") is not None:
        s += f", output layer {100 * p['head_rate']:g}%"
    if p.get("keep_dense"):
        s += f", dense: {','.join(p['keep_dense'])}"
    return s


@app.command()
def datasets(data_dir: DataDir = None) -> None:
    """List the data sets ticketx knows, and whether each is present locally."""
    from rich.table import Table

    from ticketx.data import dataset_rows
    from ticketx.ui import console

    table = Table(title="data sets (subsets: NAME[0-4] or NAME[0,5,7]; your images: imagefolder:PATH)", title_justify="left")
    for col in ("name", "classes", "image size", "channels", "present", "description"):
        table.add_column(col)
    dash = lambda v: "-" if v is None else str(v)  # noqa: E731
    for row in dataset_rows(data_dir):
        present = "-" if row["present"] is None else ("[green]yes[/]" if row["present"] else "no")
        table.add_row(row["name"], dash(row["classes"]), dash(row["image_size"]), dash(row["channels"]),
                      present, row.get("description", ""))
    console.print(table)


@app.command()
def models() -> None:
    """List the models ticketx knows (plus any timm model as timm:NAME)."""
    from rich.table import Table

    from ticketx.models import model_rows
    from ticketx.ui import console

    rows = model_rows()
    table = Table(title="models (any timm model: timm:NAME)", title_justify="left")
    for col in rows[0]:
        table.add_column(col.replace("_", " "))
    for row in rows:
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()])
    console.print(table)


# Exit codes: 1 runtime, 2 usage, 128 + signal number when interrupted (130 Ctrl-C, 143 SIGTERM).
# SIGINT and SIGTERM are handled by ticketx.interrupt: a flag checked at every training step and
# atomic write, plus a KeyboardInterrupt that unwinds through every atomic write (their temporary
# files are deleted), so only whole files remain and rerunning the command resumes.


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
StudyOut = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder \\[default: runs/<study name>].")]
HeatDensity = Annotated[Optional[float], typer.Option("--density", help="Heatmap at the round closest to this density (0-1] \\[default: the lowest].")]


@study_app.command("run")
def study_run(
    study: StudyFile,
    out: StudyOut = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N \\[default: the study's, else auto].")] = None,
    data_dir: DataDir = None,
    density: HeatDensity = None,
) -> None:
    """Run every cell of a study not done yet (rerun the same command to resume), then report."""
    from ticketx.study import count, load_study, report, run_study
    from ticketx.ui import RichReporter, console

    s = load_study(study)
    out = out or Path("runs") / s.name
    c = count(s.cells)
    console.print(f"study [bold]{s.name}[/]: {c['search']} search cells, {c['transfer']} transfer cells -> {out}")
    with RichReporter() as rep:
        run_study(s, out, device=device, data_dir=data_dir, reporter=rep)
    report(out, density=density)
    typer.echo(str(out))


@study_app.command("validate")
def study_validate(study: StudyFile) -> None:
    """Check a study file without training: schema, names, ranges; print its cells by kind."""
    import json

    from ticketx.study import count, load_study
    from ticketx.ui import console

    s = load_study(study)
    c = count(s.cells)
    console.print(f"[green]{study}: valid.[/] study [bold]{s.name}[/]: {c['search']} search cells, "
                  f"{c['transfer']} transfer cells, {c['networks']} networks to train")
    typer.echo(json.dumps(c))


@study_app.command("report")
def study_report(
    study: Annotated[Path, typer.Argument(help="Study file (YAML) or a study's output folder.")],
    out: StudyOut = None,
    density: HeatDensity = None,
) -> None:
    """Tables, results.csv and plots from a study's finished cells (also while it is running)."""
    from ticketx.study import load_study, provenance, report

    if study.is_dir():
        report(study, density=density)
        typer.echo(str(study / "results.csv"))
        return
    s = load_study(study)
    folder = out or Path("runs") / s.name
    report(folder, density=density, prov=provenance(s))
    typer.echo(str(folder / "results.csv"))


# ---- bench: ticketx's training path vs plain PyTorch, side by side (ticketx.bench) ----
@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes: under a minute on 2 CPU cores.")] = False,
    device: Device = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print every figure as JSON on stdout.")] = False,
    only: Annotated[Optional[str], typer.Option("--only", help="Comma-separated rows: data,mask,prune,ticket,speed,mfu,threads,parallel.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader worker processes for the baseline (an extra row when > 0) \\[default: 0 quick, min(4, CPUs) full].", min=0)] = None,
    e2e: Annotated[bool, typer.Option("--e2e", help="Instead: a resnet20 `ticketx find` vs the same search as a plain PyTorch loop + DataLoader (minutes).")] = False,
    e2e_images: Annotated[int, typer.Option("--e2e-images", help="--e2e: training images per class (CIFAR-10 subset).", min=10)] = 200,
    e2e_epochs: Annotated[int, typer.Option("--e2e-epochs", help="--e2e: epochs per training.", min=2)] = 4,
    e2e_rounds: Annotated[int, typer.Option("--e2e-rounds", help="--e2e: pruning rounds after the dense one.", min=1)] = 2,
    e2e_seeds: Annotated[str, typer.Option("--e2e-seeds", help="--e2e: comma-separated seeds; each runs both searches (2+ estimate seed noise).")] = "0,1,2",
) -> None:
    """Measure ticketx's training path against plain PyTorch in one process and print the ratios."""
    import json

    from ticketx import bench as B
    from ticketx.ui import console

    if e2e:
        import re

        if not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", e2e_seeds):
            raise UsageError(f"--e2e-seeds expects integers like '0,1', got {e2e_seeds!r}")
        seeds = tuple(int(x) for x in e2e_seeds.split(","))
        cfg = B.E2EConfig(train_per_class=e2e_images, epochs=e2e_epochs, rounds=e2e_rounds, workers=workers or 0, seeds=seeds)
        res = B.e2e(cfg, device=device, log=console.print)
        console.print(B.render_e2e(res))
    else:
        rows = [r.strip() for r in only.split(",") if r.strip()] if only else None
        res = B.run(quick=quick, device=device, only=rows, workers=workers, log=console.print)
        console.print(B.render(res))
    if as_json:
        typer.echo(json.dumps(res, indent=2, default=str))


def main() -> None:
    """Entry point: run the app, turning known errors into one line and an exit code."""
    import signal

    from rich.markup import escape

    from ticketx import interrupt
    from ticketx.ui import console

    def fail(message: str, hint: str | None, code: int) -> None:
        interrupt.closing()
        # Messages quote user input ('digits[a]', paths): escape it so Rich prints it verbatim.
        console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
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
    with interrupt.handled():
        try:
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
            console.print(f"[bold red]internal error:[/] {escape(type(err).__name__)}: {escape(str(err))}", soft_wrap=True)
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
