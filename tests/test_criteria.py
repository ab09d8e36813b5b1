"""criteria: each Zhou et al. scoring function on hand-made tensors, the registry, prune_round."""

from __future__ import annotations

import pytest
import torch

from ticketx import criteria as K
from ticketx import pruning
from ticketx.errors import UsageError

WI = torch.tensor([0.5, -0.1, 0.2, -0.4])
WF = torch.tensor([0.1, -0.3, -0.6, -0.4])


def test_registry_lists_the_six_criteria():
    assert set(K.CRITERIA) == {"magnitude", "large_init", "large_init_large_final", "magnitude_increase", "movement", "random"}
    assert K.DEFAULT == "magnitude"
    with pytest.raises(UsageError, match="did you mean 'movement'"):
        K.get("movment")
    with pytest.raises(UsageError, match="choose from"):
        K.prune_round("nope", {}, {}, {}, 0.2)


def test_hand_computed_scores():
    assert torch.allclose(K.CRITERIA["magnitude"](WI, WF), torch.tensor([0.1, 0.3, 0.6, 0.4]))
    assert torch.allclose(K.CRITERIA["large_init"](WI, WF), torch.tensor([0.5, 0.1, 0.2, 0.4]))
    assert torch.allclose(K.CRITERIA["magnitude_increase"](WI, WF), torch.tensor([-0.4, 0.2, 0.4, 0.0]))
    assert torch.allclose(K.CRITERIA["movement"](WI, WF), torch.tensor([0.4, 0.2, 0.8, 0.0]))
    # Ranks of |w_i| = [4, 1, 2, 3] / 4 and of |w_f| = [1, 2, 4, 3] / 4: min = [1, 1, 2, 3] / 4.
    lilf = K.CRITERIA["large_init_large_final"](WI, WF)
    assert torch.allclose(lilf, torch.tensor([0.25, 0.25, 0.5, 0.75], dtype=torch.float64))


def test_large_init_large_final_keeps_the_common_quadrant():
    # The weight large in both survives; weights large in only one are pruned first.
    wi = torch.tensor([0.9, 0.8, 0.01, 0.02, 0.5])
    wf = torch.tensor([0.9, 0.01, 0.8, 0.02, 0.5])
    mask = {"w": torch.ones(5, dtype=torch.bool)}
    keep = K.prune_round("large_init_large_final", {"w": wi}, {"w": wf}, mask, 0.6)["w"]
    assert keep.tolist() == [True, False, False, False, True]


def test_random_scores_depend_only_on_the_generator():
    a = K.CRITERIA["random"](WI, WF, torch.Generator().manual_seed(3))
    b = K.CRITERIA["random"](WI * 7, WF, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == WI.shape
    with pytest.raises(ValueError, match="generator"):
        K.CRITERIA["random"](WI, WF, None)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        K.CRITERIA["movement"](WI, WF[:3])


def _weights(seed: int):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(20, 10, generator=g), "b": torch.randn(5, 20, generator=g)}


@pytest.mark.parametrize("name", sorted(K.CRITERIA))
def test_prune_round_invariants(name):
    wi, wf = _weights(0), _weights(1)
    mask = {"a": torch.rand(20, 10, generator=torch.Generator().manual_seed(2)) < 0.7, "b": torch.ones(5, 20, dtype=torch.bool)}
    wf = {n: w * mask[n] for n, w in wf.items()}  # as IMP: pruned weights are zero after training
    new = K.prune_round(name, wi, wf, mask, 0.2, scope="layerwise", generator=torch.Generator().manual_seed(0))
    for n in mask:
        kept = int(mask[n].sum())
        assert int(new[n].sum()) == kept - round(0.2 * kept)  # exactly k pruned per layer
        assert not bool((new[n] & ~mask[n]).any())  # masks only shrink
    dense = K.prune_round(name, wi, wf, mask, 0.5, keep_dense=["b"], generator=torch.Generator().manual_seed(0))
    assert bool(dense["b"].all())


def test_prune_round_magnitude_matches_pruning_magnitude():
    wi, wf = _weights(0), _weights(1)
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in wf.items()}
    for scope in ("global", "layerwise"):
        a = K.prune_round("magnitude", wi, wf, mask, 0.3, scope=scope, head="b", head_rate=0.1)
        b = pruning.magnitude(wf, mask, 0.3, scope=scope, head="b", head_rate=0.1)
        assert all(torch.equal(a[n], b[n]) for n in mask)


def test_prune_round_movement_picks_the_movers():
    wi = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    wf = {"w": torch.tensor([1.0, 3.0, 0.9, -1.0])}  # moved 0, 2, 0.1, 2
    mask = {"w": torch.ones(4, dtype=torch.bool)}
    assert K.prune_round("movement", wi, wf, mask, 0.5)["w"].tolist() == [False, True, False, True]
    # magnitude_increase: |wf| - |wi| = 0, 2, -0.1, 0 -> drop the shrunk weight and the first tie.
    assert K.prune_round("magnitude_increase", wi, wf, mask, 0.5)["w"].tolist() == [False, True, False, True]


def test_scores_ignore_already_pruned_weights():
    # A pruned weight with a huge initial value must not shift the ranks of the survivors.
    wi = {"w": torch.tensor([100.0, 0.3, 0.2, 0.1])}
    wf = {"w": torch.tensor([0.0, 0.1, 0.3, 0.2])}
    mask = {"w": torch.tensor([False, True, True, True])}
    s = K.scores("large_init", wi, wf, mask)["w"]
    assert s[0] == 0.0
