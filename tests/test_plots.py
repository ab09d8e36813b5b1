"""Study plots a reader can tell apart: a colour per source, a line style and marker per arm, the same
in every plot of a study; the x axis only where there is data (summary rows made up, no training)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ticketx.study.axes import factors
from ticketx.study.plots import OKABE_ITO, OWN_COLOUR, Styles, accuracy_figure, margins_figure, study_plots, study_styles

SOURCES = ["digits[0-4]", "digits[0-2]", "digits[5-9]"]
ARMS = ["random-mask", "random-reinit", "dense", "own-ticket"]
DENSITIES = [1.0, 0.512, 0.2097, 0.0859]


def _summary(sources=SOURCES, arms=ARMS) -> list[dict]:
    base = {c: "x" for a in factors() for c in a.columns}
    rows = []
    for i, s in enumerate(sources):
        for r, d in enumerate(DENSITIES[1:], start=1):
            for k, arm in enumerate(arms):
                acc = 0.9 - 0.02 * i - 0.01 * r
                rows.append({**base, "source": s, "round": r, "density": d, "control": arm, "ticket_acc": acc,
                             "ticket_low": acc - 0.01, "ticket_high": acc + 0.01, "control_acc": acc - 0.01 * (k + 1),
                             "margin": 0.01 * (k + 1), "margin_low": 0.0, "margin_high": 0.02 * (k + 1), "level": 0.99})
    return rows


def _own(summary) -> list[dict]:
    key = {a.columns[0]: summary[0][a.columns[0]] for a in factors() if a.figure}
    return [{**key, "kind": "transfer", "arm": "own-ticket", "density": d, "test_acc": 0.93 - 0.01 * r}
            for r, d in enumerate(DENSITIES[1:]) for _ in range(3)]


def _looks(fig) -> list[tuple]:
    """(colour, line style, marker, fill) of every data line (legend proxies and bars are not Line2D of the axes)."""
    ax = fig.axes[0]
    return [(l.get_color(), str(l.get_linestyle()), l.get_marker(), l.get_fillstyle()) for l in ax.get_lines()
            if not l.get_label().startswith("_")]


def test_no_two_arms_of_a_plot_share_colour_and_style():
    summary = _summary()
    styles = study_styles(summary)
    acc = accuracy_figure(summary, _own(summary), styles, "here")
    looks = _looks(acc)
    assert len(looks) == len(SOURCES) * len(ARMS) + 1  # ticket + 3 controls per source, and the own ticket
    assert len(set(looks)) == len(looks), looks
    mar = margins_figure(summary, styles, "here")
    looks = _looks(mar)
    assert len(looks) == len(SOURCES) * len(ARMS) and len(set(looks)) == len(looks), looks


def test_colour_is_the_source_and_style_is_the_arm_in_every_plot():
    summary = _summary()
    styles = study_styles(summary)
    acc = accuracy_figure(summary, _own(summary), styles, "here").axes[0].get_lines()
    mar = margins_figure(summary, styles, "here").axes[0].get_lines()
    by_label = {l.get_label(): l for l in [*acc, *mar]}
    # one colour per source, Okabe-Ito in the study's order; black for the own ticket only
    for i, s in enumerate(SOURCES):
        assert by_label[f"ticket from {s}"].get_color() == OKABE_ITO[i]
        assert by_label[f"{s} - random mask"].get_color() == OKABE_ITO[i]
        assert by_label[f"random mask ({s})"].get_color() == OKABE_ITO[i]
    assert by_label["own ticket"].get_color() == OWN_COLOUR and by_label["own ticket"].get_marker() == "*"
    # an arm looks the same in both plots and for every source
    for word in ("random mask", "random reinit", "dense", "ticket from"):
        looks = {(str(l.get_linestyle()), l.get_marker()) for lab, l in by_label.items() if word in lab}
        assert len(looks) == 1, (word, looks)
    assert len({Styles.arm(a) for a in ["ticket", *ARMS]}) == len(ARMS) + 1
    # a figure with fewer sources keeps each source's colour
    only = [r for r in summary if r["source"] == "digits[5-9]"]
    line = next(l for l in accuracy_figure(only, [], styles, "here").axes[0].get_lines()
                if l.get_label() == "ticket from digits[5-9]")
    assert line.get_color() == OKABE_ITO[2]


def test_more_sources_than_colours_stay_distinct():
    sources = [f"digits[{i}]" for i in range(len(OKABE_ITO) + 2)]
    summary = _summary(sources, ["random-mask"])
    looks = _looks(accuracy_figure(summary, [], study_styles(summary), "here"))
    assert len(set(looks)) == len(looks) == 2 * len(sources)


def test_the_x_axis_spans_the_data_only():
    summary = _summary()
    ax = accuracy_figure(summary, _own(summary), study_styles(summary), "here").axes[0]
    ticks = sorted(ax.get_xticks())
    assert ticks == pytest.approx(sorted(float(f"{100 * d:.3g}") for d in DENSITIES[1:]))
    hi, lo = ax.get_xlim()  # decreasing to the right
    assert hi < 100 and hi > 51.2 and lo < 8.59
    ax = margins_figure(summary, study_styles(summary), "here").axes[0]
    assert 100.0 not in list(ax.get_xticks())


def test_study_plots_writes_both_pngs(tmp_path):
    summary = _summary()
    paths = study_plots(_own(summary), summary, tmp_path / "plots")
    assert [p.name for p in paths] == ["accuracy-x-x-x.png", "margins-x-x-x.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
    if os.environ.get("TICKETX_KEEP_PLOTS"):  # to look at them: TICKETX_KEEP_PLOTS=/tmp/plots
        for p in paths:
            Path(os.environ["TICKETX_KEEP_PLOTS"]).mkdir(parents=True, exist_ok=True)
            (Path(os.environ["TICKETX_KEEP_PLOTS"]) / p.name).write_bytes(p.read_bytes())
