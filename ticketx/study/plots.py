"""A study's PNG plots: accuracy and paired margins vs % weights remaining, one figure per value of the
axes that split figures (`figure`), a line per ticket source (the other factors) and arm.

One colour per source and one line style and marker per arm, the same in every plot of a study
(`Styles`), so a reader matches lines across figures by eye; the own ticket is black. Colours are Okabe & Ito's
palette, told apart under the common colour-vision deficiencies. The x axis spans the densities
measured, with a tick at each (no empty 100%). matplotlib is imported here only, with the Agg
canvas (no display, no global pyplot state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ticketx.report import save_png, slug
from ticketx.study.axes import Axis, factors, with_role

# Okabe & Ito 2008, "Color Universal Design": distinct under protan, deutan and tritan vision.
# Black is the own ticket's; yellow last (faint on white).
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442"]
OWN_COLOUR = "#000000"
# (line style, marker) per arm, in the order arms are known: the ticket, the baselines, the own ticket.
ARM_STYLES: list[tuple[Any, str]] = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 2, 1, 2)), "v"),
                                     ((0, (1, 1)), "X"), ((0, (3, 1, 1, 1, 1, 1)), "P")]
OWN_STYLE: tuple[Any, str] = ("-", "*")
# Points of several lines at one density are spread sideways over this factor, so none hides another.
DODGE = 1.07


@dataclass
class Styles:
    """The look of every line in a study's plots: a colour per source, a (line style, marker) per arm."""

    sources: list[tuple[Any, ...]]  # line keys in the study's order
    colours: dict[tuple[Any, ...], tuple[str, str]] = field(default_factory=dict)  # key -> (colour, fill style)

    def __post_init__(self) -> None:
        for i, key in enumerate(dict.fromkeys(self.sources)):
            # past the palette, colours repeat with hollow markers: still no two sources alike
            self.colours[key] = (OKABE_ITO[i % len(OKABE_ITO)], "full" if i < len(OKABE_ITO) else "none")

    def source(self, key: tuple[Any, ...]) -> tuple[str, str]:
        return self.colours.get(key, ("#808080", "full"))

    @staticmethod
    def arm(name: str) -> tuple[Any, str]:
        """An arm's (line style, marker): fixed by its name, so the same in every plot."""
        from ticketx.baselines import BASELINES

        if name == "own-ticket":
            return OWN_STYLE
        order = ["ticket", *BASELINES.names()]
        i = order.index(name) if name in order else len(order) + sum(map(ord, name))
        return ARM_STYLES[i % len(ARM_STYLES)]


def _name(lines: list[Axis], key: tuple[Any, ...], varying: list[bool]) -> str:
    """A line's label: its first factor's value, then the others that vary, in parentheses."""
    first = lines[0].text(key[0])
    extra = [p for a, v, vary in zip(lines[1:], key[1:], varying[1:]) if vary and (p := a.label_part(v))]
    return f"{first} ({', '.join(extra)})" if extra else first


def _dodge(x: list[float], j: int, n: int) -> list[float]:
    """Line j of n at each density, spread sideways (log axis) over a factor DODGE."""
    if n < 2:
        return x
    shift = DODGE ** (j / (n - 1) - 0.5)
    return [v * shift for v in x]


def _x_axis(ax: Any, xs: list[float]) -> None:
    """Log x axis over the densities measured (decreasing to the right, as in the papers), a tick at each."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log")
    lo, hi = min(xs), max(xs)
    pad = DODGE ** 0.5 * 1.06
    ax.set_xlim(hi * pad, lo / pad)
    ticks = sorted({float(f"{v:.3g}") for v in xs}, reverse=True)
    ticks = ticks[:: max(1, -(-len(ticks) // 10))]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.set_xlabel("% weights remaining")
    ax.grid(True, alpha=0.3)


# More interval bands than this in one plot hide each other (and the lines): bars only.
MAX_BANDS = 4


def _interval(ax: Any, x: list[float], lo: list[float | None], hi: list[float | None], colour: str,
              band: bool = True) -> None:
    """An interval: a bar at each point, and (`band`) a shaded band between points when there are several."""
    have = [(a, b, c) for a, b, c in zip(x, lo, hi) if b is not None and c is not None]
    if not have:
        return
    ax.vlines([a for a, _, _ in have], [b for _, b, _ in have], [c for _, _, c in have], color=colour, linewidth=1,
              alpha=0.6)
    if band and len(have) > 1:
        ax.fill_between([a for a, _, _ in have], [b for _, b, _ in have], [c for _, _, c in have], color=colour,
                        alpha=0.12, linewidth=0)


def _legends(ax: Any, sources: list[tuple[str, tuple[str, str]]], arms: list[tuple[str, tuple[Any, str]]]) -> None:
    """Two legends beside the axes: colour = where the ticket came from, line and marker = which arm.

    Figure legends (placed by the axes' corner), so that the saved PNG's tight box includes both.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = ax.get_figure()
    colour = [Patch(facecolor=c, edgecolor=c, hatch=None if f == "full" else "///", fill=f == "full", label=name)
              for name, (c, f) in sources]
    style = [Line2D([], [], color="#444444", linestyle=ls, marker=m, markersize=_size(m, 5), linewidth=1.2, label=name)
             for name, (ls, m) in arms]
    common = dict(fontsize=7, title_fontsize=7, frameon=False, bbox_transform=ax.transAxes, alignment="left")
    fig.legend(handles=colour, title="colour: ticket from", loc="upper left", bbox_to_anchor=(1.01, 1.0), **common)
    fig.legend(handles=style, title="line and marker: arm", loc="lower left", bbox_to_anchor=(1.01, 0.0),
               handlelength=3.5, **common)


def _size(marker: str, size: float) -> float:
    """Marker size: a star reads smaller than a circle of the same size."""
    return size * 1.6 if marker == "*" else size


def _note(fig: Any) -> None:
    fig.text(0.01, 0.005, "points at one density are spread sideways a little, so that none hides another",
             fontsize=6, color="#666666")


def accuracy_figure(group: list[Mapping[str, Any]], own: list[Mapping[str, Any]], styles: Styles, where: str) -> Any:
    """Test accuracy vs % weights remaining: each ticket and its own controls, and the own ticket (black)."""
    from matplotlib.figure import Figure

    from ticketx.baselines import label as arm_label
    from ticketx.stats import replicated

    lines = [a for a in factors() if not a.figure]
    line_key = lambda r: tuple(r[a.columns[0]] for a in lines)  # noqa: E731
    tickets = list(dict.fromkeys(line_key(r) for r in group))
    varying = [len({t[i] for t in tickets}) > 1 for i in range(len(lines))]
    name = {t: _name(lines, t, varying) for t in tickets}
    arms = ["ticket", *dict.fromkeys(r["control"] for r in group if r["control"] and r["control"] != "own-ticket")]
    # The own tickets' accuracy per density, over tickets (the unit; retrains are repeated measures of one).
    unit = [c for a in with_role("ticket") for c in a.columns]
    by_round: dict[float, dict[tuple[Any, ...], list[float]]] = {}
    for r in own:
        by_round.setdefault(round(100 * r["density"], 4), {}).setdefault(tuple(r.get(c) for c in unit), []).append(
            100 * r["test_acc"])
    n = len(tickets) * len(arms) + bool(by_round)
    xs = [100 * r["density"] for r in group] + list(by_round)
    fig = Figure(figsize=(8.2, 4.8))
    ax = fig.add_subplot()
    j = 0
    for t in tickets:
        colour, fill = styles.source(t)
        mine = sorted((r for r in group if line_key(r) == t), key=lambda r: -r["density"])
        pts = list({r["round"]: r for r in mine}.values())
        ls, marker = styles.arm("ticket")
        x = _dodge([100 * r["density"] for r in pts], j, n)
        j += 1
        ax.plot(x, [100 * r["ticket_acc"] for r in pts], linestyle=ls, marker=marker, markersize=_size(marker, 5), color=colour,
                fillstyle=fill, linewidth=1.8, label=f"ticket from {name[t]}", zorder=3)
        _interval(ax, x, [None if r["ticket_low"] is None else 100 * r["ticket_low"] for r in pts],
                  [None if r["ticket_high"] is None else 100 * r["ticket_high"] for r in pts], colour,
                  band=len(tickets) < MAX_BANDS)
        for arm in arms[1:]:
            ar = [r for r in mine if r["control"] == arm]
            ls, marker = styles.arm(arm)
            x = _dodge([100 * r["density"] for r in ar], j, n)
            j += 1
            if not ar:
                continue
            ax.plot(x, [100 * r["control_acc"] for r in ar], linestyle=ls, marker=marker, markersize=_size(marker, 4.5), color=colour, fillstyle=fill, linewidth=1.1,
                    alpha=0.85, label=f"{arm_label(arm)} ({name[t]})", zorder=2)
    if by_round:
        x = sorted(by_round, reverse=True)
        iv = [replicated(by_round[k]).interval() for k in x]
        ls, marker = styles.arm("own-ticket")
        xd = _dodge(x, j, n)
        ax.plot(xd, [i.mean for i in iv], linestyle=ls, marker=marker, markersize=_size(marker, 5), color=OWN_COLOUR, linewidth=1.5,
                label="own ticket", zorder=3)
        _interval(ax, xd, [i.low for i in iv], [i.high for i in iv], OWN_COLOUR)
    _x_axis(ax, xs)
    ax.set_ylabel("test accuracy (%), 95% interval over tickets")
    ax.set_title(f"tickets transferred: {where}", fontsize=10)
    shown = [*arms, *(["own-ticket"] if by_round else [])]
    _legends(ax, [(name[t], styles.source(t)) for t in tickets] + ([("own ticket (the target's)", (OWN_COLOUR, "full"))]
                                                                    if by_round else []),
             [(arm_label(a), styles.arm(a)) for a in shown])
    _note(fig)
    return fig


def margins_figure(group: list[Mapping[str, Any]], styles: Styles, where: str) -> Any:
    """The ticket's paired margin over each control vs % weights remaining (bars and bands, zero line)."""
    from matplotlib.figure import Figure

    from ticketx.baselines import label as arm_label

    lines = [a for a in factors() if not a.figure]
    line_key = lambda r: tuple(r[a.columns[0]] for a in lines)  # noqa: E731
    tickets = list(dict.fromkeys(line_key(r) for r in group))
    varying = [len({t[i] for t in tickets}) > 1 for i in range(len(lines))]
    name = {t: _name(lines, t, varying) for t in tickets}
    arms = list(dict.fromkeys(r["control"] for r in group if r["control"]))
    n = len(tickets) * len(arms)
    fig = Figure(figsize=(8.2, 4.8))
    ax = fig.add_subplot()
    ax.axhline(0, color="black", linewidth=0.8)
    j = 0
    for t in tickets:
        colour, fill = styles.source(t)
        for arm in arms:
            ar = sorted((r for r in group if line_key(r) == t and r["control"] == arm), key=lambda r: -r["density"])
            x = _dodge([100 * r["density"] for r in ar], j, n)
            j += 1
            if not ar:
                continue
            ls, marker = styles.arm(arm)
            ax.plot(x, [100 * r["margin"] for r in ar], linestyle=ls, marker=marker, markersize=_size(marker, 5), color=colour,
                    fillstyle=fill, linewidth=1.3, label=f"{name[t]} - {arm_label(arm)}", zorder=3)
            _interval(ax, x, [None if r["margin_low"] is None else 100 * r["margin_low"] for r in ar],
                      [None if r["margin_high"] is None else 100 * r["margin_high"] for r in ar], colour,
                      band=n <= MAX_BANDS)
    _x_axis(ax, [100 * r["density"] for r in group])
    level = next((r["level"] for r in group if r.get("level") is not None), 0.95)
    ax.set_ylabel(f"ticket - control (points), paired;\nbar: {100 * level:.2f}% interval over tickets (adjusted)")
    ax.set_title(f"paired margins: {where}", fontsize=10)
    _legends(ax, [(name[t], styles.source(t)) for t in tickets], [(f"ticket - {arm_label(a)}", styles.arm(a)) for a in arms])
    _note(fig)
    return fig


def study_styles(summary: list[Mapping[str, Any]]) -> Styles:
    """The study's line styles: every source in the order the summary (the study file) gives them."""
    lines = [a for a in factors() if not a.figure]
    return Styles([tuple(r[a.columns[0]] for a in lines) for r in summary])


def study_plots(rows: list[Mapping[str, Any]], summary: list[Mapping[str, Any]], folder: Any) -> list[Path]:
    """Per figure: accuracy vs % weights remaining (each ticket and its own controls, 95% intervals),
    and the ticket's paired margin over each control vs % weights remaining."""
    folder = Path(folder)
    written: list[Path] = []
    figs = [a for a in factors() if a.figure]
    fig_key = lambda r: tuple(r[a.columns[0]] for a in figs)  # noqa: E731
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in summary:
        groups.setdefault(fig_key(r), []).append(r)
    styles = study_styles(summary)
    for key, group in groups.items():
        where = ", ".join(a.describe(v) for a, v in zip(figs, key))
        stem = "-".join(slug(str(v)) for v in key)
        own = [r for r in rows if r["kind"] == "transfer" and r["arm"] == "own-ticket"
               and all(r[a.columns[0]] == v for a, v in zip(figs, key))]
        for kind, fig in (("accuracy", accuracy_figure(group, own, styles, where)), ("margins", margins_figure(group, styles, where))):
            path = folder / f"{kind}-{stem}.png"
            save_png(fig, path)
            written.append(path)
    return written
