"""Small contracts of the scientific core that mutation testing (scripts/mutation.py) found unstated.

Each test names the behaviour a one-token change would break without any other test noticing.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketx import masks as M
from ticketx import pruning


def test_dense_mask_is_bool_on_the_cpu_whatever_the_parameters():
    """Masks are bool tensors on the CPU (packing, `~`, boolean indexing), also for models built on
    the meta device or in half precision."""
    params = {"a": torch.empty(3, 4, device="meta", dtype=torch.float16), "b": torch.zeros(5, dtype=torch.float64)}
    mask = M.ones_like(params)
    for n, t in params.items():
        assert mask[n].dtype == torch.bool and mask[n].device.type == "cpu" and mask[n].shape == t.shape
        assert bool(mask[n].all())


def test_layer_densities_and_collapse():
    mask = {"a": torch.tensor([True, False, False, False]), "b": torch.zeros(2, 3, dtype=torch.bool),
            "c": torch.ones(5, dtype=torch.bool)}
    assert M.layer_densities(mask) == {"a": 0.25, "b": 0.0, "c": 1.0}
    assert M.collapsed(mask) == ["b"]
    assert M.count(mask) == (6, 15)
    assert M.density(mask) == 6 / 15
    assert M.density({}) == 1.0


def test_is_subset_is_about_kept_weights_only():
    old = {"a": torch.tensor([True, True, False])}
    assert M.is_subset({"a": torch.tensor([True, False, False])}, old)
    assert M.is_subset(old, old)
    assert not M.is_subset({"a": torch.tensor([False, False, True])}, old)
    assert not M.is_subset(old, {"a": torch.tensor([True, False, False])})


def test_apply_zeroes_exactly_the_pruned_weights():
    net = nn.Linear(3, 2)
    before = net.weight.detach().clone()
    keep = torch.tensor([[True, False, True], [False, True, True]])
    M.apply(net, {"weight": keep})
    assert torch.equal(net.weight.detach(), before * keep)
    assert torch.equal(net.bias.detach(), net.bias.detach())  # biases are never masked


def test_num_to_prune_rounds_half_of_the_remaining_and_never_exceeds_them():
    assert pruning.num_to_prune(10, 0.2) == 2
    assert pruning.num_to_prune(7, 0.5) == 4  # round(3.5) = 4 (banker's rounding: even)
    assert pruning.num_to_prune(5, 0.5) == 2  # round(2.5) = 2
    assert pruning.num_to_prune(3, 0.99) == 3
    assert pruning.num_to_prune(0, 0.5) == 0


def test_pack_bits_keeps_any_nonzero_value():
    """A mask given as 0/1 floats or small ints packs like its bool version."""
    bools = torch.tensor([False, True, True, False, True, False, False, True, True])
    for as_other in (bools.float() * 3, bools.to(torch.uint8) * 2, bools.to(torch.int64)):
        assert torch.equal(M.pack_bits(as_other), M.pack_bits(bools))


def test_prune_errors_say_what_is_wrong():
    import pytest

    from ticketx.errors import UsageError

    mask = {"a": torch.ones(4, dtype=torch.bool), "b": torch.ones(2, dtype=torch.bool)}
    scores = {"a": torch.arange(4.0), "b": torch.arange(2.0)}
    for rate in (1.0, -0.1):
        with pytest.raises(UsageError, match=r"^pruning rate must be in \[0, 1\), got "):
            pruning.prune(scores, mask, rate)
    with pytest.raises(UsageError, match=r"^scope must be 'global' or 'layerwise', got 'x'$"):
        pruning.prune(scores, mask, 0.5, scope="x")
    with pytest.raises(UsageError) as err:
        pruning.prune(scores, mask, 0.5, keep_dense=["c"])
    assert str(err.value) == "--keep-dense names unknown tensors: c (prunable: a, b)"
    # rate 0 is allowed and prunes nothing
    assert all(torch.equal(m, mask[n]) for n, m in pruning.prune(scores, mask, 0.0).items())


def test_one_weight_is_pruned_when_k_is_one():
    mask = {"a": torch.ones(5, dtype=torch.bool)}
    new = pruning.prune({"a": torch.tensor([3.0, 1.0, 2.0, 5.0, 4.0])}, mask, 0.2)  # round(0.2 * 5) = 1
    assert new["a"].tolist() == [True, False, True, True, True]
