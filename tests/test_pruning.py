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
