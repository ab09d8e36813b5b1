"""Width and label noise through tickets and studies: the width in the ticket's metadata and back (old
tickets load at width 1), transfer and the own ticket checked against it, the width and noise axes
through the axis mechanism, and a tiny study with widths run end to end with its curves."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from conftest import tiny_find_spec

from ticketx import ticket as ticketfile
from ticketx.errors import TicketxError, UsageError
from ticketx.settings import TrainSpec, TransferSpec, resolve_transfer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def half_width(tmp_path_factory) -> Path:
    """A 1-round lenet_300_100 ticket at width 0.5 (150-50 hidden units) on digits[0-4], found under 20% label noise."""
    from ticketx.search import find

    out = tmp_path_factory.mktemp("width") / "half.pt"
    find(tiny_find_spec(width=0.5, prune=dict(rounds=1), train=dict(label_noise=0.2)), out, device="cpu")
    return out


def test_the_width_and_the_noise_are_in_the_ticket_and_its_network_is_built_at_that_width(half_width):
    from ticketx.settings.transfer import load_checked

    t = load_checked(half_width)
    assert t.meta["width"] == 0.5 and ticketfile.width_of(t.meta) == 0.5
    assert t.shapes["fc_layers.0.weight"] == (150, 64) and t.shapes["fc_layers.1.weight"] == (50, 150) and t.shapes["fc.weight"] == (5, 50)
    assert t.meta["train"]["label_noise"] == 0.2
    assert t.meta["label_noise"] == {"fraction": 0.2, "mode": "symmetric", "seed": t.meta["data_seed"],
                                     "flipped": t.meta["label_noise"]["flipped"], "examples": t.meta["label_noise"]["examples"]}
    assert 0.19 < t.meta["label_noise"]["flipped"] / t.meta["label_noise"]["examples"] < 0.21
    for r in t.rounds:  # every round measured its fit of the (noisy) training split
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["memorised"] <= 1


def test_a_ticket_without_a_width_is_width_1(digits_ticket, half_width, tmp_path):
    old = ticketfile.load(digits_ticket)
    assert "width" not in old.meta or old.meta["width"] == 1.0
    old.meta.pop("width", None)  # as written before widths existed
    ticketfile.check_architecture(old)
    assert ticketfile.width_of(old.meta) == 1.0
    half = ticketfile.load(half_width)
    half.meta.pop("width")  # the width is what makes its tensors fit
    with pytest.raises(TicketxError, match="does not match model"):
        ticketfile.check_architecture(half)


def test_transfer_checks_the_width_and_builds_every_arm_at_it(half_width):
    from ticketx.baselines import BASELINES, Arm

    with pytest.raises(UsageError, match="width: ticket 0.5 vs requested 1"):
        resolve_transfer(half_width, TransferSpec(target="digits[5-9]"), width=1)
    plan = resolve_transfer(half_width, TransferSpec(target="digits[5-9]"), width=0.5)
    assert plan.train.label_noise == 0  # the search's noise stays with its data: the target is clean
    t = plan.ticket
    for kind in ("random-mask", "random-reinit", "dense"):
        net = Arm(t, 1, 5, 0).build(BASELINES[kind]).model
        assert net.state_dict()["fc_layers.0.weight"].shape == (150, 64)


def test_an_own_ticket_of_another_width_is_refused(half_width, tmp_path):
    from ticketx.search import find

    own = tmp_path / "own.pt"
    find(tiny_find_spec(data="digits[5-9]", prune=dict(rounds=1)), own, device="cpu")  # width 1
    with pytest.raises(UsageError) as err:
        resolve_transfer(half_width, TransferSpec(target="digits[5-9]", baselines=[], own_ticket=str(own)))
    assert "width 1" in str(err.value) and "width 0.5" in str(err.value) and "\n" not in str(err.value)


def test_width_options_in_the_cli(tmp_path, cli):
    code, out, err = cli("find", "--data", "digits[0-4]", "--model", "lenet_300_100", "--image-size", "8", "--rounds", "1",
                         "--epochs", "1", "--width", "0.25", "--out", tmp_path / "q.pt")
    assert code == 0, err
    assert ticketfile.load(tmp_path / "q.pt").shapes["fc_layers.0.weight"] == (75, 64)
    code, out, err = cli("transfer", tmp_path / "q.pt", "--to", "digits[5-9]", "--width", "2", "--epochs", "1",
                         "--out", tmp_path / "t")
    assert code == 2 and "width: ticket 0.25 vs requested 2" in err
    code, out, err = cli("find", "--data", "digits[0-4]", "--model", "timm:resnet18", "--width", "2", "--out", tmp_path / "x.pt")
    assert code == 2 and "no width option" in err
    code, out, err = cli("pai", "--data", "digits[0-4]", "--model", "lenet_300_100", "--image-size", "8",
                         "--densities", "0.5", "--criterion", "snip", "--width", "0.5", "--out", tmp_path / "p.pt")
    assert code == 0, err
    p = ticketfile.load(tmp_path / "p.pt")
    assert p.meta["width"] == 0.5 and p.shapes["fc_layers.0.weight"] == (150, 64)


# ---- the axes -------------------------------------------------------------------------------------

STUDY = """
name: tiny-width
model: lenet_300_100
image_size: 8
deterministic: true
cpu_threads: 1
width: [0.5, 1]
train: {{length: 1ep, lr: 0.005}}
search:
  prune: {{rounds: 1, rate: 0.5, scope: layerwise, rewind: 0}}
  seeds: [0, 1]
{search}
transfer:
  rounds: all
  seeds: [0]
  baselines: [random-mask]
  own_ticket: {own}
  head_dense: true
{transfer}
sources: ['digits[0-4]']
targets: ['digits[5-9]']
expect:
  - name: wide-tickets-learn
    search_accuracy: 0.5
    widths: [1]
"""


def _study(tmp_path: Path, search: str = "", transfer: str = "", own: str = "false") -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(search=search, transfer=transfer, own=own))
    return path


def test_width_and_noise_axes_reach_the_cells_and_the_own_ticket(tmp_path):
    from ticketx.study import load_study
    from ticketx.study.cells import SearchCell, TransferCell

    study = load_study(_study(tmp_path, "  label_noise: [0, 0.2]", "  label_noise: [0.1]", own="true"))
    searches = [c for c in study.cells if isinstance(c, SearchCell)]
    sources = [c for c in searches if c.info["role"] == "source"]
    assert sorted((c.find.width, c.find.train.label_noise) for c in sources) == sorted(
        [(w, n) for w in (0.5, 1.0) for n in (0.0, 0.2)] * 2)
    assert sum("-w0.5-" in c.id for c in sources) == sum("-w1-" in c.id for c in sources) == 4
    own = [c for c in searches if c.info["role"] == "own"]
    assert {(c.find.width, c.find.train.label_noise, c.find.data) for c in own} == {
        (0.5, 0.1, "digits[5-9]"), (1.0, 0.1, "digits[5-9]")}  # own ticket: the source's width, the target's noise
    transfers = [c for c in study.cells if isinstance(c, TransferCell)]
    assert {c.transfer.train.label_noise for c in transfers} == {0.1}
    assert all(c.info["transfer_noise"] == 0.1 and c.info["width"] in (0.5, 1.0) for c in transfers)
    by_id = {c.id: c for c in searches}
    assert all(by_id[c.own_ticket].find.width == by_id[c.source].find.width for c in transfers)


def test_listing_width_1_changes_no_key(tmp_path):
    from ticketx.study import load_study

    plain = tmp_path / "plain"
    plain.mkdir()
    one = load_study(_study(plain)).cells
    text = _study(tmp_path).read_text().replace("width: [0.5, 1]\n", "width: 1\n")
    (tmp_path / "one.yaml").write_text(text)
    (tmp_path / "none.yaml").write_text(text.replace("width: 1\n", ""))
    listed, absent = load_study(tmp_path / "one.yaml").cells, load_study(tmp_path / "none.yaml").cells
    assert [c.key for c in listed] == [c.key for c in absent]
    assert len(one) > len(listed)


@pytest.mark.parametrize("extra,where,phrase", [
    ("width: [0, 1]", "width", "(0, 1024]"),
    ("search:\n  label_noise: [1.5]", "search.label_noise", "[0, 1)"),
])
def test_bad_axis_values_are_one_line_errors(tmp_path, extra, where, phrase):
    from ticketx.study import load_study

    text = _study(tmp_path).read_text().replace("width: [0.5, 1]\n", "")
    if extra.startswith("search"):
        text = text.replace("search:\n", extra + "\n", 1)
    else:
        text = text.replace("image_size: 8\n", f"image_size: 8\n{extra}\n")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        load_study(path)
    assert where in str(err.value) and phrase in str(err.value)


def test_a_model_without_widths_is_refused_in_a_study(tmp_path):
    from ticketx.study import load_study

    path = _study(tmp_path)
    path.write_text(path.read_text().replace("model: lenet_300_100", "model: [lenet_300_100, timm:resnet18]"))
    with pytest.raises(UsageError, match="width: timm:resnet18 has no width option"):
        load_study(path)


def test_a_tiny_width_study_end_to_end(tmp_path):
    from ticketx.study import load_study
    from ticketx.study.expect import evaluate
    from ticketx.study.results import report
    from ticketx.study.worker import run_study

    study = load_study(_study(tmp_path, "  label_noise: [0, 0.2]"))
    out = tmp_path / "out"
    run_study(study, out, device="cpu")
    written = report(out)
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["width"] for r in rows} == {"0.5", "1.0"} and {r["search_noise"] for r in rows} == {"0.0", "0.2"}
    assert all(r["train_acc"] != "" for r in rows)
    assert all((r["memorised"] != "") == (r["kind"] == "search" and r["search_noise"] == "0.2") for r in rows)
    names = {p.name for p in written["plots"]}
    for stem in ("double-descent-width-search", "double-descent-density-search", "memorisation-search",
                 "double-descent-width-transfer"):
        assert f"{stem}.png" in names and (out / "plots" / f"{stem}.csv").exists()
    curve = list(csv.DictReader(open(out / "plots" / "double-descent-width-search.csv")))
    assert len(curve) == 2 * 2 * 2  # widths x noise levels x rounds (0, 1)
    assert all(r["tickets"] == "2" and r["test_acc_low"] != "" for r in curve)  # intervals over the 2 search seeds
    summary = list(csv.DictReader(open(out / "summary.csv")))
    assert {(r["width"], r["search_noise"]) for r in summary} == {(w, n) for w in ("0.5", "1.0") for n in ("0.0", "0.2")}
    [claim] = evaluate(out, study.claims)
    assert claim.outcome.status == "pass" and "widths: 1.0" in claim.description
