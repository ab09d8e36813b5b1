"""Tables (Rich), CSV and plots. matplotlib is imported only inside plotting functions."""

from __future__ import annotations

from typing import Any, Mapping

from rich.table import Table


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def round_table(records: list[Mapping[str, Any]], title: str = "") -> Table:
    """Round, density, accuracy and time: one row per finished round of a ticket search."""
    table = Table(title=title or None, title_justify="left")
    table.add_column("round", justify="right")
    table.add_column("% weights remaining", justify="right")
    table.add_column("test acc %", justify="right")
    has_val = any(r.get("val_acc") is not None for r in records)
    if has_val:
        table.add_column("val acc %", justify="right")
    table.add_column("time", justify="right")
    for r in records:
        row = [str(r["round"]), f"{100 * r['density']:.2f}", pct(r.get("test_acc"))]
        if has_val:
            row.append(pct(r.get("val_acc")))
        row.append(f"{r.get('seconds', 0):.1f}s")
        table.add_row(*row)
    return table


def layer_table(names: list[str], shapes: Mapping[str, tuple[int, ...]], per_round: list[Mapping[str, float]]) -> Table:
    """Per-layer density for every round (columns are rounds)."""
    table = Table(title="density per layer (fraction of weights kept)", title_justify="left")
    table.add_column("tensor")
    table.add_column("shape")
    table.add_column("weights", justify="right")
    for r in range(len(per_round)):
        table.add_column(f"r{r}", justify="right")
    for n in names:
        size = 1
        for d in shapes[n]:
            size *= d
        table.add_row(n, "x".join(map(str, shapes[n])), f"{size:,}", *[f"{d[n]:.4f}" for d in per_round])
    return table


def _train_line(tr: Mapping[str, Any]) -> str:
    s = f"{tr['optimizer']} lr {tr['lr']:g}"
    if tr["optimizer"] == "sgd":
        s += f" momentum {tr['momentum']:g}" + (" nesterov" if tr.get("nesterov") else "")
    s += f", wd {tr['weight_decay']:g}, batch {tr['batch_size']}, {tr['length']}"
    if tr.get("milestones"):
        s += f", lr x{tr['gamma']:g} at {','.join(tr['milestones'])}"
    if tr.get("warmup", "0") != "0":
        s += f", warmup {tr['warmup']}"
    return s + f", {tr.get('precision', 'fp32')}"


def _prune_line(p: Mapping[str, Any]) -> str:
    crit = p.get("criterion", "magnitude")
    if p.get("rate") is None:  # pruning at initialisation: one round per target density
        s = f"{p['scope']} {crit} at initialisation, densities " + ", ".join(f"{100 * d:g}%" for d in p.get("densities", []))
        if p.get("iterations"):
            s += f", {p['iterations']} iterations"
        return s
    s = f"{p['scope']} {crit}, {100 * p['rate']:g}% of remaining per round"
    if p.get("head_rate") is not None:
        s += f", output layer {100 * p['head_rate']:g}%"
    if p.get("keep_dense"):
        s += f", dense: {','.join(p['keep_dense'])}"
    return s


def ticket_summary(t: Any) -> list[Any]:
    """`ticketx inspect`: the metadata grid, the rounds table and the per-layer density table."""
    from ticketx import masks as M

    m = t.meta
    info = Table.grid(padding=(0, 2))
    for label, value in [
        ("model", m["model"]), ("data", f"{m['data']}  ({m['num_classes']} classes, {m['channels']}x{m['image_size']}x{m['image_size']})"),
        ("optimizer", _train_line(m["train"])), ("pruning", _prune_line(m["prune"])),
        ("rewind point", f"step {m['rewind_step']} ({m['prune']['rewind']}) of {m['total_steps']}"),
        ("seeds", f"init {m['init_seed']}, data {m['data_seed']}" + ("  (deterministic)" if m.get("deterministic") else "")),
        ("versions", ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())),
        ("format", f"ticketx-ticket v{t.format_version}"), ("created", m.get("created", "?")),
    ]:
        info.add_row(f"[bold]{label}", str(value))
    per_round = [M.layer_densities(t.mask(r)) for r in range(t.num_rounds + 1)]
    return [info, round_table(t.rounds, title="rounds"), layer_table(t.names, t.shapes, per_round)]


def dataset_table(data_dir: Any = None) -> Table:
    """`ticketx datasets`: every registered data set and whether it is present locally."""
    from ticketx.data import dataset_rows

    table = Table(title="data sets (subsets: NAME[0-4] or NAME[0,5,7]; your images: imagefolder:PATH)", title_justify="left")
    for col in ("name", "classes", "image size", "channels", "present", "description"):
        table.add_column(col)
    dash = lambda v: "-" if v is None else str(v)  # noqa: E731
    for row in dataset_rows(data_dir):
        present = "-" if row["present"] is None else ("[green]yes[/]" if row["present"] else "no")
        table.add_row(row["name"], dash(row["classes"]), dash(row["image_size"]), dash(row["channels"]),
                      present, row.get("description", ""))
    return table


def model_table() -> Table:
    """`ticketx models`: every registered model with its paper and defaults."""
    from ticketx.models import model_rows

    rows = model_rows()
    table = Table(title="models (any timm model: timm:NAME)", title_justify="left")
    for col in rows[0]:
        table.add_column(col.replace("_", " "))
    for row in rows:
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()])
    return table


def overlap_table(rows: list[Mapping[str, Any]]) -> Table:
    """A study's tickets, pair by pair at matched density: the weights they share vs chance."""
    from rich.markup import escape

    t = Table(title="ticket overlap (kept weights shared, at matched density, output layers of other sizes left out)",
              title_justify="left", caption="chance: independent random masks with the same per-layer counts; "
              "z: standard deviations above chance", caption_justify="left")
    for col in ("A", "B", "% weights remaining", "A kept by B", "chance", "Jaccard", "chance", "z"):
        t.add_column(col, justify="left" if col in ("A", "B") else "right")
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in rows:
        t.add_row(escape(r["a"]), escape(r["b"]), f"{100 * r['density']:.2f}", f(r["a_kept_by_b"]),
                  f(r["chance_a_kept_by_b"]), f(r["jaccard"]), f(r["chance_jaccard"]), "-" if r["z"] is None else f"{r['z']:.1f}")
    return t


def stability_table(rows: list[Mapping[str, Any]]) -> Table:
    """A study's error barriers (`stability:`): per source ticket, barrier vs density (one row per round)."""
    from rich.markup import escape

    from ticketx.stability import STABLE_BARRIER

    models = len({r["model"] for r in rows}) > 1
    t = Table(title="stability: error barrier between two copies trained from the rewind point (linear interpolation)",
              title_justify="left", caption=f"barrier: highest error on the path minus the endpoints' mean, in points; "
              f"stable: test barrier <= {100 * STABLE_BARRIER:g} points (Frankle et al. 2020)", caption_justify="left")
    cols = [*(["model"] if models else []), "source ticket", "rewind", "round", "% weights remaining", "train barrier",
            "test barrier", "stable", "copies' test acc %"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("model", "source ticket") else "right")
    last = None
    for r in rows:
        ticket = (r["model"], r["source"], r["search_optimizer"], r["criterion"], r["rewind"], r["search_seed"])
        if last is not None and ticket != last:
            t.add_section()  # one block per source ticket: barrier vs density reads down it
        last = ticket
        name = f"{r['source']} ({r['search_optimizer']}, {r['criterion']}, seed {r['search_seed']})"
        stable = "[green]yes[/]" if r["stable"] else "[red]no[/]"
        t.add_row(*([escape(r["model"])] if models else []), escape(name), escape(str(r["rewind"])), str(r["round"]),
                  f"{100 * r['density']:.2f}", f"{100 * r['train_barrier']:.2f}", f"{100 * r['test_barrier']:.2f}",
                  stable, f"{pct(r['acc_a'])} / {pct(r['acc_b'])}")
    return t


def compare_table(res: Mapping[str, Any]) -> Table:
    """`ticketx compare`: each pair's overlap of kept weights, whole network, against chance."""
    from rich.markup import escape

    t = Table(title=f"tickets compared at {100 * res['density']:.2f}% weights remaining", title_justify="left",
              caption="A kept by B: fraction of A's kept weights B keeps; chance: independent random masks of the "
                      "same per-layer counts; z: standard deviations above chance", caption_justify="left")
    for col in ("A", "B", "A kept by B", "chance", "Jaccard", "chance", "z", "density rank corr."):
        t.add_column(col, justify="left" if col in ("A", "B") else "right")
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for p in res["pairs"]:
        n = p["network"]
        t.add_row(escape(p["a"]), escape(p["b"]), f(n["a_kept_by_b"]), f(n["chance_a_kept_by_b"]), f(n["jaccard"]),
                  f(n["chance_jaccard"]), "-" if n.get("z") is None else f"{n['z']:.1f}", f(p.get("density_spearman")))
    return t


def _pct_interval(d: Mapping[str, Any] | None, sign: bool = False) -> str:
    """An Interval dict as '+1.23 [0.40, 2.06]' points (no brackets for n < 2)."""
    if not d:
        return "-"
    from ticketx.stats import Interval

    return Interval(**d).text(sign=sign)


def _coloured(verdict: str) -> str:
    colour = "green" if verdict.startswith(("beats", "matches", "above")) else (
        "red" if verdict.startswith(("below", "no better")) else "yellow")
    return f"[{colour}]{verdict}[/]"


def transfer_table(result: Mapping[str, Any]) -> Table:
    """Per round: the ticket's accuracy and its paired margin over each arm, with 95% intervals and verdicts."""
    from rich.markup import escape

    src = result["source"]
    rows = result["summary"]
    from ticketx.baselines import arm_order

    arms = arm_order([a for r in rows for a in r["arms"]])
    title = (f"{src['model']} ticket from {src['data']} ({src['optimizer']}) -> {result['target']} "
             f"({result['config']['train']['optimizer']}), {'new' if result.get('head', 'new') == 'new' else 'kept'} output layer")
    n = max((r["ticket"]["n"] for r in rows), default=0)
    caption = (f"test accuracy %, mean [95% t interval] over {n} seed(s); margin = ticket - arm, paired by seed"
               f"; 1 test image = {result.get('resolution', float('nan')):.2f} points")
    table = Table(title=escape(title), title_justify="left", caption=caption, caption_justify="left")
    for col in ("round", "% weights remaining", "ticket"):
        table.add_column(col, justify="right")
    for a in arms:
        table.add_column(f"vs {rows[0]['arms'].get(a, {}).get('label', a) if rows else a}", justify="right")
    table.add_column("verdict")
    for r in rows:
        cells = [str(r["round"]), f"{100 * r['density']:.2f}", _pct_interval(r["ticket"])]
        cells += [_pct_interval(r["arms"][a]["margin"], sign=True) if a in r["arms"] else "-" for a in arms]
        cells.append("; ".join(_coloured(v) for v in dict.fromkeys(r["arms"][a]["verdict"] for a in arms if a in r["arms"])))
        table.add_row(*cells)
    return table


# --------------------------------------------------------------------------------------------
# Studies: tidy rows (one per trained network) -> CSV; paired summary rows -> tables and plots.

def csv_text(rows: list[Mapping[str, Any]], columns: list[str]) -> str:
    """CSV with a header; floats at full precision."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def study_tables(summary: list[Mapping[str, Any]], title: str = "", density: float | None = None) -> list[Table]:
    """One table per (model, transfer optimizer, round): a row per source -> target with the ticket's
    accuracy and its paired margin over each arm of that source (never pooled), and the verdicts."""
    from rich.markup import escape

    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in summary:
        groups.setdefault((r["model"], r["transfer_optimizer"], r["round"]), []).append(r)
    if density is not None and groups:
        rounds = {k: sum(r["density"] for r in v) / len(v) for k, v in groups.items()}
        best = min(rounds, key=lambda k: abs(rounds[k] - density))
        groups = {k: v for k, v in groups.items() if k[:2] == best[:2] and k[2] == best[2]}
    tables = []
    for (model, opt, round_), rows in groups.items():
        from ticketx.baselines import arm_order

        arms = arm_order([r["arm"] for r in rows if r["arm"]])
        pairs = list(dict.fromkeys((r["source"], r["search_optimizer"], r.get("criterion", "magnitude"), r["target"])
                                   for r in rows))
        dens = sum(r["density"] for r in rows) / len(rows)
        res = next((r.get("resolution") for r in rows if r.get("resolution")), None)
        init = next((r.get("own_ticket_init") for r in rows if r.get("own_ticket_init")), None)
        caption = ("test accuracy %, mean [95% t interval]; margin = ticket - arm, paired by (search seed, transfer seed), "
                   "each source against its own controls")
        if res:
            caption += f"; 1 test image = {res:.2f} points"
        if init:
            caption += f"; own ticket: {init} initialisation"
        t = Table(title=f"{escape(title) + ': ' if title else ''}{escape(model)}, retrained with {opt}: round {round_}, "
                        f"{100 * dens:.2f}% weights remaining", title_justify="left", caption=caption, caption_justify="left")
        for col in ("ticket from", "to", "n", "ticket"):
            t.add_column(col, justify="right" if col in ("n", "ticket") else "left")
        from ticketx.baselines import label

        for a in arms:
            t.add_column(f"vs {label(a)}", justify="right")
        t.add_column("verdict")
        for src, sopt, crit, tgt in pairs:
            at = {r["arm"]: r for r in rows
                  if (r["source"], r["search_optimizer"], r.get("criterion", "magnitude"), r["target"]) == (src, sopt, crit, tgt)}
            any_row = next(iter(at.values()))
            ticket = {"mean": any_row["ticket_acc"], "low": any_row["ticket_low"], "high": any_row["ticket_high"],
                      "n": any_row["n"], "sd": None}
            how = sopt if crit == "magnitude" else f"{sopt}, {crit}"
            cells = [escape(f"{src} ({how})"), escape(tgt), str(max(r["n"] for r in at.values())), _pct_interval(ticket)]
            for a in arms:
                r = at.get(a)
                cells.append("-" if r is None else _pct_interval(
                    {"mean": r["margin"], "low": r["margin_low"], "high": r["margin_high"], "n": r["n"], "sd": None}, sign=True))
            cells.append("; ".join(_coloured(v) for v in dict.fromkeys(at[a]["verdict"] for a in arms if a in at)))
            t.add_row(*cells)
        tables.append(t)
    return tables


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9.-]+", "-", text.replace("[", "").replace("]", "")).strip("-") or "x"


def _save(fig: Any, path: Any) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ticketx import store

    FigureCanvasAgg(fig)
    with store.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def study_plots(rows: list[Mapping[str, Any]], summary: list[Mapping[str, Any]], folder: Any) -> list[Any]:
    """PNG plots per (model, transfer optimizer, target): accuracy vs % weights remaining (each
    source's ticket and that source's own controls, 95% interval bands), and the ticket's paired
    margin over each arm vs % weights remaining (interval bands, zero line).

    matplotlib is imported here only, with the Agg canvas (no display, no global pyplot state).
    """
    from pathlib import Path

    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from ticketx.baselines import label as arm_label
    from ticketx.stats import interval

    folder = Path(folder)
    written: list[Path] = []
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for r in summary:
        groups.setdefault((r["model"], r["transfer_optimizer"], r["target"]), []).append(r)

    def axis(ax: Any, xs: list[float]) -> None:
        ax.set_xscale("log")
        ax.set_xlim(100 * 1.05, min(xs) / 1.15)  # decreasing to the right, as in the papers
        ticks = sorted({100.0, *xs}, reverse=True)
        ax.set_xticks(ticks[:: max(1, -(-len(ticks) // 10))])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("% weights remaining")
        ax.grid(True, alpha=0.3)

    for (model, opt, target), group in groups.items():
        sources = list(dict.fromkeys((r["source"], r["search_optimizer"], r.get("criterion", "magnitude")) for r in group))
        several = len({s[1:] for s in sources}) > 1
        name = {s: (f"{s[0]} ({', '.join(x for x in s[1:] if x != 'magnitude')})" if several else s[0]) for s in sources}
        src_of = lambda r: (r["source"], r["search_optimizer"], r.get("criterion", "magnitude"))  # noqa: E731
        xs = [100 * r["density"] for r in group]
        # accuracy: each source's ticket (solid) and its own controls (dashed, same colour)
        fig = Figure(figsize=(7.5, 4.8))
        ax = fig.add_subplot()
        for src in sources:
            mine = sorted((r for r in group if src_of(r) == src), key=lambda r: -r["density"])
            pts = list({r["round"]: r for r in mine}.values())
            x = [100 * r["density"] for r in pts]
            line, = ax.plot(x, [100 * r["ticket_acc"] for r in pts], "-o", markersize=3, label=f"ticket from {name[src]}")
            lo = [100 * (r["ticket_low"] if r["ticket_low"] is not None else r["ticket_acc"]) for r in pts]
            hi = [100 * (r["ticket_high"] if r["ticket_high"] is not None else r["ticket_acc"]) for r in pts]
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
            for k, arm in enumerate(dict.fromkeys(r["arm"] for r in mine if r["arm"] and r["arm"] != "own-ticket")):
                ar = [r for r in mine if r["arm"] == arm]
                ax.plot([100 * r["density"] for r in ar], [100 * r["arm_acc"] for r in ar], "--:-."[k % 3],
                        color=line.get_color(), alpha=0.7, linewidth=1, label=f"{arm_label(arm)} ({name[src]})")
        own = [r for r in rows if r["kind"] == "transfer" and r["label"] == "own-ticket" and r["target"] == target
               and r["model"] == model and r["transfer_optimizer"] == opt]
        by_round: dict[float, list[float]] = {}
        for r in own:
            by_round.setdefault(round(100 * r["density"], 4), []).append(100 * r["test_acc"])
        if by_round:
            x = sorted(by_round, reverse=True)
            iv = [interval(by_round[k]) for k in x]
            line, = ax.plot(x, [i.mean for i in iv], "-s", color="black", markersize=3, label="own ticket")
            ax.fill_between(x, [i.low if i.low is not None else i.mean for i in iv],
                            [i.high if i.high is not None else i.mean for i in iv], color="black", alpha=0.1, linewidth=0)
        axis(ax, xs)
        ax.set_ylabel("test accuracy (%), 95% interval")
        ax.set_title(f"{model}: tickets transferred to {target} (retrained with {opt})", fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
        path = folder / f"accuracy-{_slug(model)}-{opt}-{_slug(target)}.png"
        _save(fig, path)
        written.append(path)
        # margins: ticket - arm, paired, per source and arm
        fig = Figure(figsize=(7.5, 4.8))
        ax = fig.add_subplot()
        ax.axhline(0, color="black", linewidth=0.8)
        for src in sources:
            for arm in dict.fromkeys(r["arm"] for r in group if r["arm"]):
                ar = sorted((r for r in group if src_of(r) == src and r["arm"] == arm),
                            key=lambda r: -r["density"])
                if not ar:
                    continue
                x = [100 * r["density"] for r in ar]
                line, = ax.plot(x, [100 * r["margin"] for r in ar], "-o", markersize=3,
                                label=f"{name[src]} - {arm_label(arm)}")
                if all(r["margin_low"] is not None for r in ar):
                    ax.fill_between(x, [100 * r["margin_low"] for r in ar], [100 * r["margin_high"] for r in ar],
                                    color=line.get_color(), alpha=0.15, linewidth=0)
        axis(ax, xs)
        ax.set_ylabel("ticket - arm (points), paired, 95% interval")
        ax.set_title(f"{model}: paired margins on {target} (retrained with {opt})", fontsize=10)
        ax.legend(fontsize=7, loc="best")
        path = folder / f"margins-{_slug(model)}-{opt}-{_slug(target)}.png"
        _save(fig, path)
        written.append(path)
    return written
