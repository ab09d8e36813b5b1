"""Retraining modes (Renda, Frankle & Carbin, ICLR 2020): lr-rewind and finetune differ from weight
rewinding only in what they are defined to. Observed from outside, as tests/test_rewind.py does: a
forward pre-hook sees the network before every training step, a wrapped Stepper sees each step's lr."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_find_spec
from ticketx import ticket as ticketfile

K, TOTAL = 3, 8  # rewind step, steps of training


class Seen:
    """Per training step: the state before it (train mode) and its lr; per eval: the state evaluated."""

    def __init__(self, root_type: type) -> None:
        self.root_type, self.train, self.eval, self.lrs = root_type, [], [], []

    def __call__(self, module: nn.Module, args) -> None:
        if type(module) is not self.root_type:
            return
        state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        if module.training and torch.is_grad_enabled():
            self.train.append(state)
        elif not module.training and (not self.eval or not all(torch.equal(state[k], self.eval[-1][k]) for k in state)):
            self.eval.append(state)  # one per evaluation pass (the state after the last step)


def _search(tmp_path, monkeypatch, mode: str):
    from ticketx import train as TR
    from ticketx.models import build_model
    from ticketx.search import find

    seen = Seen(type(build_model("lenet_300_100", 5, 1, 8)))
    handle = nn.modules.module.register_module_forward_pre_hook(seen)
    real = TR.Stepper.__call__

    def stepper(self, x, y, lr=None):
        seen.lrs.append(lr)
        return real(self, x, y, lr)

    monkeypatch.setattr(TR.Stepper, "__call__", stepper)
    try:
        spec = tiny_find_spec(deterministic=True, prune=dict(rounds=2, rewind=f"{K}it", retrain=mode),
                              train=dict(length=f"{TOTAL}it", milestones=["6it"], gamma=0.1, eval_every=f"{TOTAL}it"))
        t = find(spec, tmp_path / f"{mode}.pt", device="cpu")
    finally:
        handle.remove()
        monkeypatch.undo()
    return t, seen, spec


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    out = {m: _search(tmp_path_factory.mktemp(m), mp, m) for m in ("rewind", "lr-rewind", "finetune")}
    mp.undo()
    return out


def test_every_mode_trains_the_same_steps_from_the_same_dense_run(searches):
    base, seen, _ = searches["rewind"]
    for mode, (t, s, spec) in searches.items():
        assert len(s.train) == TOTAL + 2 * (TOTAL - K), mode  # round 0: 0..T, each round: k..T
        assert all(torch.equal(s.train[i][n], seen.train[i][n]) for i in range(TOTAL) for n in seen.train[i]), mode
        assert s.lrs[:TOTAL] == seen.lrs[:TOTAL], mode
        assert all(torch.equal(t.rewind[n], base.rewind[n]) for n in base.rewind), mode  # θ_k of round 0 in every mode
        assert torch.equal(t.mask(1)[t.names[0]], base.mask(1)[t.names[0]]), mode  # round 1 pruned from the same run
        assert t.meta["prune"]["retrain"] == mode
        assert (mode == "rewind") == ("retrain" not in spec.science()["prune"])  # rewind keeps the keys of before


def test_lr_rewind_and_finetune_start_from_the_previous_final_weights(searches):
    _, rew, _ = searches["rewind"]
    at_k = rew.train[K]
    for mode in ("rewind", "lr-rewind", "finetune"):
        t, s, _ = searches[mode]
        for r in (1, 2):
            first = TOTAL + (r - 1) * (TOTAL - K)
            start, mask = s.train[first], t.mask(r)
            final = s.eval[-3:][r - 1]  # round r-1's final weights (the evaluation at its last step)
            for n in t.names:
                keep = mask[n]
                want = at_k[n] if mode == "rewind" else final[n]
                assert torch.equal(start[n][keep], want[keep]), (mode, r, n)
                assert not start[n][~keep].any(), (mode, r, n)
            bias = "fc.bias"
            assert torch.equal(start[bias], (at_k if mode == "rewind" else final)[bias]), (mode, r)


def test_lr_schedules_of_the_modes(searches):
    _, rew, spec = searches["rewind"]
    schedule = rew.lrs[:TOTAL]
    final_lr = schedule[-1]
    assert final_lr == pytest.approx(spec.train.lr * 0.1)
    for mode in ("rewind", "lr-rewind", "finetune"):
        lrs = searches[mode][1].lrs[TOTAL:]
        want = ([final_lr] * (TOTAL - K) if mode == "finetune" else schedule[K:]) * 2
        assert lrs == want, mode


def test_retrain_option_is_on_find(cli):
    code, out, err = cli("find", "--help")
    assert code == 0 and "--retrain" in out + err
