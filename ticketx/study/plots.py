"""A study's PNG plots: accuracy and paired margins vs % weights remaining, one figure per value of the
axes that split figures (`figure`), a line per value of the other factors. matplotlib is imported
here only, with the Agg canvas (no display, no global pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ticketx.report import save_png, slug
from ticketx.study.axes import Axis, factors


def _name(lines: list[Axis], key: tuple[Any, ...], varying: list[bool]) -> str:
    """A line's label: its first factor's value, then the others that vary, in parentheses."""
    first = lines[0].text(key[0])
    extra = [p for a, v, vary in zip(lines[1:], key[1:], varying[1:]) if vary and (p := a.label_part(v))]
    return f"{first} ({', '.join(extra)})" if extra else first


def study_plots(rows: list[Mapping[str, Any]], summary: list[Mapping[str, Any]], folder: Any) -> list[Path]:
    """Per figure: accuracy vs % weights remaining (each ticket and its own controls, 95% interval
    bands), and the ticket's paired margin over each control vs % weights remaining (bands, zero line)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from ticketx.baselines import label as arm_label
    from ticketx.stats import interval

    folder = Path(folder)
    written: list[Path] = []
    figs = [a for a in factors() if a.figure]
    lines = [a for a in factors() if not a.figure]
    fig_key = lambda r: tuple(r[a.columns[0]] for a in figs)  # noqa: E731
    line_key = lambda r: tuple(r[a.columns[0]] for a in lines)  # noqa: E731
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in summary:
        groups.setdefault(fig_key(r), []).append(r)

    def axis(ax: Any, xs: list[float]) -> None:
        ax.set_xscale("log")
        ax.set_xlim(100 * 1.05, min(xs) / 1.15)  # decreasing to the right, as in the papers
        ticks = sorted({100.0, *xs}, reverse=True)
        ax.set_xticks(ticks[:: max(1, -(-len(ticks) // 10))])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("% weights remaining")
        ax.grid(True, alpha=0.3)

    for key, group in groups.items():
        tickets = list(dict.fromkeys(line_key(r) for r in group))
        varying = [len({t[i] for t in tickets}) > 1 for i in range(len(lines))]
        name = {t: _name(lines, t, varying) for t in tickets}
        where = ", ".join(a.describe(v) for a, v in zip(figs, key))
        stem = "-".join(slug(str(v)) for v in key)
        xs = [100 * r["density"] for r in group]
        # accuracy: each ticket (solid) and its own controls (dashed, same colour)
        fig = Figure(figsize=(7.5, 4.8))
        ax = fig.add_subplot()
        for t in tickets:
            mine = sorted((r for r in group if line_key(r) == t), key=lambda r: -r["density"])
            pts = list({r["round"]: r for r in mine}.values())
            x = [100 * r["density"] for r in pts]
            line, = ax.plot(x, [100 * r["ticket_acc"] for r in pts], "-o", markersize=3, label=f"ticket from {name[t]}")
            lo = [100 * (r["ticket_low"] if r["ticket_low"] is not None else r["ticket_acc"]) for r in pts]
            hi = [100 * (r["ticket_high"] if r["ticket_high"] is not None else r["ticket_acc"]) for r in pts]
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
            for k, arm in enumerate(dict.fromkeys(r["control"] for r in mine if r["control"] and r["control"] != "own-ticket")):
                ar = [r for r in mine if r["control"] == arm]
                ax.plot([100 * r["density"] for r in ar], [100 * r["control_acc"] for r in ar], "--:-."[k % 3],
                        color=line.get_color(), alpha=0.7, linewidth=1, label=f"{arm_label(arm)} ({name[t]})")
        own = [r for r in rows if r["kind"] == "transfer" and r["arm"] == "own-ticket"
               and all(r[a.columns[0]] == v for a, v in zip(figs, key))]
        by_round: dict[float, list[float]] = {}
        for r in own:
            by_round.setdefault(round(100 * r["density"], 4), []).append(100 * r["test_acc"])
        if by_round:
            x = sorted(by_round, reverse=True)
            iv = [interval(by_round[k]) for k in x]
            ax.plot(x, [i.mean for i in iv], "-s", color="black", markersize=3, label="own ticket")
            ax.fill_between(x, [i.low if i.low is not None else i.mean for i in iv],
                            [i.high if i.high is not None else i.mean for i in iv], color="black", alpha=0.1, linewidth=0)
        axis(ax, xs)
        ax.set_ylabel("test accuracy (%), 95% interval")
        ax.set_title(f"tickets transferred: {where}", fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
        path = folder / f"accuracy-{stem}.png"
        save_png(fig, path)
        written.append(path)
        # margins: ticket - control, paired, per ticket and control
        fig = Figure(figsize=(7.5, 4.8))
        ax = fig.add_subplot()
        ax.axhline(0, color="black", linewidth=0.8)
        for t in tickets:
            for arm in dict.fromkeys(r["control"] for r in group if r["control"]):
                ar = sorted((r for r in group if line_key(r) == t and r["control"] == arm), key=lambda r: -r["density"])
                if not ar:
                    continue
                x = [100 * r["density"] for r in ar]
                line, = ax.plot(x, [100 * r["margin"] for r in ar], "-o", markersize=3, label=f"{name[t]} - {arm_label(arm)}")
                if all(r["margin_low"] is not None for r in ar):
                    ax.fill_between(x, [100 * r["margin_low"] for r in ar], [100 * r["margin_high"] for r in ar],
                                    color=line.get_color(), alpha=0.15, linewidth=0)
        axis(ax, xs)
        level = next((r["level"] for r in group if r.get("level") is not None), 0.95)
        ax.set_ylabel(f"ticket - control (points), paired;\nband: {100 * level:.2f}% interval over tickets (adjusted)")
        ax.set_title(f"paired margins: {where}", fontsize=10)
        ax.legend(fontsize=7, loc="best")
        path = folder / f"margins-{stem}.png"
        save_png(fig, path)
        written.append(path)
    return written
