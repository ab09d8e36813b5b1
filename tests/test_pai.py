"""pai: SNIP and GraSP against direct autograd, SynFlow's closed form and schedule, PaI tickets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ticketx import masks as M
from ticketx import pai as P
from ticketx.errors import UsageError


def _two_layer(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def _xy(seed: int = 1, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def test_registry():
    assert set(P.CRITERIA) == {"snip", "grasp", "synflow"}
    assert P.CRITERIA["synflow"].data_free and P.CRITERIA["synflow"].iterative
    with pytest.raises(UsageError, match="did you mean 'snip'"):
        P.get("snipp")


def test_snip_equals_mask_sensitivity_by_autograd():
    model = _two_layer()
    x, y = _xy()
    s = P.snip_scores(model, (x, y))
    # Lee et al.'s definition: |dL/dc| at c = 1 for the network with weights c * w.
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()
    c1 = torch.ones_like(w1, requires_grad=True)
    c2 = torch.ones_like(w2, requires_grad=True)
    h = torch.tanh(x @ (c1 * w1).T + model[0].bias.detach())
    loss = nn.functional.cross_entropy(h @ (c2 * w2).T + model[2].bias.detach(), y)
    g1, g2 = torch.autograd.grad(loss, [c1, c2])
    assert torch.allclose(s["0.weight"], g1.abs(), atol=1e-12)
    assert torch.allclose(s["2.weight"], g2.abs(), atol=1e-12)
    assert model[0].weight.grad is None  # the caller's model is untouched


def test_grasp_equals_minus_paper_score_by_explicit_hessian():
    model = _two_layer()
    x, y = _xy()
    T = 200.0
    s = P.grasp_scores(model, (x, y), temperature=T)
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()
    b1, b2 = model[0].bias.detach(), model[2].bias.detach()
    n1 = w1.numel()

    def loss(flat):
        a, b = flat[:n1].view_as(w1), flat[n1:].view_as(w2)
        return nn.functional.cross_entropy((torch.tanh(x @ a.T + b1) @ b.T + b2) / T, y)

    theta = torch.cat([w1.reshape(-1), w2.reshape(-1)])
    g = torch.autograd.functional.jacobian(loss, theta)
    H = torch.autograd.functional.hessian(loss, theta)
    paper = -theta * (H @ g)  # Wang et al.: S(-theta) = -theta ⊙ Hg, the largest are removed
    ours = torch.cat([s["0.weight"].reshape(-1), s["2.weight"].reshape(-1)])
    assert torch.allclose(ours, -paper, rtol=1e-8, atol=1e-18)
    assert ours.abs().max() > 0


def test_synflow_on_a_linear_network_equals_its_closed_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False))
    s = P.synflow_scores(model, (6,))
    A1, A2 = model[0].weight.detach().double().abs(), model[2].weight.detach().double().abs()
    # R = 1ᵀ A2 A1 1: dR/dA1[j,k] = Σ_i A2[i,j]; dR/dA2[i,j] = Σ_k A1[j,k].
    expect1 = A1 * A2.sum(0)[:, None]
    expect2 = A2 * A1.sum(1)[None, :]
    assert torch.allclose(s["0.weight"], expect1, rtol=1e-12)
    assert torch.allclose(s["2.weight"], expect2, rtol=1e-12)
    assert s["0.weight"].dtype == torch.float64
    assert bool((model[0].weight < 0).any())  # the caller's weights keep their signs


def test_synflow_schedule():
    assert P.synflow_schedule(1.0, 0.01, 2) == pytest.approx([0.1, 0.01])
    sched = P.synflow_schedule(0.5, 0.05, 100)
    assert len(sched) == 100 and sched[-1] == pytest.approx(0.05)
    assert all(b < a for a, b in zip(sched, sched[1:]))


def test_synflow_iterative_never_disconnects_a_layer():
    torch.manual_seed(0)
    # Layer sizes 20000 / 40000 / 1000 weights: at 1% kept, a one-shot global ranking may wipe
    # out the small layer; SynFlow's iterative flow conservation must not.
    model = nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 5))
    names = ["0.weight", "2.weight", "4.weight"]
    masks = P.prune_at_init("synflow", model, None, [0.1, 0.01], input_shape=(100,), iterations=10)
    total = sum(model.get_parameter(n).numel() for n in names)
    for d, m in zip([0.1, 0.01], masks):
        assert M.collapsed(m) == []
        assert M.count(m)[0] == round(d * total)
    assert M.is_subset(masks[1], masks[0])


@pytest.mark.parametrize("name", ["snip", "grasp"])
def test_one_shot_masks_are_nested_and_exact(name):
    model = _two_layer()
    masks = P.prune_at_init(name, model, [_xy(1), _xy(2)], [0.5, 0.2, 0.1])
    assert [M.count(m)[0] for m in masks] == [16, 6, 3]  # of 32 weights
    assert M.is_subset(masks[1], masks[0]) and M.is_subset(masks[2], masks[1])
    lw = P.prune_at_init(name, model, _xy(1), [0.5], scope="layerwise")[0]
    assert int(lw["0.weight"].sum()) == 10 and int(lw["2.weight"].sum()) == 6
    kd = P.prune_at_init(name, model, _xy(1), [0.5], keep_dense=["2.weight"])[0]
    assert bool(kd["2.weight"].all()) and M.count(kd)[0] == 16


def test_bad_densities():
    model = _two_layer()
    for bad in ([0.5, 0.5], [0.2, 0.5], [0.0], [], [1.5]):
        with pytest.raises(UsageError, match="densities"):
            P.prune_at_init("snip", model, _xy(), bad)
    with pytest.raises(UsageError, match="kept-dense"):
        P.prune_at_init("snip", model, _xy(), [0.1], keep_dense=["0.weight"])


def test_batch_norm_model_state_is_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 3
    for name in ("snip", "grasp", "synflow"):
        masks = P.prune_at_init(name, model, (x, y), [0.3], iterations=5)
        assert M.count(masks[0])[0] == round(0.3 * (4 * 27 + 3 * 144))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_pai_ticket_is_an_ordinary_ticket(tmp_path):
    from ticketx import ticket as ticketfile
    from ticketx.data import load_data
    from ticketx.models import build_model

    data = load_data("digits[0-4]", image_size=8)
    t = P.pai_ticket("snip", "lenet_300_100", data, [0.5, 0.2], seed=3, train={"length": "1ep"})
    path = tmp_path / "snip.pt"
    ticketfile.save(t, path)
    back = ticketfile.load(path)
    ticketfile.check_meta(back, path)
    ticketfile.check_architecture(back)
    assert back.num_rounds == 2
    assert [r["round"] for r in back.rounds] == [0, 1, 2]
    assert back.rounds[1]["density"] == pytest.approx(0.5, abs=1e-4)
    assert back.rounds[2]["density"] == pytest.approx(0.2, abs=1e-4)
    assert back.meta["prune"]["criterion"] == "snip" and back.meta["rewind_step"] == 0
    assert back.meta["train"]["length"] == "1ep"
    assert M.is_subset(back.mask(2), back.mask(1))
    # The rewind weights are the init `find` would start from with the same init seed.
    torch.manual_seed(3)
    ref = build_model("lenet_300_100", 5, 1, 8).state_dict()
    assert all(torch.equal(ref[k], back.rewind[k]) for k in ref)
    # Deterministic: the same call gives the same masks and fingerprint.
    again = P.pai_ticket("snip", "lenet_300_100", data, [0.5, 0.2], seed=3, train={"length": "1ep"})
    assert torch.equal(again.packed, t.packed) and again.meta["fingerprint"] == t.meta["fingerprint"]
    syn = P.pai_ticket("synflow", "lenet_300_100", data, [0.1], seed=3, iterations=10)
    assert syn.meta["prune"]["iterations"] == 10 and syn.meta["prune"]["samples_per_class"] is None
    assert syn.rounds[1]["collapsed"] == []
    # a one-shot ticket stores the ranking its masks were cut from (the exact inversion needs it)
    from ticketx.baselines import invert_problem
    from ticketx.sanity import invert_scores

    assert set(back.extras["scores"]) == set(back.names) and invert_problem(back) is None
    for n in back.names:  # every kept weight scored at least as high as every pruned one
        s, m = back.extras["scores"][n], back.mask(2)[n]
        if m.any() and (~m).any():
            assert float(s[m].min()) >= float(s[~m].max())
    inv = invert_scores(back.extras["scores"], back.mask(2))
    assert all(int(inv[n].sum()) == int(back.mask(2)[n].sum()) for n in back.names)
    assert "iterative" in invert_problem(syn) and not syn.extras
