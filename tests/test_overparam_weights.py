"""Over-parametrization, the second part: epoch-wise curves from run histories, tickets of different
widths at equal numbers of remaining weights (the point axis's weights points, the round each ticket
picks, Welch's interval between widths), and what `study validate` says a study costs."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest

from ticketx.errors import UsageError
from ticketx.settings import TransferSpec, resolve_transfer


def _column(name: str) -> str:
    from ticketx.study.axes import AXES

    return AXES[name].columns[0]


def _history_row(kind: str, width: float, noise: float, seed: int, round_: int, epoch: float, acc: float) -> dict:
    from ticketx.study.axes.base import all_columns

    row = {c: "" for c in all_columns()}
    row.update({_column("width"): width, _column("search_noise"): noise, _column("search_seed"): seed,
                "kind": kind, "round": round_, "density": 1.0 if round_ == 0 else 0.3, "arm": "search" if kind == "search" else "ticket",
                "epoch": epoch, "test_acc": acc})
    return row


def test_epoch_points_are_the_mean_over_tickets_with_a_t_interval():
    from ticketx.stats import t975
    from ticketx.study.curves import epoch_points

    rows = [_history_row("search", w, 0.2, s, 0, e, acc)
            for w, s, e, acc in [(1, 0, 1, 0.5), (1, 1, 1, 0.7), (1, 0, 2, 0.8), (1, 1, 2, 0.8), (4, 0, 1, 0.9), (4, 1, 1, 0.6)]]
    rows.append(_history_row("search", 1, 0.2, 0, 1, 1, 0.1))  # a pruned round: not the dense network, left out
    _, pts = epoch_points(rows, "search")
    by = {(p[_column("width")], p["epoch"]): p for p in pts}
    assert set(by) == {(1, 1.0), (1, 2.0), (4, 1.0)}
    p = by[1, 1.0]
    half = t975(1) * statistics.stdev([0.5, 0.7]) / math.sqrt(2)
    assert p["test_acc"] == pytest.approx(0.6) and p["tickets"] == 2 and p["retrains"] == 2
    assert p["test_acc_low"] == pytest.approx(0.6 - half) and p["test_acc_high"] == pytest.approx(0.6 + half)
    assert by[1, 2.0]["test_acc_low"] == pytest.approx(0.8)  # no spread: a zero-width interval
    transfer = [_history_row("transfer", 1, 0.0, s, 3, e, 0.9) for s in (0, 1) for e in (1, 2)]
    _, tp = epoch_points(transfer, "transfer")
    assert [(p["round"], p["epoch"]) for p in tp] == [(3, 1.0), (3, 2.0)]  # every transferred round, not only 0


def test_epoch_plots_write_a_png_and_its_csv_only_when_widths_or_noise_vary(tmp_path):
    from ticketx.study.curves import epoch_plots

    rows = [_history_row("search", w, n, s, 0, e, 0.5 + 0.1 * s) for w in (1, 4) for n in (0.0, 0.2) for s in (0, 1)
            for e in (1, 2, 3)]
    [png] = epoch_plots(rows, tmp_path)
    assert png.name == "epoch-wise-search.png" and png.stat().st_size > 0
    points = list(csv.DictReader(open(png.with_suffix(".csv"))))
    assert len(points) == 2 * 2 * 3  # widths x noise levels x epochs
    flat = [_history_row("search", 1, 0.0, s, 0, e, 0.5) for s in (0, 1) for e in (1, 2)]
    assert epoch_plots(flat, tmp_path / "flat") == []  # one width, clean labels: nothing to compare


def test_nearest_count_is_on_a_log_scale_and_never_the_dense_round():
    from ticketx.ticket import nearest_count

    kept = [10_000, 1000, 400, 100]
    assert nearest_count(kept, 220) == 2  # sqrt(400 x 100) = 200 < 220; by difference 100 would be nearer
    assert nearest_count(kept, 180) == 3
    assert nearest_count(kept, 50_000) == 1  # the dense network (round 0) is not a ticket
    assert nearest_count(kept, 200) == 2  # a tie: the earlier round
    with pytest.raises(UsageError, match="no pruned round"):
        nearest_count([10_000], 10)


def test_a_transfer_at_weights_picks_the_round_nearest_the_count(digits_ticket):
    from ticketx import masks as M
    from ticketx import ticket as ticketfile

    t = ticketfile.load(digits_ticket)
    kept = [t.kept(r) for r in range(t.num_rounds + 1)]
    assert kept[0] == t.num_weights and kept[2] == M.count(t.mask(2))[0] and kept[0] > kept[1] > kept[2]
    for r in (1, 2):
        plan = resolve_transfer(digits_ticket, TransferSpec(target="digits[5-9]", weights=kept[r] + 3))
        assert plan.rounds == (r,)
    with pytest.raises(ValueError, match="only one of"):
        TransferSpec(target="digits[5-9]", weights=1000, density=0.5)


def test_transfer_weights_in_the_cli(digits_ticket, tmp_path, cli):
    code, out, err = cli("transfer", digits_ticket, "--to", "digits[5-9]", "--weights", "1000", "--round", "1",
                         "--epochs", "1", "--out", tmp_path / "t")
    assert code == 2 and "only one of --round, --density, --weights and --rounds" in err and "Traceback" not in err
    assert not (tmp_path / "t").exists()


# ---- a width study with weights points ---------------------------------------------------------

STUDY = """
name: tiny-weights
model: lenet_300_100
image_size: 8
deterministic: true
cpu_threads: 1
width: [0.5, 1]
train: {{length: 2ep, lr: 0.005, batch_size: 60}}
search:
  label_noise: [0.2]
  prune: {{rounds: 2, rate: 0.5, scope: layerwise, rewind: 0}}
  seeds: [0, 1]
transfer:
  rounds: [1]
  {weights}
  seeds: [0]
  baselines: [dense]
  own_ticket: false
  head_dense: true
sources: ['digits[0-4]']
targets: ['digits[5-9]']
"""


def _study(tmp_path: Path, weights: str = "weights: [10000]") -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(weights=weights))
    return path


def _kept(study) -> dict[float, list[float]]:
    from ticketx.study.axes.point import round_weights
    from ticketx.study.cells import SearchCell

    return {c.find.width: round_weights(study, c.find) for c in study.cells if isinstance(c, SearchCell)}


def test_weights_points_make_cells_and_weights_within_leaves_out_far_tickets(tmp_path):
    from ticketx.study import load_study
    from ticketx.study.cells import TransferCell

    study = load_study(_study(tmp_path))
    kept = _kept(study)
    assert kept[1.0][1] > 2 * kept[0.5][1]  # equal density is not equal size
    at = [c for c in study.cells if isinstance(c, TransferCell) and c.transfer.weights is not None]
    assert len(at) == 2 * 2 and all(c.info["at_weights"] == 10000 and "-w10000-" in c.id for c in at)  # widths x seeds
    ratio = {w: min(max(k / 10000, 10000 / k) for k in ks[1:]) for w, ks in kept.items()}
    narrow = load_study(_study(tmp_path, "weights: [10000]\n  weights_within: 1.2"))
    left = {c.info[_column("width")] for c in narrow.cells if isinstance(c, TransferCell) and c.transfer.weights}
    assert left == {w for w, r in ratio.items() if r <= 1.2} and left != {0.5, 1.0}
    for bad, msg in (("weights: [0]", "at least 1"), ("weights: [2.5]", "whole number"),
                     ("weights_within: 1.5", "goes with transfer.weights"), ("weights: [100]\n  weights_within: 0.5", "at least 1")):
        with pytest.raises(UsageError, match=msg) as err:
            load_study(_study(tmp_path, bad))
        assert "\n" not in str(err.value) and "transfer.weights" in str(err.value)


def test_validate_prints_the_images_to_train(tmp_path, cli):
    path = _study(tmp_path)
    code, out, err = cli("study", "validate", path)
    assert code == 0, err
    counts = json.loads(out.strip().splitlines()[-1])
    # digits has 1438 training images; a 5-class subset, half: 719 -> 11 steps of 60 per epoch, 2 epochs
    per = 2 * (719 // 60) * 60
    searches = counts["search"] * 3 * per  # 3 rounds each, from the initialisation (rewind 0)
    networks_in_transfers = counts["networks"] - counts["search"] * 3
    assert counts["images"] == searches + networks_in_transfers * per
    assert "images to train: " in err and f"{counts['images']:.3g}" in err


def test_a_weights_study_end_to_end(tmp_path):
    from ticketx import ticket as ticketfile
    from ticketx.study import load_study
    from ticketx.study.results import report
    from ticketx.study.runner import cell_dir
    from ticketx.study.worker import run_study

    study = load_study(_study(tmp_path))
    out = tmp_path / "out"
    run_study(study, out, device="cpu")
    written = report(out)
    summary = list(csv.DictReader(open(out / "summary.csv")))
    wcol = _column("width")
    at = {r[wcol]: r for r in summary if r["at_weights"] == "10000"}
    assert set(at) == {"0.5", "1.0"} and {r["at_weights"] for r in summary} == {"", "10000"}
    kept = _kept(study)
    from ticketx.ticket import nearest_count

    for w, r in at.items():  # each ticket at the round nearest 10,000, recorded with its actual count
        want = nearest_count([int(k) for k in kept[float(w)]], 10000)
        assert int(r["round"]) == want and float(r["ticket_weights"]) == kept[float(w)][want]
    assert at["0.5"]["round"] != at["1.0"]["round"]  # equal weights: different rounds, not equal density
    source = next(c for c in study.cells if c.kind == "search" and c.info["role"] == "source")
    t = ticketfile.load(cell_dir(out, source) / "ticket.pt")
    assert [rec["weights"] for rec in t.rounds] == [t.kept(r) for r in range(3)]  # the search records its counts
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert all(r["weights"] != "" and int(r["weights"]) > 0 for r in rows)
    # what `study validate` counts is what trained: a weights point at a round point's round trains nothing new
    from ticketx.study import count

    assert len({r["run_id"] for r in rows}) == count(study.cells)["networks"]
    assert any(c.networks == 0 for c in study.cells if c.kind == "transfer" and c.transfer.weights)
    widths = list(csv.DictReader(open(out / "widths.csv")))
    [eq] = [r for r in widths if r["at_weights"] == "10000"]
    assert (eq["wider"], eq["narrower"]) == ("1.0", "0.5") and eq["wider_tickets"] == eq["narrower_tickets"] == "2"
    assert eq["wider_round"] == at["1.0"]["round"] and float(eq["difference"]) == pytest.approx(
        float(at["1.0"]["ticket_acc"]) - float(at["0.5"]["ticket_acc"]))
    assert eq["low"] != "" and float(eq["low"]) <= float(eq["difference"]) <= float(eq["high"])
    names = {p.name for p in written["plots"]}
    assert {"epoch-wise-search.png", "epoch-wise-transfer.png", "equal-weights-transfer.png"} <= names
    epochs = list(csv.DictReader(open(out / "plots" / "epoch-wise-search.csv")))
    assert sorted({float(r["epoch"]) for r in epochs}) == [1.0, 2.0]  # eval_every 1ep: a point per epoch
    assert all(r["tickets"] == "2" for r in epochs)
