"""A study's Rich tables: the transfer matrix (the paired summary laid out by the axes), tickets'
overlap, stability barriers. The layout comes from the axes' declarations: an axis that splits
tables (`table`) names each table; the others are row columns, shown when the study has more
than one value of them (or when the axis is always shown: where a ticket is from and goes to)."""

from __future__ import annotations

from typing import Any, Mapping

from rich.markup import escape
from rich.table import Table

from ticketx.report import coloured, family_caption, pct, pct_interval
from ticketx.stats import FDR
from ticketx.study.axes import Axis, factors, search_axes, with_role


def _shown(axes: list[Axis], rows: list[Mapping[str, Any]]) -> list[Axis]:
    """The axes worth a column: more than one value in `rows`, or always shown."""
    return [a for a in axes if a.always_shown or len({r.get(a.columns[0]) for r in rows}) > 1]


def study_tables(summary: list[Mapping[str, Any]], title: str = "", density: float | None = None) -> list[Table]:
    """One table per value of the table-splitting axes and round: a row per value of the other factors
    (a source -> target, ...) with the ticket's accuracy and its paired margin over each control of that
    ticket (never pooled), and the verdicts."""
    from ticketx.baselines import arm_order, label

    splits = [a for a in factors() if a.table]
    within = [a for a in factors() if not a.table]
    points = [c for a in with_role("x") for c in a.columns]  # a weights point: one table, each ticket at its own round
    at_point = lambda r: next((r[c] for c in points if r.get(c) not in (None, "")), None)  # noqa: E731
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in summary:
        groups.setdefault((*(r[a.columns[0]] for a in splits), r["round"] if at_point(r) is None else f"w{at_point(r)}"),
                          []).append(r)
    if density is not None and groups:
        dens = {k: sum(r["density"] for r in v) / len(v) for k, v in groups.items()}
        best = min(dens, key=lambda k: abs(dens[k] - density))
        groups = {k: v for k, v in groups.items() if k == best}
    shown = _shown(within, summary)
    tables = []
    for key, rows in groups.items():
        *values, round_ = key
        arms = arm_order([r["control"] for r in rows if r["control"]])
        dens = sum(r["density"] for r in rows) / len(rows)
        res = next((r.get("resolution") for r in rows if r.get("resolution")), None)
        init = next((r.get("own_ticket_init") for r in rows if r.get("own_ticket_init")), None)
        one = all(r.get("scope") == "ticket" for r in rows if r["control"])
        fam = next(({"level": r["level"], "tests": r["family_tests"], "discoveries": r["family_discoveries"],
                     "q": FDR} for r in rows if r.get("level") is not None), None)
        caption = ("unit: the ticket (search seed); margin = ticket - control, paired by transfer seed within a ticket, "
                   "each ticket against its own controls; mean over tickets [t interval over the tickets' mean margins, "
                   "df = tickets - 1]; σ: between-ticket sd of the margin (points). "
                   + ("One ticket per comparison here: verdicts are about that ticket ('this ticket'), not about tickets "
                      "from its source (give several search seeds). " if one else "")
                   + family_caption(fam) + "; ticket accuracy %: mean [95% interval over tickets]")
        if res:
            caption += f"; 1 test image = {res:.2f} points"
        if init:
            caption += f"; own ticket: {init} initialisation"
        head = ", ".join(a.describe(v) for a, v in zip(splits, values))
        count = at_point(rows[0])
        where = (f"round {round_}, {100 * dens:.2f}% weights remaining" if count is None else
                 f"{count} remaining weights (each ticket at its round nearest that count)")
        t = Table(title=f"{escape(title) + ': ' if title else ''}{escape(head)}: {where}", title_justify="left",
                  caption=escape(caption), caption_justify="left")
        for a in shown:
            t.add_column(a.header or a.name.replace("_", " "))
        if count is not None:
            for col in ("round", "ticket's weights", "% weights remaining"):
                t.add_column(col, justify="right")
        t.add_column("tickets × retrains", justify="right")
        t.add_column("ticket", justify="right")
        for a in arms:
            t.add_column(f"vs {label(a)}", justify="right")
        t.add_column("verdict")
        lines = list(dict.fromkeys(tuple(r[a.columns[0]] for a in within) for r in rows))
        for line in lines:
            at = {r["control"]: r for r in rows if tuple(r[a.columns[0]] for a in within) == line}
            any_row = next(iter(at.values()))
            ticket = {"mean": any_row["ticket_acc"], "low": any_row["ticket_low"], "high": any_row["ticket_high"],
                      "n": any_row["tickets"], "sd": None}
            cells = [escape(a.text(any_row[a.columns[0]])) for a in shown]
            if count is not None:
                kept = any_row.get("ticket_weights")
                cells += [str(any_row["round"]), "-" if kept in (None, "") else f"{float(kept):,.0f}",
                          f"{100 * float(any_row['density']):.2f}"]
            k = max(int(r["tickets"]) for r in at.values())
            cells += [f"{k} × {max(int(r['retrains']) for r in at.values()) / k:g}", pct_interval(ticket)]
            for a in arms:
                r = at.get(a)
                cells.append("-" if r is None else _margin_cell(r))
            cells.append("; ".join(coloured(v) for v in dict.fromkeys(at[a]["verdict"] for a in arms if a in at)))
            t.add_row(*cells)
        tables.append(t)
    return tables


def width_table(rows: list[Mapping[str, Any]]) -> Table:
    """Transferred tickets of a wider vs a narrower network, at each round and weights point (widths.csv)."""
    width = next(a for a in factors() if a.curve == "width")
    other = [a for a in factors() if a.curve != "width"]
    shown = [a for a in other if len({r.get(a.columns[0]) for r in rows}) > 1]
    points = [c for a in with_role("x") for c in a.columns]
    t = Table(title="tickets from wider vs narrower networks, transferred (test accuracy of the ticket arm)",
              title_justify="left", caption="difference: wider - narrower, points; [Welch two-sample 95% t interval over "
              "tickets]: tickets of two widths are different tickets, not pairs; at a round: equal density (up to rounding); "
              "at a weights point: equal remaining weights, each width at its own round", caption_justify="left")
    for a in shown:
        t.add_column(a.header or a.name.replace("_", " "))
    for col in ("at", "wider", "narrower", "rounds", "tickets' weights", "% weights remaining", "accuracy %", "difference"):
        t.add_column(col, justify="left" if col == "at" else "right")
    f = lambda v: "-" if v in (None, "") else f"{float(v):,.0f}"  # noqa: E731
    for r in rows:
        count = next((r[c] for c in points if r.get(c) not in (None, "")), None)
        iv = {"mean": r["difference"], "low": r["low"] if r["low"] != "" else None,
              "high": r["high"] if r["high"] != "" else None, "n": 2, "sd": None}
        t.add_row(*(escape(a.text(r[a.columns[0]])) for a in shown),
                  f"round {r['round']}" if count is None else f"{count} weights",
                  escape(width.text(r["wider"])), escape(width.text(r["narrower"])),
                  f"{r['wider_round']} / {r['narrower_round']}", f"{f(r['wider_weights'])} / {f(r['narrower_weights'])}",
                  f"{100 * r['wider_density']:.2f} / {100 * r['narrower_density']:.2f}",
                  f"{pct(r['wider_acc'])} / {pct(r['narrower_acc'])}", pct_interval(iv, sign=True))
    return t


def _margin_cell(r: Mapping[str, Any]) -> str:
    text = pct_interval({"mean": r["margin"], "low": r["margin_low"], "high": r["margin_high"], "n": r["tickets"],
                         "sd": None}, sign=True)
    sd = r.get("sd_between")
    return text + (f" σ {100 * float(sd):.2f}" if sd not in (None, "") else "")


def overlap_table(rows: list[Mapping[str, Any]]) -> Table:
    """A study's tickets, pair by pair at matched density: the weights they share vs chance."""
    t = Table(title="ticket overlap (kept weights shared, at matched density, output layers of other sizes left out)",
              title_justify="left", caption="means over the pairs of tickets (every pair: overlap.csv); chance: "
              "independent random masks with the same per-layer counts; z: standard deviations above chance",
              caption_justify="left")
    for col in ("A", "B", "pairs", "% weights remaining", "A kept by B", "chance", "Jaccard", "chance", "z"):
        t.add_column(col, justify="left" if col in ("A", "B") else "right")
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in rows:
        t.add_row(escape(r["a"]), escape(r["b"]), str(r.get("pairs", 1)), f"{100 * r['density']:.2f}", f(r["a_kept_by_b"]),
                  f(r["chance_a_kept_by_b"]), f(r["jaccard"]), f(r["chance_jaccard"]), "-" if r["z"] is None else f"{r['z']:.1f}")
    return t


def stability_table(rows: list[Mapping[str, Any]]) -> Table:
    """A study's error barriers (`stability:`): per source ticket, barrier vs density (one row per round)."""
    from ticketx.stability import STABLE_BARRIER

    t = Table(title="stability: error barrier between two copies trained from the rewind point (linear interpolation)",
              title_justify="left", caption=f"barrier: highest error on the path minus the endpoints' mean, in points; "
              f"stable: test barrier <= {100 * STABLE_BARRIER:g} points (Frankle et al. 2020)", caption_justify="left")
    axes = search_axes()
    shown = _shown(axes, rows)
    for a in shown:
        t.add_column(a.header or a.name.replace("_", " "))
    for col in ("rewind", "round", "% weights remaining", "train barrier", "test barrier", "stable", "copies' test acc %"):
        t.add_column(col, justify="right")
    last = None
    for r in rows:
        ticket = (*(r[a.columns[0]] for a in axes), r["rewind"])
        if last is not None and ticket != last:
            t.add_section()  # one block per source ticket: barrier vs density reads down it
        last = ticket
        stable = "[green]yes[/]" if r["stable"] else "[red]no[/]"
        t.add_row(*(escape(a.text(r[a.columns[0]])) for a in shown), escape(str(r["rewind"])), str(r["round"]),
                  f"{100 * r['density']:.2f}", f"{100 * r['train_barrier']:.2f}", f"{100 * r['test_barrier']:.2f}",
                  stable, f"{pct(r['acc_a'])} / {pct(r['acc_b'])}")
    return t
