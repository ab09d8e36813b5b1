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
    if p.get("weights"):  # a supermask: a mask learned over frozen weights (ticketx.supermask)
        return (f"{p['scope']} {p['method']} supermask over {p['weights']} weights (no weight trained), densities "
                + ", ".join(f"{100 * d:g}%" for d in p.get("densities", [])))
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
    if p.get("retrain", "rewind") != "rewind":
        s += f", retrained by {p['retrain']} (Renda et al. 2020)"
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


def pct_interval(d: Mapping[str, Any] | None, sign: bool = False) -> str:
    """An Interval dict as '+1.23 [0.40, 2.06]' points (no brackets for n < 2)."""
    if not d:
        return "-"
    from ticketx.stats import Interval

    return Interval(**d).text(sign=sign)


def coloured(verdict: str) -> str:
    v = verdict.removeprefix("this ticket ")
    colour = "green" if v.startswith(("beats", "matches", "above")) else ("red" if v.startswith("below") else "yellow")
    return f"[{colour}]{verdict}[/]"


def family_caption(fam: Mapping[str, Any] | None) -> str:
    """What the intervals beside the verdicts are: the family they were adjusted in."""
    if not fam:
        return "margins: mean [95% t interval]"
    return (f"margins: mean [{100 * fam['level']:.2f}% interval, adjusted for the {fam['tests']} tests of this table "
            f"(Benjamini-Hochberg q = {fam['q']:g}, {fam['discoveries']} shown)]")


def transfer_table(result: Mapping[str, Any]) -> Table:
    """Per round: the ticket's accuracy and its paired margin over each arm, with adjusted intervals and verdicts."""
    from rich.markup import escape

    src = result["source"]
    rows = result["summary"]
    from ticketx.baselines import arm_order

    arms = arm_order([a for r in rows for a in r["arms"]])
    dense = " (dense)" if result.get("config", {}).get("transfer", {}).get("head_dense") else ""
    words = {"keep": "kept", "new": "new"}
    heads = [f"{'the ticket and its controls' if who == 'ticket' else 'own ticket'} {words.get(h, h)}{dense}"
             for who, h in (result.get("heads") or {}).items()]
    title = (f"{src['model']} ticket from {src['data']} ({src['optimizer']}) -> {result['target']} "
             f"({result['config']['train']['optimizer']})")
    n = max((r["ticket"]["n"] for r in rows), default=0)
    caption = (f"one ticket, {n} retrain(s) (transfer seeds): verdicts are about this ticket; claims about tickets from "
               f"{src['data']} need several search seeds (a study). Test accuracy %, mean [95% t interval]; margin = "
               f"ticket - arm, paired by seed; {family_caption(result.get('family'))}"
               f"; 1 test image = {result.get('resolution', float('nan')):.2f} points")
    if heads:
        caption += "; output layer: " + ", ".join(heads)
    start = result.get("ticket_start", "")
    if start and not start.startswith("the rewind weights"):  # a ticket that is not an IMP ticket with rewinding
        caption += f"; the ticket starts from {start}"
    if result.get("mask0", "zero") != "zero":
        caption += f"; pruned weights: {result['mask0']} (Zhou et al. 2019)"
    title += f", {'kept' if (result.get('heads') or {}).get('ticket') == 'keep' else 'new'} output layer"
    table = Table(title=escape(title), title_justify="left", caption=escape(caption), caption_justify="left")
    for col in ("round", "% weights remaining", "ticket"):
        table.add_column(col, justify="right")
    for a in arms:
        table.add_column(f"vs {rows[0]['arms'].get(a, {}).get('label', a) if rows else a}", justify="right")
    table.add_column("verdict")
    for r in rows:
        cells = [str(r["round"]), f"{100 * r['density']:.2f}", pct_interval(r["ticket"])]
        cells += [pct_interval(r["arms"][a]["margin"], sign=True) if a in r["arms"] else "-" for a in arms]
        cells.append("; ".join(coloured(v) for v in dict.fromkeys(r["arms"][a]["verdict"] for a in arms if a in r["arms"])))
        table.add_row(*cells)
    return table


# --------------------------------------------------------------------------------------------
# Files: CSV and PNG (a study's tables and plots are ticketx.study.tables / plots).

def csv_text(rows: list[Mapping[str, Any]], columns: list[str]) -> str:
    """CSV with a header; floats at full precision."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9.-]+", "-", text.replace("[", "").replace("]", "")).strip("-") or "x"


def save_png(fig: Any, path: Any) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ticketx import store

    FigureCanvasAgg(fig)
    with store.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
