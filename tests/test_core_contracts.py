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


def test_check_names_each_problem():
    mask = {"a": torch.ones(2, 2, dtype=torch.bool), "x": torch.ones(1, dtype=torch.bool), "c": torch.ones(3, dtype=torch.bool)}
    problems = M.check(mask, {"a": torch.Size([2, 3]), "b": torch.Size([4]), "c": torch.Size([3])})
    assert problems == ["a: mask (2, 2) vs weight (2, 3)", "b: missing from the mask", "x: not a prunable tensor of the model"]
    assert M.check({"c": torch.ones(3, dtype=torch.bool)}, {"c": torch.Size([3])}) == []


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
