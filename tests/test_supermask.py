"""Supermasks: learned over frozen weights (bit-identical afterwards), nested at exact densities, above
chance without any weight training, and an ordinary ticket that transfer, inspect and the probe read."""

from __future__ import annotations

import pytest
import torch

from ticketx import supermask as S


@pytest.fixture(scope="module")
def digits():
    from ticketx.data import load_data

    return load_data("digits[0-4]", image_size=8)


def test_shift_hits_the_expected_density():
    s = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3
    for k in (1, 100, 500, 999):
        assert float(torch.sigmoid(s + S.shift_for(s, k)).sum()) == pytest.approx(k, abs=1e-3)


@pytest.mark.parametrize("method", ["bernoulli", "edge-popup"])
@pytest.mark.parametrize("weights", ["init", "signed-constant"])
def test_supermask_learns_above_chance_with_frozen_weights(digits, method, weights):
    torch.set_num_threads(1)
    t = S.supermask_ticket(method, "lenet_300_100", digits, [0.5, 0.1], weights=weights, seed=0, steps=60)
    # the frozen weights, bit for bit: the initialisation find builds with this seed (or its signed constants)
    from ticketx.models import build_model, prunable_names

    torch.manual_seed(0)
    init = build_model("lenet_300_100", 5, 1, 8).state_dict()
    want = S.frozen_weights(init, prunable_names(build_model("lenet_300_100", 5, 1, 8)), weights)
    assert all(torch.equal(t.rewind[n], want[n]) for n in want)
    if weights == "signed-constant":
        w = t.rewind["fc_layers.0.weight"]
        assert w.abs().unique().numel() == 1 and torch.equal(torch.sign(w), torch.sign(init["fc_layers.0.weight"]))
    # nested, every layer at exactly round(density x its weights)
    m1, m2 = t.mask(1), t.mask(2)
    for n in t.names:
        assert int(m1[n].sum()) == round(0.5 * m1[n].numel()) and int(m2[n].sum()) == round(0.1 * m2[n].numel())
        assert not (m2[n] & ~m1[n]).any()
    # 5 classes: chance is 20%; the untrained dense network is near it, the supermasks far above
    assert t.rounds[1]["test_acc"] > 0.8 and t.rounds[2]["test_acc"] > 0.6, [r["test_acc"] for r in t.rounds]
    assert t.meta["found_by"] == "supermask" and t.meta["prune"]["method"] == method
    # the recorded accuracy is that of mask x rewind weights, no training, as anyone can recompute it
    assert S.untrained_accuracy(t, 2, digits) == pytest.approx(t.rounds[2]["test_acc"])


def test_a_supermask_ticket_is_an_ordinary_ticket(digits, tmp_path, cli):
    from ticketx import ticket as ticketfile
    from ticketx.baselines import BASELINES, Arm
    from ticketx.data import load_data
    from ticketx.settings.transfer import TransferSpec, resolve_transfer
    from ticketx.transfer import ticket_start

    torch.set_num_threads(1)
    out = tmp_path / "sm.pt"
    code, stdout, err = cli("supermask", "--data", "digits[0-4]", "--model", "lenet_300_100", "--image-size", "8",
                            "--densities", "0.5,0.2", "--mask-length", "30it", "--target", "digits[5-9]",
                            "--probe-length", "30it", "--device", "cpu", "--out", str(out))
    assert code == 0, err
    assert stdout.strip() == str(out) and "only a new output layer trained" in err
    t = ticketfile.load(out)
    ticketfile.check_meta(t)
    assert [p["round"] for p in t.meta["probe"]] == [1, 2] and all(p["test_acc"] > 0.2 for p in t.meta["probe"])
    plan = resolve_transfer(out, TransferSpec(target="digits[5-9]", baselines=["random-mask", "signed-constant"]))
    assert "supermask" in ticket_start(plan.ticket)
    prep = Arm(plan.ticket, 2, 5, seed=0).build(BASELINES["random-mask"])
    assert abs(sum(int(m.sum()) for m in prep.mask.values()) - sum(int(m.sum()) for m in t.mask(2).values())) < 60
    code, stdout, err = cli("inspect", str(out))
    assert code == 0 and "supermask over init weights" in err + stdout


def test_probe_trains_only_the_new_output_layer(digits):
    from ticketx.data import load_data

    torch.set_num_threads(1)
    t = S.supermask_ticket("edge-popup", "lenet_300_100", digits, [0.5], seed=1, steps=30)
    target = load_data("digits[5-9]", image_size=8)
    acc = S.probe(t, 1, target, steps=40)
    assert 0.3 < acc <= 1.0  # 5 classes: above chance from frozen random features
    assert S.METHODS["edge-popup"].paper.startswith("Ramanujan") and S.METHODS["bernoulli"].paper.startswith("Zhou")


def test_schedule_counts_are_the_counts_pruning_gives():
    """The shape-only schedule is exactly what layerwise pruning of any weights keeps, round by round."""
    from ticketx import pruning

    gen = torch.Generator().manual_seed(0)
    shapes = {"a.weight": (30, 20), "c.weight": (4, 3, 3, 3), "head.weight": (5, 30)}
    mask = {n: torch.ones(s, dtype=torch.bool) for n, s in shapes.items()}
    kw = dict(head="head.weight", head_rate=0.3, rates={"conv": 0.5})
    counts = pruning.schedule_counts(shapes, 4, 0.75, **kw)
    for r in range(1, 5):
        mask = pruning.magnitude({n: torch.randn(s, generator=gen) for n, s in shapes.items()}, mask, 0.75,
                                 scope="layerwise", **kw)
        assert {(n,): int(m.sum()) for n, m in mask.items()} == counts[r]
    assert counts[4][("c.weight",)] == 7 and counts[4][("head.weight",)] == 36  # 108 x 0.5^4, 150 x 0.7^4
    kept = pruning.schedule_counts(shapes, 2, 0.5, keep_dense=["c.weight"])
    assert kept[2][("c.weight",)] == 108 and kept[2][("a.weight",)] == 150
    whole = pruning.schedule_counts(shapes, 1, 0.5, scope="global")  # one group: only the total is known
    assert list(whole[1]) == [("a.weight", "c.weight", "head.weight")] and whole[1][list(whole[1])[0]] == 429


def test_imp_profile_gives_each_layer_the_schedule_count_and_nests(digits):
    """--profile imp: every layer at exactly the IMP schedule's count at the round nearest each density
    (the output layer at its head rate), nested, recorded; a ticket file as the profile gives its counts."""
    from ticketx import pruning
    from ticketx.models import build_model, head_name, prunable_names
    from ticketx.settings import resolve_prune

    torch.set_num_threads(1)
    prune = resolve_prune("lenet_300_100", {"rate": 0.75, "head_rate": 0.3})
    t = S.supermask_ticket("edge-popup", "lenet_300_100", digits, [0.26, 0.07, 0.02], seed=0, steps=20, profile="imp",
                           prune=prune)
    model = build_model("lenet_300_100", 5, 1, 8)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if n in prunable_names(model)}
    want = pruning.schedule_counts(shapes, 3, 0.75, head=head_name(model), head_rate=0.3)
    for r in (1, 2, 3):
        assert {(n,): int(m.sum()) for n, m in t.mask(r).items()} == want[r]
        if r > 1:
            assert all(not (t.mask(r)[n] & ~t.mask(r - 1)[n]).any() for n in t.names)
    # the output layer at its head rate: 500 x 0.7^3 (171 after each round's rounding), not 1.89% of 500 (9)
    assert int(t.mask(3)["fc.weight"].sum()) == 171
    assert t.meta["prune"]["profile"] == "imp" and t.meta["prune"]["profile_rounds"] == [1, 2, 3]
    assert t.rounds[3]["target_density"] == 0.02 and abs(t.rounds[3]["density"] - 0.0189) < 5e-4
    uniform = S.supermask_ticket("edge-popup", "lenet_300_100", digits, [0.26], seed=0, steps=5)
    assert uniform.meta["prune"]["profile"] == "uniform" and uniform.meta["fingerprint"] != t.meta["fingerprint"]
    # a ticket's own profile: the same counts again, whatever the densities asked, at its nearest rounds
    again = S.supermask_ticket("bernoulli", "lenet_300_100", digits, [0.2, 0.01], seed=1, steps=5, profile="ticket",
                               profile_ticket=t)
    assert again.meta["prune"]["profile_rounds"] == [1, 3]
    assert [{n: int(m.sum()) for n, m in again.mask(r).items()} for r in (1, 2)] == \
        [{n: int(m.sum()) for n, m in t.mask(r).items()} for r in (1, 3)]
    with pytest.raises(Exception, match="both nearest round 1"):
        S.supermask_ticket("edge-popup", "lenet_300_100", digits, [0.3, 0.25], seed=0, steps=5, profile="imp", prune=prune)
    with pytest.raises(Exception, match="layerwise"):
        S.profile_counts("imp", shapes, [0.5], prune={"scope": "global", "rate": 0.5})


def test_profile_options_on_the_command_line(tmp_path, cli):
    from ticketx import ticket as ticketfile

    torch.set_num_threads(1)
    out = tmp_path / "imp.pt"
    code, stdout, err = cli("supermask", "--data", "digits[0-4]", "--model", "lenet_300_100", "--image-size", "8",
                            "--densities", "0.3,0.1", "--mask-length", "10it", "--profile", "imp", "--prune-rate", "0.75",
                            "--head-rate", "0.3", "--device", "cpu", "--out", str(out))
    assert code == 0, err
    assert "imp layer profile" in err
    t = ticketfile.load(out)
    assert t.meta["prune"]["schedule"]["head_rate"] == 0.3 and t.meta["prune"]["profile_rounds"] == [1, 2]
    again = tmp_path / "again.pt"
    code, _, err = cli("supermask", "--data", "digits[0-4]", "--model", "lenet_300_100", "--image-size", "8",
                       "--densities", "0.1", "--mask-length", "10it", "--profile", str(out), "--device", "cpu",
                       "--out", str(again))
    assert code == 0, err
    a = ticketfile.load(again)
    assert a.meta["prune"]["profile_file"] == str(out) and a.meta["prune"]["profile_rounds"] == [2]
    assert {n: int(m.sum()) for n, m in a.mask(1).items()} == {n: int(m.sum()) for n, m in t.mask(2).items()}
    for args, message in ((["--prune-rate", "0.5"], "with --profile imp"),
                          (["--profile", str(tmp_path / "nope.pt")], "neither"),
                          (["--profile", "imp", "--prune-rate", "2"], "invalid option")):
        code, _, err = cli("supermask", "--data", "digits[0-4]", "--model", "lenet_300_100", "--image-size", "8",
                           "--densities", "0.3", "--device", "cpu", "--out", str(tmp_path / "x.pt"), *args)
        assert code != 0 and message in err and "Traceback" not in err, err
        assert not (tmp_path / "x.pt").exists()
