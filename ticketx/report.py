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
    s = f"{p['scope']} {p.get('criterion', 'magnitude')}, {100 * p['rate']:g}% of remaining per round"
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


def mean_std(s: Mapping[str, Any] | None) -> str:
    """'93.41 ± 0.52' (in %) for a summary with mean/std/n; the ± part only with several seeds."""
    if not s:
        return "-"
    text = f"{100 * s['mean']:.2f}"
    if s.get("n", 1) > 1:
        text += f" ± {100 * s['std']:.2f}"
    return text


def transfer_table(result: Mapping[str, Any]) -> Table:
    """Target, round, density, ticket accuracy, each baseline, and the ticket's margin over random-mask."""
    src = result["source"]
    title = f"{src['model']} ticket from {src['data']} ({src['optimizer']}) -> {result['target']} ({result['config']['train']['optimizer']})"
    rows = result["summary"]
    from ticketx.baselines import label as arm_label

    labels = list(dict.fromkeys(k for r in rows for k in r if isinstance(r[k], dict) and "mean" in r[k] and k != "margin_over_random_mask"))
    names = {k: arm_label(k) for k in labels}
    table = Table(title=title, title_justify="left", caption="test accuracy %, mean ± std over seeds", caption_justify="left")
    for col in ("target", "round", "% weights remaining"):
        table.add_column(col, justify="right" if col != "target" else "left")
    for k in labels:
        table.add_column(names[k], justify="right")
    has_margin = any("margin_over_random_mask" in r for r in rows)
    if has_margin:
        table.add_column("margin vs random mask", justify="right")
    for r in rows:
        cells = [result["target"], str(r["round"]), f"{100 * r['density']:.2f}"]
        cells += [mean_std(r.get(k)) for k in labels]
        if has_margin:
            m = r.get("margin_over_random_mask")
            if m:
                sign = "+" if m["mean"] >= 0 else ""
                colour = "green" if m["mean"] > 0 else "red"
                cells.append(f"[{colour}]{sign}{mean_std(m)}[/]")
            else:
                cells.append("-")
        table.add_row(*cells)
    return table


# --------------------------------------------------------------------------------------------
# Studies: tidy rows (one per trained network, see ticketx.study.COLUMNS) -> CSV, matrices, plots.

# Column labels of the transfer matrix for the baselines and the own ticket.
_BASELINE_NAMES = {"random-mask": "random mask", "random-reinit": "random reinit", "dense": "dense"}
_TICKETS = ("ticket", "own-ticket")


def csv_text(rows: list[Mapping[str, Any]], columns: list[str]) -> str:
    """CSV with a header; floats at full precision."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _stats(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample std, n); std 0 for one value."""
    import statistics

    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std, n = _stats(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def _study_groups(rows: list[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """Transfer rows by (model, optimizer they were retrained with)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        if r["kind"] == "transfer":
            groups.setdefault((r["model"], r["transfer_optimizer"]), []).append(r)
    return groups


def _columns(group: list[Mapping[str, Any]], order: Mapping[str, list[str]]) -> list[tuple[str, str, Any]]:
    """Matrix columns as (header, kind, selector): each source ticket, the own ticket, each baseline."""
    srcs = {(r["source"], r["search_optimizer"]) for r in group if r["label"] in _TICKETS}
    several = len({s[1] for s in srcs}) > 1
    rank = {s: i for i, s in enumerate(order.get("sources", []))}
    # Listed sources first (study order); a target's own ticket is a column of its own below.
    listed = sorted((s for s in srcs if s[0] in rank), key=lambda s: (rank[s[0]], s[1]))
    cols: list[tuple[str, str, Any]] = [(f"{s} ({o})" if several else s, "source", (s, o)) for s, o in listed]
    if any(r["label"] == "own-ticket" for r in group):
        cols.append(("own ticket", "own", None))
    for b, name in _BASELINE_NAMES.items():
        if any(r["label"] == b for r in group):
            cols.append((name, "baseline", b))
    return cols


def _values(group: list[Mapping[str, Any]], target: str, round_: int, col: tuple[str, str, Any]) -> list[float]:
    _, kind, sel = col
    at = [r for r in group if r["target"] == target]
    if kind == "source":
        return [r["test_acc"] for r in at if r["round"] == round_ and r["label"] in _TICKETS
                and (r["source"], r["search_optimizer"]) == sel]
    if kind == "own":
        return [r["test_acc"] for r in at if r["round"] == round_ and r["label"] == "own-ticket"]
    if sel == "dense":  # unpruned: the same network whatever the round
        return [r["test_acc"] for r in at if r["label"] == "dense"]
    return [r["test_acc"] for r in at if r["round"] == round_ and r["label"] == sel]


def _rounds(group: list[Mapping[str, Any]]) -> dict[int, float]:
    """Round -> mean density of the tickets retrained at that round."""
    by: dict[int, list[float]] = {}
    for r in group:
        if r["label"] in _TICKETS:
            by.setdefault(r["round"], []).append(r["density"])
    return {k: sum(v) / len(v) for k, v in sorted(by.items())}


def _targets(group: list[Mapping[str, Any]], order: Mapping[str, list[str]]) -> list[str]:
    present = {r["target"] for r in group}
    return [t for t in order.get("targets", []) if t in present] + sorted(present - set(order.get("targets", [])))


def study_matrices(rows: list[Mapping[str, Any]], order: Mapping[str, list[str]], title: str = "") -> list[Table]:
    """One transfer matrix per density: rows are targets, columns sources, own ticket, baselines."""
    from rich.markup import escape

    tables = []
    for (model, opt), group in _study_groups(rows).items():
        cols = _columns(group, order)
        targets = _targets(group, order)
        for round_, density in _rounds(group).items():
            t = Table(title=f"{escape(title) + ': ' if title else ''}{escape(model)}, retrained with {opt}: round {round_}, "
                            f"{100 * density:.2f}% weights remaining",
                      title_justify="left", caption_justify="left",
                      caption="test accuracy %, mean ± std over seeds (search x transfer); baselines pooled over "
                              "sources; dense = unpruned from the same rewind weights")
            t.add_column("target \\ ticket from", style="bold")
            for header, kind, _ in cols:
                t.add_column(escape(header), justify="right", style="dim" if kind == "baseline" else None)
            for target in targets:
                t.add_row(escape(target), *[_fmt(_values(group, target, round_, c)) for c in cols])
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


def study_plots(rows: list[Mapping[str, Any]], order: Mapping[str, list[str]], folder: Any,
                density: float | None = None) -> list[Any]:
    """PNG plots: accuracy vs % weights remaining per target, and a heatmap of each transfer matrix.

    The heatmap is at the round whose density is closest to `density` (default: the lowest present).
    matplotlib is imported here only, with the Agg canvas (no display, no global pyplot state).
    """
    from pathlib import Path

    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    folder = Path(folder)
    written: list[Path] = []
    for (model, opt), group in _study_groups(rows).items():
        cols = _columns(group, order)
        rounds = _rounds(group)
        if not rounds:
            continue
        targets = _targets(group, order)
        for target in targets:
            fig = Figure(figsize=(7, 4.5))
            ax = fig.add_subplot()
            xs_all = [100 * d for d in rounds.values()]
            for i, col in enumerate(cols):
                header, kind, sel = col
                if sel == "dense":
                    vals = _values(group, target, 0, col)
                    if vals:
                        m, s, _ = _stats(vals)
                        ax.axhline(100 * m, color="black", linestyle=":", label=f"{header} (100%)")
                        ax.axhspan(100 * (m - s), 100 * (m + s), color="black", alpha=0.08)
                    continue
                pts = [(100 * d, _stats(v)) for r, d in rounds.items() if (v := _values(group, target, r, col))]
                if not pts:
                    continue
                x = np.array([p[0] for p in pts])
                mean = np.array([100 * p[1][0] for p in pts])
                std = np.array([100 * p[1][1] for p in pts])
                style = "--" if kind == "baseline" else "-"
                label = header if kind != "source" else f"ticket from {header}"
                line, = ax.plot(x, mean, style, marker="o", markersize=3, label=label)
                ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
            ax.set_xscale("log")
            lo, hi = min(xs_all), 100.0
            ax.set_xlim(hi * 1.05, lo / 1.15)  # decreasing to the right, as in the papers
            # Ticks at the densities actually trained (at most ~10 of them), not at powers of ten.
            ticks = sorted({100.0, *xs_all}, reverse=True)
            ticks = ticks[:: max(1, -(-len(ticks) // 10))]
            ax.set_xticks(ticks)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("% weights remaining")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"{model}: tickets transferred to {target} (retrained with {opt})", fontsize=10)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8, loc="lower left")
            path = folder / f"accuracy-{_slug(model)}-{opt}-{_slug(target)}.png"
            _save(fig, path)
            written.append(path)

        if density is None:
            round_ = max(rounds, key=lambda r: (-rounds[r], r))
        else:
            round_ = min(rounds, key=lambda r: (abs(rounds[r] - density), r))
        grid = np.full((len(targets), len(cols)), np.nan)
        spread = np.zeros_like(grid)
        for i, target in enumerate(targets):
            for j, col in enumerate(cols):
                vals = _values(group, target, round_, col)
                if vals:
                    m, s, _ = _stats(vals)
                    grid[i, j], spread[i, j] = 100 * m, 100 * s
        fig = Figure(figsize=(1.6 + 1.3 * len(cols), 1.4 + 0.6 * len(targets)))
        ax = fig.add_subplot()
        im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(cols)), [c[0] for c in cols], rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(targets)), targets, fontsize=8)
        finite = grid[np.isfinite(grid)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0
        for i in range(len(targets)):
            for j in range(len(cols)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.1f}\n±{spread[i, j]:.1f}", ha="center", va="center", fontsize=7,
                            color="white" if grid[i, j] < mid else "black")
        ax.set_xlabel("ticket from / baseline")
        ax.set_ylabel("target")
        ax.set_title(f"{model} ({opt}): test accuracy %, {100 * rounds[round_]:.2f}% weights remaining (round {round_})",
                     fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05)
        path = folder / f"matrix-{_slug(model)}-{opt}-r{round_:02d}.png"
        _save(fig, path)
        written.append(path)
    return written
