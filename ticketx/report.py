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
    labels = [k for k in ("ticket", "against", "random-mask", "random-reinit", "dense") if any(k in r for r in rows)]
    names = {"ticket": "ticket", "against": "target's own ticket", "random-mask": "random mask",
             "random-reinit": "random reinit", "dense": "dense"}
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
