"""Over-parametrization curves of a study: double descent and memorisation, from results.csv's rows.

Drawn by `study report` when the study has the axes they need (each axis's `curve` declaration):

- model-wise double descent (Belkin et al. 2019; Nakkiran et al. 2020): test error vs width (log
  axis), a line per label-noise level, a panel per round (one density each), when widths vary;
- sparse double descent (He et al. 2022): test accuracy vs % weights remaining (log axis,
  decreasing), a line per noise level, a panel per width, the dense network (round 0) marked,
  when a noise level is above 0;
- memorisation vs % weights remaining: the share of the flipped training labels each network
  predicts with its noisy label (solid) and its train accuracy (dashed), a line per noise level,
  a panel per width, when memorisation was measured.
- epoch-wise double descent (Nakkiran et al. 2020, sec. 6): test error vs training epoch from each
  run's history (the test accuracy every `eval_every`), a line per width, a panel per noise level
  and round, for the searches' dense networks and the transferred tickets (`epoch_plots`);
- tickets at equal numbers of remaining weights (the point axis's weights points): the transferred
  ticket's accuracy vs its remaining weights (log axis), a line per width, and its paired margin
  over each control (`weights_plots`, from the summary rows of those points).

Each for two kinds of network: the searches' (IMP's rounds on the source, `search-*`) and the
transferred tickets' (the ticket arm on the target, `transfer-*`), one figure per value of the
other factors (model, source, target, ...). A point is the mean over tickets (search seeds), with
the 95% t interval over them (`stats.replicated`: each ticket's retrains averaged first; with one
ticket, over its retrains). Beside each PNG, a CSV with the points it draws. matplotlib is
imported here only, with the Agg canvas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ticketx.report import slug
from ticketx.study.axes import Axis, factors, with_role

METRICS = ("test_acc", "train_acc", "memorised")
KINDS = {"search": "search", "transfer": "ticket"}  # the kind of row -> the arm whose networks are drawn


def point_columns(axes: list[Axis]) -> list[str]:
    """A curve CSV: one row per point (a factor combination and round)."""
    cols = ["kind", *(a.columns[0] for a in axes), "round", "density", "tickets", "retrains"]
    for m in METRICS:
        cols += [m, f"{m}_low", f"{m}_high"]
    return cols


def _number(v: Any) -> Optional[float]:
    if v in (None, ""):
        return None
    x = float(v)
    return x if math.isfinite(x) else None


def points(rows: list[Mapping[str, Any]], kind: str) -> tuple[list[Axis], list[dict[str, Any]]]:
    """(the factor axes of `kind`, its points): every factor combination and round of the networks of
    `kind` ('search' or 'transfer'), each metric's mean over tickets with its 95% interval."""
    from ticketx.stats import replicated

    axes = factors("search") if kind == "search" else factors()
    ticket = [c for a in with_role("ticket") for c in a.columns]
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        if r["kind"] == kind and r["arm"] == KINDS[kind]:
            groups.setdefault((*(r[a.columns[0]] for a in axes), int(r["round"])), []).append(r)
    out = []
    for key, group in groups.items():
        p: dict[str, Any] = {"kind": kind, **{a.columns[0]: v for a, v in zip(axes, key[:-1])}, "round": key[-1],
                             "density": sum(float(r["density"]) for r in group) / len(group)}
        for m in METRICS:
            by: dict[tuple[Any, ...], list[float]] = {}
            for r in group:
                if (v := _number(r.get(m))) is not None:
                    by.setdefault(tuple(r[c] for c in ticket), []).append(v)
            if not by:
                p.update({m: "", f"{m}_low": "", f"{m}_high": ""})
                continue
            est = replicated(by)
            iv = est.interval()
            p.update({m: iv.mean, f"{m}_low": "" if iv.low is None else iv.low, f"{m}_high": "" if iv.high is None else iv.high})
            if m == METRICS[0]:
                p.update(tickets=est.tickets, retrains=est.retrains)
        out.append(p)
    out.sort(key=lambda p: -p["density"])
    return axes, out


def _per_kind(records: list[Mapping[str, Any]], folder: Any, points_of: Callable[..., tuple[list[Axis], list[dict[str, Any]]]],
              draw: Callable[[list[Axis], list[dict[str, Any]], Path, str], list[Path]]) -> list[Path]:
    """`draw` the points `points_of` finds in `records`, kind by kind (searches, transfers): the PNGs written."""
    written: list[Path] = []
    for kind in KINDS:
        axes, pts = points_of(records, kind)
        if pts:
            written += draw(axes, pts, Path(folder), kind)
    return written


def curve_plots(rows: list[Mapping[str, Any]], folder: Any) -> list[Path]:
    """Every curve the study's axes call for (module docstring): the PNGs written (a CSV beside each)."""
    return _per_kind(rows, folder, points, _kind_plots)


def _values(pts: list[dict[str, Any]], a: Axis) -> list[Any]:
    return list(dict.fromkeys(p[a.columns[0]] for p in pts))


@dataclass
class _Figure:
    """The points of one figure: those sharing every value of the axes that are not curves."""

    group: list[dict[str, Any]]
    width: list[Axis]  # the width axes (the x of model-wise curves)
    noise: list[Axis]  # the noise axes (a line per level)
    widths: list[Any]  # the widths among the points
    noisy: bool  # some point has label noise
    where: str  # the other axes' values that vary in the study, in words ('' if none)
    stem: str  # the file name's part after the kind of plot


def _figures(axes: list[Axis], pts: list[dict[str, Any]], kind: str) -> list[_Figure]:
    """`pts` split into figures by the axes that are not curves (width, noise), in the order they come."""
    width = [a for a in axes if a.curve == "width"]
    noise = [a for a in axes if a.curve == "noise"]
    other = [a for a in axes if not a.curve]
    varying = [len(_values(pts, a)) > 1 for a in other]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for p in pts:
        groups.setdefault(tuple(p[a.columns[0]] for a in other), []).append(p)
    return [_Figure(group, width, noise, [w for a in width for w in _values(group, a)],
                    any((_number(p[a.columns[0]]) or 0) > 0 for a in noise for p in group),
                    ", ".join(d for a, v, on in zip(other, key, varying) if on and (d := a.describe(v))),
                    slug("-".join([kind, *(a.text(v) for a, v, on in zip(other, key, varying) if on)])))
            for key, group in groups.items()]


def _kind_plots(axes: list[Axis], pts: list[dict[str, Any]], folder: Path, kind: str) -> list[Path]:
    written: list[Path] = []
    for f in _figures(axes, pts, kind):
        group, width, noise, widths, noisy, where, stem = f.group, f.width, f.noise, f.widths, f.noisy, f.where, f.stem
        # A line per noise level; its label names the noise axes that vary here (else all of them).
        named = [i for i, a in enumerate(noise) if len(_values(group, a)) > 1] or list(range(len(noise)))
        line = lambda p: tuple(p[a.columns[0]] for a in noise)  # noqa: E731
        label = lambda t: ", ".join(noise[i].label_part(t[i]) for i in named) or "clean labels"  # noqa: E731
        title = f"{'searches' if kind == 'search' else 'tickets transferred'}" + (f": {where}" if where else "")
        cols = point_columns(axes)
        if len(widths) > 1:
            written.append(_model_wise(group, width[0], line, label, f"model-wise double descent, {title}",
                                       folder / f"double-descent-width-{stem}.png", cols))
        if noisy:
            written.append(_by_density(group, width, line, label, "test_acc", f"sparse double descent, {title}",
                                       folder / f"double-descent-density-{stem}.png", cols))
        if any(p["memorised"] != "" for p in group):
            written.append(_by_density(group, width, line, label, "memorised", f"memorisation, {title}",
                                       folder / f"memorisation-{stem}.png", cols))
    return written


def _grid(n: int) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    cols = min(3, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows + 0.6), layout="constrained")
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def _band(ax: Any, x: list[float], pts: list[dict[str, Any]], metric: str, scale: Any, color: Any) -> None:
    if all(p[f"{metric}_low"] != "" for p in pts):
        lo = [scale(p[f"{metric}_low"]) for p in pts]
        hi = [scale(p[f"{metric}_high"]) for p in pts]
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)


def _save(fig: Any, path: Path, pts: list[dict[str, Any]], cols: list[str]) -> Path:
    from ticketx import store
    from ticketx.report import csv_text, save_png

    save_png(fig, path)
    store.write_text(path.with_suffix(".csv"), csv_text(pts, cols))
    return path


def _model_wise(group: list[dict[str, Any]], width: Axis, line: Any, label: Any, title: str, path: Path,
                cols: list[str]) -> Path:
    """Test error vs width, a line per noise level, a panel per round."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    rounds = sorted({p["round"] for p in group})
    fig, panels = _grid(len(rounds))
    col = width.columns[0]
    for ax, r in zip(panels, rounds):
        at = [p for p in group if p["round"] == r]
        for t in dict.fromkeys(line(p) for p in at):
            mine = sorted((p for p in at if line(p) == t and p["test_acc"] != ""), key=lambda p: float(p[col]))
            x = [float(p[col]) for p in mine]
            err = lambda v: 100 * (1 - float(v))  # noqa: E731
            drawn, = ax.plot(x, [err(p["test_acc"]) for p in mine], "-o", markersize=3, label=label(t))
            _band(ax, x, mine, "test_acc", err, drawn.get_color())
        lo, hi = min(p["density"] for p in at), max(p["density"] for p in at)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({float(p[col]) for p in at}))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        span = f"{100 * lo:.3g}%" if hi - lo <= 0.01 * hi else f"{100 * lo:.3g}-{100 * hi:.3g}%"  # densities differ a little by width
        ax.set_title(f"round {r}: {span} weights remaining", fontsize=9)
        ax.set_xlabel("width (x the paper's hidden units)")
        ax.set_ylabel("test error (%), 95% interval")
        ax.grid(True, alpha=0.3)
    panels[0].legend(fontsize=7)
    fig.suptitle(title + "\nband: 95% t interval over tickets (search seeds)", fontsize=10)
    return _save(fig, path, group, cols)


def _by_density(group: list[dict[str, Any]], width: list[Axis], line: Any, label: Any, metric: str, title: str,
                path: Path, cols: list[str]) -> Path:
    """`metric` vs % weights remaining (log, decreasing), a line per noise level, a panel per width; with
    memorisation also the train accuracy (dashed)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    col = width[0].columns[0] if width else None
    panels_at = list(dict.fromkeys(p[col] for p in group)) if col else [None]
    fig, panels = _grid(len(panels_at))
    pct = lambda v: 100 * float(v)  # noqa: E731
    for ax, w in zip(panels, panels_at):
        at = [p for p in group if col is None or p[col] == w]
        for t in dict.fromkeys(line(p) for p in at):
            mine = sorted((p for p in at if line(p) == t), key=lambda p: -p["density"])
            shown = [p for p in mine if p[metric] != ""]
            color = None
            if shown:
                x = [100 * p["density"] for p in shown]
                drawn, = ax.plot(x, [pct(p[metric]) for p in shown], "-o", markersize=3, label=label(t))
                color = drawn.get_color()
                _band(ax, x, shown, metric, pct, color)
                dense = [p for p in shown if p["round"] == 0]
                if dense and metric == "test_acc":
                    ax.plot([100 * dense[0]["density"]], [pct(dense[0][metric])], "*", markersize=11,
                            color=color, markeredgecolor="black", markeredgewidth=0.5)
            if metric == "memorised":
                fit = [p for p in mine if p["train_acc"] != ""]
                if fit:
                    ax.plot([100 * p["density"] for p in fit], [pct(p["train_acc"]) for p in fit], "--", linewidth=1,
                            color=color, label=f"train accuracy ({label(t)})")
        xs = [100 * p["density"] for p in at]
        ax.set_xscale("log")
        ax.set_xlim(max(xs) * 1.3, min(xs) / 1.3)  # decreasing to the right, as in the papers
        ticks = sorted(set(round(x, 4) for x in xs), reverse=True)
        ax.set_xticks(ticks[:: max(1, -(-len(ticks) // 8))])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("% weights remaining")
        ax.set_ylabel("test accuracy (%)" if metric == "test_acc" else "flipped labels fitted (%); train acc. (dashed)")
        if metric == "memorised":
            ax.set_ylim(-3, 103)  # every panel on the same scale: 0 (none of the noise fitted) to 100 (all)
        if w is not None:
            ax.set_title(width[0].describe(w), fontsize=9)
        ax.grid(True, alpha=0.3)
    panels[0].legend(fontsize=7)
    note = "star: dense (round 0); " if metric == "test_acc" else "dashed: train accuracy on the noisy labels; "
    fig.suptitle(f"{title}\n{note}band: 95% t interval over tickets (search seeds)", fontsize=10)
    return _save(fig, path, group, cols)


# ---- epoch-wise double descent (Nakkiran et al. 2020, sec. 6: test error vs training epochs) ----

EPOCH_METRIC = "test_acc"


def epoch_columns(axes: list[Axis]) -> list[str]:
    """An epoch-wise CSV: one row per factor combination, round and evaluation epoch."""
    return ["kind", *(a.columns[0] for a in axes), "round", "density", "epoch", "tickets", "retrains",
            EPOCH_METRIC, f"{EPOCH_METRIC}_low", f"{EPOCH_METRIC}_high"]


def epoch_points(history: list[Mapping[str, Any]], kind: str) -> tuple[list[Axis], list[dict[str, Any]]]:
    """(the factor axes of `kind`, its points): the test accuracy of `kind`'s networks ('search': the dense
    round 0, the network whose width is varied; 'transfer': the ticket arm at every round) at each
    evaluation epoch, the mean over tickets (search seeds) with its 95% interval (`stats.replicated`)."""
    from ticketx.stats import replicated

    axes = factors("search") if kind == "search" else factors()
    ticket = [c for a in with_role("ticket") for c in a.columns]
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in history:
        if r["kind"] != kind or (kind == "search" and int(r["round"]) != 0):
            continue
        groups.setdefault((*(r[a.columns[0]] for a in axes), int(r["round"]), float(r["epoch"])), []).append(r)
    out = []
    for key, group in groups.items():
        by: dict[tuple[Any, ...], list[float]] = {}
        for r in group:
            by.setdefault(tuple(r[c] for c in ticket), []).append(float(r[EPOCH_METRIC]))
        est = replicated(by)
        iv = est.interval()
        out.append({"kind": kind, **{a.columns[0]: v for a, v in zip(axes, key[:-2])}, "round": key[-2],
                    "density": sum(float(r["density"]) for r in group) / len(group), "epoch": key[-1],
                    "tickets": est.tickets, "retrains": est.retrains, EPOCH_METRIC: iv.mean,
                    f"{EPOCH_METRIC}_low": "" if iv.low is None else iv.low,
                    f"{EPOCH_METRIC}_high": "" if iv.high is None else iv.high})
    out.sort(key=lambda p: (p["round"], p["epoch"]))
    return axes, out


def epoch_plots(history: list[Mapping[str, Any]], folder: Any) -> list[Path]:
    """Epoch-wise curves (`epoch-wise-*`): test error vs epoch, a line per width, a panel per noise level
    (columns) and round (rows), for the searches' dense networks and the transferred tickets; drawn when
    widths vary or a noise level is above 0. A CSV of the points beside each PNG."""
    return _per_kind(history, folder, epoch_points, _epoch_figures)


def _epoch_figures(axes: list[Axis], pts: list[dict[str, Any]], folder: Path, kind: str) -> list[Path]:
    written: list[Path] = []
    for f in _figures(axes, pts, kind):
        group, width, noise, where, stem = f.group, f.width, f.noise, f.where, f.stem
        if len(f.widths) < 2 and not f.noisy:
            continue
        title = ("epoch-wise double descent, " + ("searches (dense networks)" if kind == "search" else "tickets transferred")
                 + (f": {where}" if where else ""))
        written.append(_epoch_figure(group, width, noise, title, folder / f"epoch-wise-{stem}.png", epoch_columns(axes)))
    return written


def _epoch_figure(group: list[dict[str, Any]], width: list[Axis], noise: list[Axis], title: str, path: Path,
                  cols: list[str]) -> Path:
    """Test error vs epoch: a panel per (round, noise level), a line per width with its 95% band."""
    level = lambda p: tuple(p[a.columns[0]] for a in noise)  # noqa: E731
    levels = list(dict.fromkeys(level(p) for p in group))
    named = [i for i, a in enumerate(noise) if len({t[i] for t in levels}) > 1] or list(range(len(noise)))
    rounds = sorted({p["round"] for p in group})
    fig, panels = _grid_of(len(rounds), len(levels))
    col = width[0].columns[0] if width else None
    err = lambda v: 100 * (1 - float(v))  # noqa: E731
    for i, r in enumerate(rounds):
        for j, t in enumerate(levels):
            ax = panels[i][j]
            at = [p for p in group if p["round"] == r and level(p) == t]
            for w in (sorted(dict.fromkeys(p[col] for p in at), key=float) if col else [None]):
                mine = sorted((p for p in at if col is None or p[col] == w), key=lambda p: p["epoch"])
                x = [p["epoch"] for p in mine]
                drawn, = ax.plot(x, [err(p[EPOCH_METRIC]) for p in mine], "-", linewidth=1.2,
                                 label=width[0].describe(w) if col else "test error")
                _band(ax, x, mine, EPOCH_METRIC, err, drawn.get_color())
            dens = [p["density"] for p in at]
            noise_text = ", ".join(noise[k].label_part(t[k]) for k in named) or "clean labels"
            ax.set_title(f"{noise_text}; round {r}: {100 * min(dens):.3g}"
                         + (f"-{100 * max(dens):.3g}" if max(dens) - min(dens) > 0.01 * max(dens) else "")
                         + "% weights remaining", fontsize=8)
            ax.set_xlabel("epoch")
            ax.set_ylabel("test error (%), 95% interval")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(title + "\nband: 95% t interval over tickets (search seeds)", fontsize=10)
    return _save(fig, path, group, cols)


def _grid_of(rows: int, cols: int) -> tuple[Any, list[list[Any]]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + 0.7), layout="constrained")
    return fig, [[fig.add_subplot(rows, cols, i * cols + j + 1) for j in range(cols)] for i in range(rows)]


# ---- tickets at equal numbers of remaining weights (the point axis's weights points) ----

def weights_plots(summary: list[Mapping[str, Any]], folder: Any, columns: list[str]) -> list[Path]:
    """`equal-weights-*`: the transferred ticket's accuracy vs its remaining weights (log axis), a line per
    width (and noise level), and its paired margin over each control; from the summary rows of the
    weights points (each ticket at its round nearest the count). A CSV of the rows (`columns`) beside each PNG."""
    rows = [dict(r) for r in summary]
    if not rows:
        return []
    axes = factors()
    other = [a for a in axes if not a.curve]
    figures: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        figures.setdefault(tuple(r[a.columns[0]] for a in other), []).append(r)
    written = []
    for key, group in figures.items():
        where = ", ".join(d for a, v in zip(other, key) if len(_values(rows, a)) > 1 and (d := a.describe(v)))
        stem = slug("-".join(["transfer", *(a.text(v) for a, v in zip(other, key) if len(_values(rows, a)) > 1)]))
        written.append(_weights_figure(group, axes, "tickets transferred at equal remaining weights"
                                       + (f": {where}" if where else ""), Path(folder) / f"equal-weights-{stem}.png",
                                       columns))
    return written


def _weights_figure(group: list[dict[str, Any]], axes: list[Axis], title: str, path: Path, columns: list[str]) -> Path:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from ticketx.baselines import arm_order, label

    points = [c for a in with_role("x") for c in a.columns]  # the point a row is at
    lines_by = [a for a in axes if a.curve]  # width, then the noise levels
    named = [a for a in lines_by if len(_values(group, a)) > 1] or lines_by[:1]
    line = lambda r: tuple(r[a.columns[0]] for a in lines_by)  # noqa: E731
    text = lambda r: ", ".join(a.describe(r[a.columns[0]]) if a.curve == "width" else a.label_part(r[a.columns[0]])  # noqa: E731
                               for a in named) or "tickets"
    controls = arm_order([r["control"] for r in group if r["control"]])
    fig, panels = _grid(1 + len(controls))
    pct = lambda v: 100 * float(v)  # noqa: E731
    colours: dict[tuple[Any, ...], Any] = {}
    for k, arm in enumerate([None, *controls]):
        ax = panels[k]
        for t in dict.fromkeys(line(r) for r in group):
            mine = sorted((r for r in group if line(r) == t and (r["control"] == arm if arm else True)
                           and r.get("ticket_weights") not in (None, "")), key=lambda r: float(r["ticket_weights"]))
            if arm is None:  # the ticket's accuracy: one row per point (every control's row carries it)
                mine = list({tuple(r.get(c) for c in points): r for r in mine}.values())
            if not mine:
                continue
            x = [float(r["ticket_weights"]) for r in mine]
            if arm is None:
                y, lo, hi = ([pct(r[f"ticket_{s}"]) if r.get(f"ticket_{s}") not in (None, "") else None for r in mine]
                             for s in ("acc", "low", "high"))
            else:
                y, lo, hi = ([pct(r[s]) if r.get(s) not in (None, "") else None for r in mine]
                             for s in ("margin", "margin_low_95", "margin_high_95"))
            drawn, = ax.plot(x, y, "-o", markersize=3, color=colours.get(t), label=text(mine[0]))
            colours[t] = drawn.get_color()
            if all(v is not None for v in lo + hi):
                ax.fill_between(x, lo, hi, color=colours[t], alpha=0.15, linewidth=0)
            if arm is None:
                for r, xv in zip(mine, x):
                    ax.annotate(f"r{r['round']}", (xv, pct(r["ticket_acc"])), fontsize=6, xytext=(2, 2),
                                textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("the ticket's remaining weights (log)")
        if arm is None:
            ax.set_ylabel("ticket test accuracy (%)")
            ax.set_title("the ticket (r: the round picked)", fontsize=9)
        else:
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_ylabel("ticket - control (points)")
            ax.set_title(f"vs {label(arm)}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}\nband: 95% t interval over tickets (search seeds; margins paired within a ticket, unadjusted)",
                 fontsize=10)
    return _save(fig, path, group, columns)
