"""Invariants that hold for every input (hypothesis): pruning, masks, bit-packing, tickets.

Each property is checked against an independent statement of the rule, not against the code's
own helpers: the groups are rebuilt here from the documented scopes, and the expected k is
round(rate * remaining) of each group (Frankle & Carbin 2019: a fraction of the *remaining*
weights per round).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ticketx import masks as M
from ticketx import pruning
from ticketx import ticket as ticketfile

# fewer examples under mutation testing (scripts/mutation.py), where each mutant reruns these
EXAMPLES = int(os.environ.get("TICKETX_HYPOTHESIS_EXAMPLES", "50"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def layers(draw, max_layers: int = 4, max_dim: int = 6, ties: bool = True):
    """{name: shape}, scores with many ties (a few distinct values), and a current mask."""
    n = draw(st.integers(1, max_layers))
    shapes = {f"l{i}.weight": tuple(draw(st.lists(st.integers(1, max_dim), min_size=1, max_size=3))) for i in range(n)}
    values = st.integers(-3, 3) if ties else st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
    scores, mask = {}, {}
    for name, shape in shapes.items():
        numel = int(torch.Size(shape).numel())
        scores[name] = torch.tensor(draw(st.lists(values, min_size=numel, max_size=numel)), dtype=torch.float32).reshape(shape)
        mask[name] = torch.tensor(draw(st.lists(st.booleans(), min_size=numel, max_size=numel)), dtype=torch.bool).reshape(shape)
    return shapes, scores, mask


def expected_groups(names, scope, head, head_rate, rate, keep_dense):
    """The pruning groups as documented: one per layer (layerwise) or one for all (global); the
    head alone when it has its own rate; --keep-dense tensors in none."""
    own_head = head is not None and head_rate is not None and head not in keep_dense
    body = [n for n in names if n not in keep_dense and not (own_head and n == head)]
    groups = [([n], rate) for n in body] if scope == "layerwise" else ([(body, rate)] if body else [])
    if own_head:
        groups.append(([head], head_rate))
    return groups


rates = st.floats(0.0, 0.99, allow_nan=False)


@SETTINGS
@given(data=layers(), rate=rates, scope=st.sampled_from(["global", "layerwise"]), head_rate=st.one_of(st.none(), rates),
       choice=st.data())
def test_prune_removes_exactly_k_of_the_remaining_lowest_and_only_shrinks(data, rate, scope, head_rate, choice):
    shapes, scores, mask = data
    names = list(shapes)
    head = names[-1]
    keep_dense = choice.draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names) - 1))
    new = pruning.prune(scores, mask, rate, scope=scope, head=head, head_rate=head_rate, keep_dense=keep_dense)

    assert list(new) == names and all(new[n].dtype == torch.bool and new[n].shape == mask[n].shape for n in names)
    assert M.is_subset(new, mask), "a pruned weight came back"
    for n in keep_dense:
        assert torch.equal(new[n], mask[n]), f"{n} is kept dense but changed"
    for group, group_rate in expected_groups(names, scope, head, head_rate, rate, keep_dense):
        old = torch.cat([mask[n].reshape(-1) for n in group])
        kept = torch.cat([new[n].reshape(-1) for n in group])
        s = torch.cat([scores[n].reshape(-1) for n in group])
        remaining = int(old.sum())
        k = min(remaining, int(round(group_rate * remaining)))
        assert remaining - int(kept.sum()) == k, f"group {group}: pruned {remaining - int(kept.sum())}, expected {k}"
        removed = old & ~kept
        if removed.any() and kept.any():
            assert s[removed].max() <= s[kept].min(), "a weight with a higher score was pruned before a lower one"
            # ties at the threshold go by position: the first ones (in name order, then flat index) go first
            tie = s[removed].max()
            at_tie = torch.nonzero(old & (s == tie)).reshape(-1)
            gone = removed[at_tie]
            assert not (gone[1:] & ~gone[:-1]).any(), "ties were not broken by position"
    # the same input gives the same mask
    again = pruning.prune(scores, mask, rate, scope=scope, head=head, head_rate=head_rate, keep_dense=keep_dense)
    assert all(torch.equal(again[n], new[n]) for n in names)


@SETTINGS
@given(data=layers(ties=False), rate=rates, scope=st.sampled_from(["global", "layerwise"]))
def test_magnitude_prunes_by_absolute_value(data, rate, scope):
    shapes, weights, mask = data
    by_magnitude = pruning.magnitude(weights, mask, rate, scope=scope)
    by_score = pruning.prune({n: w.abs() for n, w in weights.items()}, mask, rate, scope=scope)
    assert all(torch.equal(by_magnitude[n], by_score[n]) for n in shapes)
    assert M.is_subset(by_magnitude, mask)
    # weights are only read: flipping every sign gives the same mask
    flipped = pruning.magnitude({n: -w for n, w in weights.items()}, mask, rate, scope=scope)
    assert all(torch.equal(flipped[n], by_magnitude[n]) for n in shapes)


@st.composite
def nested_masks(draw, max_rounds: int = 5):
    """{name: shape} and masks of rounds 1..R, each a subset of the one before."""
    shapes, _, first = draw(layers(max_dim=9))
    rounds = draw(st.integers(0, max_rounds))
    masks, cur = [], {n: torch.ones(s, dtype=torch.bool) for n, s in shapes.items()}
    for r in range(rounds):
        nxt = {}
        for n, m in cur.items():
            numel = m.numel()
            drop = torch.tensor(draw(st.lists(st.booleans(), min_size=numel, max_size=numel)), dtype=torch.bool).reshape(m.shape)
            nxt[n] = (first[n] if r == 0 else m) & ~(drop if r else torch.zeros_like(drop))
        masks.append(nxt)
        cur = nxt
    return shapes, masks


@SETTINGS
@given(data=nested_masks())
def test_ticket_bit_packing_round_trips_any_nested_masks(data):
    shapes, masks = data
    assume(masks)
    rewind = {n: torch.randn(s) for n, s in shapes.items()}
    meta = {"rounds": [{"density": 1.0}] + [{"density": M.density(m)} for m in masks]}
    ticket = ticketfile.make(meta, masks, rewind)
    # at most one bit per weight still alive before each round
    alive = [sum(int(torch.Size(s).numel()) for s in shapes.values())] + [M.count(m)[0] for m in masks[:-1]]
    assert ticket.bits == alive
    assert ticket.packed.numel() == sum((b + 7) // 8 for b in alive)
    with tempfile.TemporaryDirectory() as folder:
        ticketfile.save(ticket, Path(folder) / "t.pt")
        loaded = ticketfile.load(Path(folder) / "t.pt")
    assert loaded.num_rounds == len(masks)
    assert all(bool(m.all()) for m in loaded.mask(0).values())
    for r, m in enumerate(masks, start=1):
        got = loaded.mask(r)
        assert list(got) == list(shapes)
        assert all(torch.equal(got[n], m[n]) for n in shapes), f"round {r} differs after save/load"


@SETTINGS
@given(data=layers(max_dim=9))
def test_pack_unpack_round_trips_any_mask(data):
    shapes, _, mask = data
    flat = torch.cat([mask[n].reshape(-1) for n in shapes])
    packed = M.pack_bits(flat)
    assert packed.dtype == torch.uint8 and packed.numel() == (flat.numel() + 7) // 8
    assert torch.equal(M.unpack_bits(packed, flat.numel()), flat)


@SETTINGS
@given(data=layers(max_dim=9), seed=st.integers(0, 2**31 - 1))
def test_random_like_keeps_every_layers_count(data, seed):
    shapes, _, mask = data
    out = pruning.random_like(mask, torch.Generator().manual_seed(seed))
    assert list(out) == list(shapes)
    for n in shapes:
        assert out[n].dtype == torch.bool and out[n].shape == mask[n].shape
        assert int(out[n].sum()) == int(mask[n].sum()), f"{n}: {int(out[n].sum())} kept, expected {int(mask[n].sum())}"
    again = pruning.random_like(mask, torch.Generator().manual_seed(seed))
    assert all(torch.equal(again[n], out[n]) for n in shapes)


@SETTINGS
@given(data=layers(max_layers=3, max_dim=12, ties=False), rate=st.floats(0.05, 0.9), rounds=st.integers(1, 8),
       scope=st.sampled_from(["global", "layerwise"]))
def test_density_per_round_follows_the_remaining_weights_rule(data, rate, rounds, scope):
    """Round r keeps n_r = n_{r-1} - round(rate * n_{r-1}) weights of each group, so the density is
    (1 - rate)^r up to the rounding of each round: within 1/2 weight after one round and within
    1/2 * sum_{i<r} (1 - rate)^i (< 1/(2 rate)) weights after r rounds.

    The issue's "(1 - rate)^r to within one weight per group" is not true for every input:
    rounding can hold a small group back (2 weights at rate 0.2: round(0.4) = 0 every round,
    2 kept after 20 rounds against 0.02), so the exact recursion is the property.
    """
    shapes, weights, _ = data
    mask = {n: torch.ones(s, dtype=torch.bool) for n, s in shapes.items()}
    groups = [[n] for n in shapes] if scope == "layerwise" else [list(shapes)]
    size = {tuple(g): sum(int(torch.Size(shapes[n]).numel()) for n in g) for g in groups}
    expected = dict(size)
    for r in range(1, rounds + 1):
        mask = pruning.magnitude(weights, mask, rate, scope=scope)
        for g in groups:
            kept = sum(int(mask[n].sum()) for n in g)
            prev = expected[tuple(g)]
            expected[tuple(g)] = prev - min(prev, int(round(rate * prev)))
            assert kept == expected[tuple(g)]
            bound = 0.5 * sum((1 - rate) ** i for i in range(r)) + 1e-9
            assert abs(kept - size[tuple(g)] * (1 - rate) ** r) <= bound
            if r == 1:
                assert abs(kept - size[tuple(g)] * (1 - rate)) <= 0.5 + 1e-9
    kept, total = M.count(mask)
    assert M.density(mask) == kept / total


def test_a_ticket_from_find_has_the_densities_of_the_rule(digits_ticket):
    """The ticket file records, per round, the density the rule gives its layers."""
    t = ticketfile.load(digits_ticket)
    rate = t.meta["prune"]["rate"]
    sizes = {n: int(torch.Size(s).numel()) for n, s in t.shapes.items()}
    for r in range(t.num_rounds + 1):
        m = t.mask(r)
        for n, size in sizes.items():
            n_r = size
            for _ in range(r):
                n_r -= min(n_r, int(round(rate * n_r)))
            assert int(m[n].sum()) == n_r, f"round {r}, {n}"
        assert t.rounds[r]["density"] == M.density(m)
