"""Transfer: the transferred network is exactly mask * rewind weights; baselines match densities."""

from __future__ import annotations

import json

import pytest
import torch

from ticketx import masks as M
from ticketx import ticket as ticketfile
from ticketx.errors import TicketxError, UsageError
from ticketx.models import head_name
from ticketx.baselines import BASELINES, TICKET, Arm
from ticketx.settings import TrainSpec, TransferSpec, resolve_transfer
from ticketx.settings.transfer import check_compatible, ticket_train_spec as target_train_spec
from ticketx.transfer import transfer as run_transfer


def prepare(kind, ticket, round_, num_classes, seed, **kw):
    return Arm(ticket, round_, num_classes, seed, **kw).build(TICKET if kind == "ticket" else BASELINES[kind])


def transfer(path, spec, out, **kw):
    return run_transfer(resolve_transfer(path, spec), out, **kw)


def test_ticket_network_is_mask_times_rewind_bit_for_bit(digits_ticket):
    t = ticketfile.load(digits_ticket)
    for classes in (5, 7):  # the ticket's own classes (head kept on request) and others (new head)
        prep = prepare("ticket", t, 2, classes, seed=0, head="keep" if classes == 5 else "new")
        mask = t.mask(2)
        head = head_name(prep.model)
        params = dict(prep.model.named_parameters())
        state = prep.model.state_dict()
        for name, rewind in t.rewind.items():
            if classes != 5 and name.startswith(head.rsplit(".", 1)[0] + "."):
                continue
            expected = rewind * mask[name] if name in mask else rewind
            assert torch.equal(state[name], expected), name
        if classes == 5:
            assert not prep.head_reset
            assert torch.equal(params[head], t.rewind[head] * mask[head])
        else:
            assert prep.head_reset and params[head].shape[0] == 7
            # new head pruned at random to the ticket's head density
            d_ticket = float(mask[head].float().mean())
            assert abs(float(prep.mask[head].float().mean()) - d_ticket) < 0.01
            assert torch.count_nonzero(params[head][~prep.mask[head]]) == 0


def test_baselines_have_ticket_per_layer_density(digits_ticket):
    t = ticketfile.load(digits_ticket)
    ticket = prepare("ticket", t, 2, 5, seed=0)
    rm = prepare("random-mask", t, 2, 5, seed=0)
    ri = prepare("random-reinit", t, 2, 5, seed=0)
    dense = prepare("dense", t, 2, 5, seed=0)
    for name, m in ticket.mask.items():
        assert int(rm.mask[name].sum()) == int(m.sum())
        assert torch.equal(ri.mask[name], m)
    assert not all(torch.equal(rm.mask[n], ticket.mask[n]) for n in ticket.mask)
    # random-mask keeps the rewind weights; random-reinit has fresh ones
    p_rm, p_ri = dict(rm.model.named_parameters()), dict(ri.model.named_parameters())
    name = t.names[0]
    assert torch.equal(p_rm[name], t.rewind[name] * rm.mask[name])
    assert not torch.equal(p_ri[name], t.rewind[name] * ticket.mask[name])
    assert dense.mask is None
    assert torch.equal(dict(dense.model.named_parameters())[name], t.rewind[name])


def test_seeds_change_random_choices_not_the_ticket(digits_ticket):
    t = ticketfile.load(digits_ticket)
    a, b = prepare("random-mask", t, 2, 5, seed=0), prepare("random-mask", t, 2, 5, seed=1)
    assert not torch.equal(a.mask[t.names[0]], b.mask[t.names[0]])
    ta, tb = prepare("ticket", t, 2, 5, seed=0), prepare("ticket", t, 2, 5, seed=1)
    head = head_name(ta.model)
    assert all(torch.equal(ta.mask[n], tb.mask[n]) for n in t.names if n != head)  # the ticket's own layers
    assert not torch.equal(ta.mask[head], tb.mask[head])  # the new output layer's random mask follows the seed


def test_incompatible_request_lists_what_differs(digits_ticket):
    t = ticketfile.load(digits_ticket)
    with pytest.raises(UsageError) as err:
        check_compatible(t, "conv4", 32)
    assert "model" in str(err.value) and "image size" in str(err.value) and "lenet_300_100" in str(err.value)


def test_mismatched_tensors_rejected(digits_ticket, tmp_path):
    raw = torch.load(digits_ticket, weights_only=True)
    name = raw["names"][0]
    raw["rewind"][name] = torch.zeros(3, 3)
    raw["shapes"][name] = [3, 3]
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(TicketxError):
        ticketfile.load(tmp_path / "bad.pt")


def test_sgd_to_adam_switches_lr_unless_given(digits_ticket):
    t = ticketfile.load(digits_ticket)
    assert t.meta["train"]["optimizer"] == "adam"
    sgd = target_train_spec(t, {"optimizer": "sgd"})
    assert sgd.optimizer == "sgd" and sgd.lr == 0.1
    assert target_train_spec(t, {"optimizer": "sgd", "lr": 0.05}).lr == 0.05
    assert target_train_spec(t, {}).lr == t.meta["train"]["lr"]


def test_transfer_to_grayscale_to_rgb_and_other_classes(tmp_path):
    """A ticket on 3-channel inputs transfers to a grayscale target (replicated to 3 channels)."""
    from conftest import tiny_find_spec

    from ticketx.search import find

    src = tmp_path / "rgb.pt"
    find(tiny_find_spec(channels=3, prune=dict(rounds=1)), src, device="cpu")
    assert ticketfile.load(src).meta["channels"] == 3
    spec = TransferSpec(target="digits[3-9]", baselines=["dense"], train=TrainSpec(optimizer="adam", lr=1e-3, length="1ep"))
    result = transfer(src, spec, tmp_path / "out", device="cpu")
    assert {r["label"] for r in result["runs"]} == {"ticket", "dense"}
    assert all(r["head_reset"] for r in result["runs"])
    assert result["target_classes"] == [str(c) for c in range(3, 10)]


def test_transfer_is_idempotent_and_writes_json(digits_ticket, tmp_path, monkeypatch):
    spec = TransferSpec(target="digits[5-9]", rounds=[1, 2], seeds=[0, 1], train=TrainSpec(optimizer="adam", lr=1e-3, length="1ep"))
    result = transfer(digits_ticket, spec, tmp_path, device="cpu")
    assert len(result["runs"]) == 2 * 4 * 2
    data = json.loads((tmp_path / "result.json").read_text())
    row = data["summary"][1]
    assert row["round"] == 2 and set(row["arms"]) == {"random-mask", "random-reinit", "dense"}
    runs = {(r["label"], r["seed"]): r["test_acc"] for r in data["runs"] if r["for_round"] == 2}
    assert row["ticket"]["n"] == 2 and row["ticket"]["mean"] == pytest.approx((runs["ticket", 0] + runs["ticket", 1]) / 2)
    margin = row["arms"]["random-mask"]["margin"]  # paired by seed: mean of per-seed differences
    assert margin["mean"] == pytest.approx(sum(runs["ticket", k] - runs["random-mask", k] for k in (0, 1)) / 2)
    assert margin["low"] < margin["mean"] < margin["high"] or margin["low"] == margin["high"]
    assert data["resolution"] == pytest.approx(100 / data["test_images"])
    assert abs(row["density"] - 0.64) < 0.01
    assert data["versions"]["torch"] and data["config"]["train"]["optimizer"] == "adam"

    import ticketx.train

    monkeypatch.setattr(ticketx.train, "train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    again = transfer(digits_ticket, spec, tmp_path, device="cpu")
    assert [r["test_acc"] for r in again["runs"]] == [r["test_acc"] for r in result["runs"]]


def test_own_ticket_is_retrained_next_to_the_ticket(digits_ticket, tmp_path):
    from conftest import tiny_find_spec

    from ticketx.search import find

    own = tmp_path / "own.pt"
    find(tiny_find_spec(data="digits[5-9]"), own, device="cpu")
    spec = TransferSpec(target="digits[5-9]", baselines=[], own_ticket=str(own), train=TrainSpec(optimizer="adam", lr=1e-3, length="1ep"))
    result = transfer(digits_ticket, spec, tmp_path / "out", device="cpu")
    assert [r["label"] for r in result["runs"]] == ["ticket", "own-ticket"]
    assert result["summary"][0]["arms"]["own-ticket"]["margin"]["n"] == 1
    overlap = result["overlap"][0]
    assert overlap["round"] == 2 and 0 <= overlap["network"]["a_kept_by_b"] <= 1
    assert abs(overlap["network"]["chance_a_kept_by_b"] - overlap["network"]["density_b"]) < 1e-9


def test_cli_transfer_end_to_end(digits_ticket, tmp_path, cli):
    code, out, err = cli("transfer", digits_ticket, "--to", "digits[5-9]", "--round", "2", "--epochs", "1",
                         "--baselines", "random-mask,random-reinit,dense", "--out", tmp_path / "t")
    assert code == 0, err
    assert out.strip().endswith("result.json")
    assert "random mask" in err and "random reinit" in err and "dense" in err and "margin" in err
    result = json.loads((tmp_path / "t" / "result.json").read_text())
    assert {r["label"] for r in result["runs"]} == {"ticket", "random-mask", "random-reinit", "dense"}


def test_cli_transfer_sgd_from_adam(digits_ticket, tmp_path, cli):
    code, out, err = cli("transfer", digits_ticket, "--to", "digits[5-9]", "--optimizer", "sgd", "--epochs", "1",
                         "--baselines", "none", "--out", tmp_path / "t")
    assert code == 0, err
    result = json.loads((tmp_path / "t" / "result.json").read_text())
    assert result["config"]["train"]["optimizer"] == "sgd" and result["source"]["optimizer"] == "adam"


@pytest.mark.parametrize("args,phrase", [
    (["--round", "9"], "round 9"),
    (["--round", "1", "--density", "0.5"], "only one of"),
    (["--baselines", "random"], "baselines"),
    (["--model", "vgg19"], "does not fit"),
    (["--seeds", "a,b"], "--seeds"),
])
def test_cli_transfer_bad_input(digits_ticket, tmp_path, cli, args, phrase):
    code, out, err = cli("transfer", digits_ticket, "--to", "digits[5-9]", "--epochs", "1", "--out", tmp_path / "t", *args)
    assert code == 2, err
    assert phrase in err and "Traceback" not in err
    assert not (tmp_path / "t" / "result.json").exists()


def test_own_ticket_must_match_the_density_and_the_target(digits_ticket, tmp_path):
    from conftest import tiny_find_spec

    from ticketx.search import find

    other_rate = tmp_path / "own-rate.pt"
    find(tiny_find_spec(data="digits[5-9]", prune=dict(rounds=2, rate=0.5)), other_rate, device="cpu")
    spec = TransferSpec(target="digits[5-9]", rounds=[2], baselines=[], own_ticket=str(other_rate))
    with pytest.raises(UsageError, match="no round at 64.00% weights remaining"):
        resolve_transfer(digits_ticket, spec)
    other_data = tmp_path / "own-data.pt"
    find(tiny_find_spec(data="digits[0-2]"), other_data, device="cpu")
    with pytest.raises(UsageError, match="found on digits\\[0-2\\], not on the target digits\\[5-9\\]"):
        resolve_transfer(digits_ticket, TransferSpec(target="digits[5-9]", baselines=[], own_ticket=str(other_data)))


def test_keeping_the_output_layer_needs_the_same_class_names(digits_ticket, tmp_path):
    spec = TransferSpec(target="digits[5-9]", baselines=[], head="keep", train=TrainSpec(optimizer="adam", length="1ep"))
    with pytest.raises(UsageError, match="are not the target's"):
        transfer(digits_ticket, spec, tmp_path / "out", device="cpu")
    same = TransferSpec(target="digits[0-4]", baselines=[], head="keep", train=TrainSpec(optimizer="adam", length="1ep"))
    result = transfer(digits_ticket, same, tmp_path / "same", device="cpu")
    assert result["head"] == "keep" and not result["runs"][0]["head_reset"]


def test_dense_is_trained_once_per_seed_and_paired_with_every_round(digits_ticket, tmp_path, monkeypatch):
    import ticketx.train
    from conftest import each_run, real_train_one

    calls = []
    real = real_train_one()
    monkeypatch.setattr(ticketx.train, "train", each_run(lambda run, *a: (calls.append(run.label), real(run, *a))[1]))
    spec = TransferSpec(target="digits[5-9]", all_rounds=True, seeds=[0, 1], baselines=["dense"],
                        train=TrainSpec(optimizer="adam", lr=1e-3, length="1ep"))
    result = transfer(digits_ticket, spec, tmp_path, device="cpu")
    assert [r["round"] for r in result["summary"]] == [1, 2]  # 'all' = every pruned round
    assert sum("dense" in c for c in calls) == 2 and sum("ticket" in c for c in calls) == 4
    dense = {(r["for_round"], r["seed"]): r["test_acc"] for r in result["runs"] if r["label"] == "dense"}
    assert dense[1, 0] == dense[2, 0] and dense[1, 1] == dense[2, 1]
    for row in result["summary"]:  # each round's margin is over the same dense networks
        ticket = {r["seed"]: r["test_acc"] for r in result["runs"] if r["label"] == "ticket" and r["for_round"] == row["round"]}
        assert row["arms"]["dense"]["margin"]["mean"] == pytest.approx(sum(ticket[k] - dense[row["round"], k] for k in (0, 1)) / 2)


# ---- the output-layer rule: kept exactly on the ticket's own data set and classes ----

def test_head_rule_same_classes_kept_same_count_other_classes_or_data_new(digits_ticket):
    from ticketx.settings.transfer import head_rule

    t = ticketfile.load(digits_ticket)  # found on digits[0-4]
    own = list(t.meta["classes"])
    assert head_rule("auto", t, "digits[0-4]", own) == "keep"  # the source itself (or another optimizer on it)
    assert head_rule("auto", t, "digits[5-9]", [str(c) for c in range(5, 10)]) == "new"  # 5 classes, other names
    assert head_rule("auto", t, "digits[0-4]", own[::-1]) == "new"  # same names, other order
    assert head_rule("auto", t, "mnist[0-4]", own) == "new"  # same names, another data set
    assert head_rule("new", t, "digits[0-4]", own) == "new" and head_rule("keep", t, "digits[5-9]", own) == "keep"


def test_a_ticket_without_class_names_gets_a_new_output_layer(digits_ticket):
    from ticketx.settings.transfer import head_rule

    t = ticketfile.load(digits_ticket)
    classes = t.meta.pop("classes")
    assert head_rule("auto", t, "digits[0-4]", classes) == "new"


def test_auto_keeps_the_head_on_the_source_and_every_arm_says_which_it_had(digits_ticket, tmp_path):
    train = TrainSpec(optimizer="adam", lr=1e-3, length="1ep")
    own = TransferSpec(target="digits[0-4]", rounds=[2], seeds=[0], train=train)  # head: auto (the default)
    kept = transfer(digits_ticket, own, tmp_path / "kept", device="cpu")
    assert kept["heads"] == {"ticket": "keep"} and all(not r["head_reset"] for r in kept["runs"])
    assert {r["head"] for r in kept["runs"]} == {"kept"}
    assert "kept output layer" in _table_text(kept)
    new = transfer(digits_ticket, own.model_copy(update={"head": "new"}), tmp_path / "new", device="cpu")
    assert new["heads"] == {"ticket": "new"} and all(r["head_reset"] for r in new["runs"])
    keys = lambda res: {r["label"]: r["key"] for r in res["runs"]}  # noqa: E731
    assert all(keys(kept)[a] != keys(new)[a] for a in keys(kept))  # the rule is in every run's key
    other = transfer(digits_ticket, TransferSpec(target="digits[5-9]", rounds=[2], baselines=[], train=train),
                     tmp_path / "other", device="cpu")
    assert other["heads"] == {"ticket": "new"} and other["runs"][0]["head"] == "new"


def _table_text(result) -> str:
    from rich.console import Console

    from ticketx.report import transfer_table

    console = Console(record=True, width=300)
    console.print(transfer_table(result))
    return console.export_text()


@pytest.mark.parametrize("dense", [False, True])
def test_every_control_under_a_kept_head_has_the_tickets_output_layer(digits_ticket, dense):
    """random mask, random reinit, shuffle, dense under 'keep': each arm's output layer is the ticket's
    (its rewind weights; re-drawn only by random reinit), at the ticket's output-layer density (or dense)."""
    t = ticketfile.load(digits_ticket)
    ticket = Arm(t, 2, 5, seed=0, head="keep", head_dense=dense).build(TICKET)
    head = head_name(ticket.model)
    want = float(t.mask(2)[head].float().mean()) if not dense else 1.0
    for kind in ("random-mask", "random-reinit", "shuffle", "dense"):
        got = Arm(t, 2, 5, seed=0, head="keep", head_dense=dense).build(BASELINES[kind])
        w = dict(got.model.named_parameters())[head]
        if kind == "dense":
            assert got.mask is None and torch.equal(w, t.rewind[head])
            continue
        assert float(got.mask[head].float().mean()) == pytest.approx(want, abs=0.02)
        if kind != "random-reinit":
            assert torch.equal(w[got.mask[head]], t.rewind[head][got.mask[head]])


def test_random_reinit_gets_the_same_new_output_layer_as_the_ticket(digits_ticket):
    t = ticketfile.load(digits_ticket)
    ticket = Arm(t, 2, 7, seed=3).build(TICKET)
    reinit = Arm(t, 2, 7, seed=3).build(BASELINES["random-reinit"])
    head = head_name(ticket.model)
    bias = head.rsplit(".", 1)[0] + ".bias"
    pa, pb = dict(ticket.model.named_parameters()), dict(reinit.model.named_parameters())
    assert torch.equal(ticket.mask[head], reinit.mask[head])
    assert torch.equal(pa[head], pb[head]) and torch.equal(pa[bias], pb[bias])  # the same new output layer
    body = next(n for n in t.names if n != head)
    assert not torch.equal(pa[body], pb[body])  # a re-drawn body


def test_across_classes_the_own_ticket_keeps_its_output_layer_and_the_ticket_gets_a_new_one(digits_ticket, tmp_path):
    from conftest import tiny_find_spec

    from ticketx.search import find

    own = tmp_path / "own59.pt"
    find(tiny_find_spec(data="digits[5-9]"), own, device="cpu")
    train = TrainSpec(optimizer="adam", lr=1e-3, length="1ep")
    spec = TransferSpec(target="digits[5-9]", rounds=[2], baselines=["random-mask"], own_ticket=str(own), train=train)
    res = transfer(digits_ticket, spec, tmp_path / "auto", device="cpu")
    assert res["heads"] == {"ticket": "new", "own-ticket": "keep"}
    by = {r["label"]: r for r in res["runs"]}
    assert by["own-ticket"]["head"] == "kept" and not by["own-ticket"]["head_reset"]
    assert by["ticket"]["head"] == by["random-mask"]["head"] == "new"
    sym = transfer(digits_ticket, spec.model_copy(update={"head": "new"}), tmp_path / "new", device="cpu")
    assert sym["heads"] == {"ticket": "new", "own-ticket": "new"}  # --new-head: the symmetric comparison
