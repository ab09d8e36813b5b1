"""Pruning invariants (open_lth's tests, ported): right fraction, exactly k, masks only shrink,
kept-dense layers untouched, deterministic ties."""

import pytest
import torch

from ticketx import masks as M
from ticketx import pruning
from ticketx.errors import UsageError


def _weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(8, 3, 3, 3, generator=g),
        "fc1.weight": torch.randn(50, 72, generator=g) * 0.1,
        "fc2.weight": torch.randn(10, 50, generator=g),
    }


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_prunes_exactly_k_of_remaining(scope):
    w = _weights()
    mask = M.ones_like(w)
    kept0, total = M.count(mask)
    new = pruning.magnitude(w, mask, 0.2, scope=scope)
    kept1, _ = M.count(new)
    if scope == "global":
        assert kept0 - kept1 == round(0.2 * kept0)
    else:
        for n in w:
            assert int(mask[n].sum() - new[n].sum()) == round(0.2 * mask[n].numel())
    assert M.is_subset(new, mask)


def test_rounds_compound_to_point_eight_powers():
    w = _weights()
    mask = M.ones_like(w)
    total = M.count(mask)[1]
    for r in range(1, 6):
        mask = pruning.magnitude(w, mask, 0.2, scope="layerwise")
        for n, m in mask.items():
            assert abs(int(m.sum()) - 0.8**r * m.numel()) <= r  # one weight of rounding per round
        assert abs(M.density(mask) - 0.8**r) < 3 * r / total + 1e-9


def test_masks_only_shrink_even_when_pruned_weights_grow():
    w = _weights()
    mask = M.ones_like(w)
    m1 = pruning.magnitude(w, mask, 0.5)
    # pruned weights become huge: they must stay pruned
    w2 = {n: torch.where(m1[n], w[n], torch.full_like(w[n], 100.0)) for n in w}
    m2 = pruning.magnitude(w2, m1, 0.5)
    assert M.is_subset(m2, m1)
    assert M.count(m2)[0] == M.count(m1)[0] - round(0.5 * M.count(m1)[0])


def test_smallest_magnitudes_are_the_ones_removed():
    w = {"a": torch.tensor([[0.5, -0.1, 2.0, -3.0, 0.05]])}
    new = pruning.magnitude(w, M.ones_like(w), 0.4)
    assert new["a"].tolist() == [[True, False, True, True, False]]


def test_ties_broken_deterministically_by_position():
    w = {"a": torch.ones(10), "b": torch.ones(10)}
    new = pruning.magnitude(w, M.ones_like(w), 0.3)
    # the 6 lowest flat indices of the concatenation go first
    assert new["a"].tolist() == [False] * 6 + [True] * 4
    assert new["b"].all()
    again = pruning.magnitude(w, M.ones_like(w), 0.3)
    assert all(torch.equal(new[n], again[n]) for n in w)


def test_keep_dense_untouched_and_head_rate():
    w = _weights()
    mask = M.ones_like(w)
    new = pruning.magnitude(w, mask, 0.2, scope="global", head="fc2.weight", head_rate=0.1, keep_dense=["conv.weight"])
    assert new["conv.weight"].all()
    assert int((~new["fc2.weight"]).sum()) == round(0.1 * 500)
    assert int((~new["fc1.weight"]).sum()) == round(0.2 * 3600)


def test_global_scope_uses_one_threshold():
    w = _weights()
    new = pruning.magnitude(w, M.ones_like(w), 0.3, scope="global")
    kept = torch.cat([w[n].abs()[new[n]] for n in w])
    gone = torch.cat([w[n].abs()[~new[n]] for n in w])
    assert gone.max() <= kept.min()
    # fc1 has small weights, so global pruning takes nearly all 30% from it
    d = M.layer_densities(new)
    assert d["fc1.weight"] < 0.66 and d["conv.weight"] > 0.95


def test_collapse_is_reported():
    w = {"a": torch.randn(4), "b": torch.randn(4) * 100}
    mask = M.ones_like(w)
    for _ in range(10):
        mask = pruning.magnitude(w, mask, 0.5)
    assert "a" in M.collapsed(mask)


def test_random_like_matches_per_layer_counts():
    w = _weights()
    ticket = pruning.magnitude(w, M.ones_like(w), 0.7, scope="global")
    rnd = pruning.random_like(ticket, torch.Generator().manual_seed(1))
    for n in ticket:
        assert int(rnd[n].sum()) == int(ticket[n].sum())
    assert not all(torch.equal(rnd[n], ticket[n]) for n in ticket)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_bad_rates_rejected(rate):
    w = _weights()
    with pytest.raises(UsageError):
        pruning.magnitude(w, M.ones_like(w), rate)


def test_unknown_keep_dense_rejected():
    w = _weights()
    with pytest.raises(UsageError, match="nope"):
        pruning.magnitude(w, M.ones_like(w), 0.2, keep_dense=["nope"])


# ---- per-layer-kind rates (Frankle & Carbin 2019's Conv-2/4/6 schedule) ----

def test_rates_by_kind_and_by_name_each_group_at_its_own_rate():
    mask = {"conv.weight": torch.ones(8, 3, 3, 3, dtype=torch.bool), "fc.weight": torch.ones(20, 50, dtype=torch.bool),
            "out.weight": torch.ones(10, 20, dtype=torch.bool)}
    scores = {n: torch.rand(m.shape, generator=torch.Generator().manual_seed(1)) for n, m in mask.items()}
    for scope in ("layerwise", "global"):
        new = pruning.prune(scores, mask, 0.5, scope=scope, head="out.weight", head_rate=0.1,
                            rates={"conv": 0.1, "linear": 0.2})
        assert int(new["conv.weight"].sum()) == 216 - round(0.1 * 216)
        assert int(new["fc.weight"].sum()) == 1000 - 200
        assert int(new["out.weight"].sum()) == 200 - 20  # head_rate over its kind's rate
    by_name = pruning.prune(scores, mask, 0.5, rates={"fc.weight": 0.3})
    assert int(by_name["fc.weight"].sum()) == 700
    # conv and out share the rate 0.5: one global threshold over the two
    assert int(by_name["conv.weight"].sum()) + int(by_name["out.weight"].sum()) == 416 - round(0.5 * 416)
    with pytest.raises(UsageError):
        pruning.prune(scores, mask, 0.5, rates={"conv": 1.0})


def test_a_conv2_find_with_the_papers_schedule_has_its_per_layer_densities(tmp_path):
    """Conv-2, schedule 'paper' (conv 10%, fc 20%, output 10% per round, layer by layer), 3 rounds:
    every layer's density is (1 - rate of its kind)^3 within one weight."""
    from ticketx import ticket as ticketfile
    from ticketx.search import find
    from ticketx.settings import resolve_search

    spec = resolve_search("digits[0-4]", "conv2", train={"length": "3it", "batch_size": 30},
                          prune={"rounds": 3, "schedule": "paper"}, image_size=16, deterministic=True)
    assert spec.prune.rates == {"conv": 0.1, "linear": 0.2} and spec.prune.head_rate == 0.1
    assert spec.prune.scope == "layerwise"
    find(spec, tmp_path / "c2.pt", device="cpu")
    t = ticketfile.load(tmp_path / "c2.pt")
    assert t.meta["prune"]["rates"] == {"conv": 0.1, "linear": 0.2}  # recorded in the ticket
    mask = t.mask(3)
    head = t.meta["head"]
    for name, m in mask.items():
        rate = 0.1 if name == head else (0.1 if m.dim() > 2 else 0.2)
        assert abs(int(m.sum()) - m.numel() * (1 - rate) ** 3) <= 1, (name, int(m.sum()), m.numel())
    # given explicitly, a rate wins over the preset
    own = resolve_search("digits[0-4]", "conv2", prune={"schedule": "paper", "rates": "conv=0.3"})
    assert own.prune.rates == {"conv": 0.3}
    with pytest.raises(UsageError, match="no paper pruning schedule"):
        resolve_search("digits", "resnet20", prune={"schedule": "paper"})
