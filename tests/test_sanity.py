"""sanity: shuffle keeps every layer's count exactly; invert keeps the earliest-pruned weights."""

from __future__ import annotations

import pytest
import torch

from ticketx import sanity as S
from ticketx.errors import UsageError


def _nested(seed: int = 0, rounds: int = 3):
    g = torch.Generator().manual_seed(seed)
    scores = {"a": torch.rand(30, 20, generator=g), "b": torch.rand(10, 30, generator=g), "c": torch.rand(7, generator=g)}
    masks = []
    for r in range(1, rounds + 1):
        d = 0.7 ** r
        masks.append({n: s >= torch.quantile(s.reshape(-1), 1 - d) for n, s in scores.items()})
    return scores, masks


def test_shuffle_keeps_each_layer_count_and_moves_weights():
    _, masks = _nested()
    m = masks[1]
    sh = S.shuffle(m, torch.Generator().manual_seed(1))
    for n in m:
        assert sh[n].shape == m[n].shape and sh[n].dtype == torch.bool
        assert int(sh[n].sum()) == int(m[n].sum())
    assert not torch.equal(sh["a"], m["a"])
    again = S.shuffle(m, torch.Generator().manual_seed(1))
    assert all(torch.equal(sh[n], again[n]) for n in m)


def test_invert_hand_made():
    r1 = {"w": torch.tensor([1, 1, 1, 0, 0, 1], dtype=torch.bool)}
    r2 = {"w": torch.tensor([1, 0, 1, 0, 0, 0], dtype=torch.bool)}
    # Round 2 keeps 2: exactly the two weights pruned in round 1 (positions 3 and 4).
    inv = S.invert([r1, r2], 2, torch.Generator().manual_seed(0))
    assert inv["w"].tolist() == [False, False, False, True, True, False]
    # Round 1 keeps 4: both round-1 prunes, then 2 of the round-2 prunes (positions 1 and 5).
    inv1 = S.invert([r1, r2], 1, torch.Generator().manual_seed(0))
    assert inv1["w"].tolist() == [False, True, False, True, True, True]


def test_invert_counts_and_order():
    _, masks = _nested()
    level = S.pruning_order(masks)
    for r in range(1, 4):
        inv = S.invert(masks, r, torch.Generator().manual_seed(r))
        for n in masks[r - 1]:
            k = int(masks[r - 1][n].sum())
            assert int(inv[n].sum()) == k
            # Nothing kept by the inverse survived longer than anything it left out.
            assert int(level[n][inv[n]].max()) <= int(level[n][~inv[n]].min())
    # At low density the inverse and the ticket are disjoint.
    inv = S.invert(masks, 3, torch.Generator().manual_seed(0))
    assert all(not bool((inv[n] & masks[2][n]).any()) for n in inv)


def test_invert_rejects_bad_input():
    _, masks = _nested()
    with pytest.raises(UsageError, match="round 4"):
        S.invert(masks, 4, torch.Generator())
    with pytest.raises(UsageError, match="not nested"):
        S.invert([masks[2], masks[0]], 1, torch.Generator())
