"""IMP end to end on the embedded data set: densities per round, resume/skip, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_find_spec
from ticketx import masks as M
from ticketx import ticket as ticketfile
from ticketx.errors import UsageError
from ticketx.search import find


def test_ticket_contents(digits_ticket):
    t = ticketfile.load(digits_ticket)
    m = t.meta
    assert m["model"] == "lenet_300_100" and m["data"] == "digits[0-4]" and m["num_classes"] == 5
    assert m["classes"] == ["0", "1", "2", "3", "4"] and m["image_size"] == 8 and m["channels"] == 1
    assert [r["round"] for r in t.rounds] == [0, 1, 2]
    for r in (1, 2):
        for name, d in M.layer_densities(t.mask(r)).items():  # layerwise: every layer 0.8^r
            n = t.mask(r)[name].numel()
            assert abs(d * n - 0.8**r * n) <= r, (r, name, d)
        assert M.is_subset(t.mask(r), t.mask(r - 1))
    assert all(0 <= r["test_acc"] <= 1 for r in t.rounds)
    assert m["train"]["optimizer"] == "adam" and m["prune"]["rate"] == 0.2
    assert m["versions"]["torch"] and m["format_version"] if "format_version" in m else True
    # rewind '0' = the original initialisation: the rewind weights are untrained
    assert m["rewind_step"] == 0
    raw = torch.load(digits_ticket, weights_only=True)
    assert raw["format"] == "ticketx-ticket" and raw["format_version"] == 2


def test_global_scope_overall_density(tmp_path):
    out = tmp_path / "g.pt"
    t = find(tiny_find_spec(prune=dict(scope="global", rounds=2)), out, device="cpu")
    kept, total = M.count(t.mask(2))
    assert abs(kept - 0.64 * total) <= 2
    assert not (tmp_path / "g.pt.work").exists()


def test_late_rewinding_stores_weights_after_training_started(tmp_path):
    t = find(tiny_find_spec(prune=dict(rounds=1, rewind="3it")), tmp_path / "late.pt", device="cpu")
    assert t.meta["rewind_step"] == 3
    t0 = find(tiny_find_spec(prune=dict(rounds=1, rewind="0")), tmp_path / "early.pt", device="cpu")
    name = t.names[0]
    assert not torch.equal(t.rewind[name], t0.rewind[name])  # 3 steps of training apart


def test_rerun_is_skipped_and_other_settings_refused(digits_ticket, monkeypatch):
    import ticketx.train

    monkeypatch.setattr(ticketx.train, "train", lambda *a, **k: pytest.fail("trained again"))
    again = find(tiny_find_spec(), digits_ticket, device="cpu")
    assert again.meta["fingerprint"] == ticketfile.load(digits_ticket).meta["fingerprint"]
    with pytest.raises(UsageError, match="already exists"):
        find(tiny_find_spec(seed=5), digits_ticket, device="cpu")


def test_resume_after_interruption_matches_uninterrupted(tmp_path, monkeypatch):
    import ticketx.train
    from conftest import each_run, real_train_one

    spec = tiny_find_spec(deterministic=True, train=dict(length="3ep"))
    ref = find(spec, tmp_path / "ref.pt", device="cpu")
    real_train, calls = real_train_one(), {"n": 0}

    def flaky(run, recipe, reporter):
        calls["n"] += 1
        if calls["n"] == 2:  # round 1 crashes
            raise KeyboardInterrupt
        return real_train(run, recipe, reporter)

    monkeypatch.setattr(ticketx.train, "train", each_run(flaky))
    with pytest.raises(KeyboardInterrupt):
        find(spec, tmp_path / "b.pt", device="cpu")
    assert (tmp_path / "b.pt.work" / "round_00" / "result.pt").exists() and not (tmp_path / "b.pt").exists()
    t = find(spec, tmp_path / "b.pt", device="cpu")
    assert calls["n"] == 4  # round 0 was not retrained
    for r in range(3):
        assert all(torch.equal(t.mask(r)[n], ref.mask(r)[n]) for n in t.names)
        assert t.rounds[r]["test_acc"] == ref.rounds[r]["test_acc"]


def test_cli_find_and_inspect(tmp_path, cli):
    out = tmp_path / "ticketfile.pt"
    code, stdout, err = cli("find", "--data", "digits", "--model", "lenet_300_100", "--rounds", "2", "--epochs", "1",
                            "--image-size", "8", "--out", out)
    assert code == 0, err
    assert stdout.strip() == str(out) and out.exists()
    assert "round" in err and "ticket written" in err
    code, stdout, err = cli("inspect", out)
    assert code == 0, err
    assert "80.00" in err or "0.8000" in err
    assert "0.6400" in err
    code, stdout, err = cli("inspect", out, "--json")
    meta = json.loads(stdout)
    assert [round(r["density"], 2) for r in meta["rounds"]] == [1.0, 0.8, 0.64]


def test_cli_lists(cli):
    code, _, err = cli("datasets")
    assert code == 0 and "digits" in err and "cifar10" in err and "places365" in err
    code, _, err = cli("models")
    assert code == 0 and "lenet_300_100" in err and "resnet20" in err and "266,200" in err
