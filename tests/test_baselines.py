"""Baselines: every random stream belongs to the ticket it controls (independent controls)."""

from __future__ import annotations

import pytest
import torch

from ticketx import masks as M
from ticketx import ticket as ticketfile
from ticketx.baselines import BASELINES, TICKET, Arm


def _other_ticket(t):
    meta = {**t.meta, "fingerprint": "0123456789ab"}
    return ticketfile.Ticket(meta=meta, names=t.names, shapes=t.shapes, packed=t.packed, bits=t.bits, rewind=t.rewind)


def test_two_tickets_never_share_a_random_control(digits_ticket):
    t = ticketfile.load(digits_ticket)
    u = _other_ticket(t)  # the same masks and weights, another ticket
    for kind in ("random-mask",):
        a = Arm(t, 2, 5, seed=0).build(BASELINES[kind])
        b = Arm(u, 2, 5, seed=0).build(BASELINES[kind])
        assert not torch.equal(a.mask[t.names[0]], b.mask[t.names[0]])
    fresh_a = Arm(t, 2, 5, seed=0).build(BASELINES["random-reinit"]).model.state_dict()
    fresh_b = Arm(u, 2, 5, seed=0).build(BASELINES["random-reinit"]).model.state_dict()
    assert not torch.equal(fresh_a[t.names[0]], fresh_b[t.names[0]])
    head_a = Arm(t, 2, 5, seed=0).build(TICKET)
    head_b = Arm(u, 2, 5, seed=0).build(TICKET)
    name = [n for n in t.names][-1]
    assert not torch.equal(head_a.mask[name], head_b.mask[name])  # the new output layer's mask


def test_same_ticket_same_seed_same_control(digits_ticket):
    t = ticketfile.load(digits_ticket)
    a = Arm(t, 2, 5, seed=3).build(BASELINES["random-mask"])
    b = Arm(t, 2, 5, seed=3).build(BASELINES["random-mask"])
    assert all(torch.equal(a.mask[n], b.mask[n]) for n in a.mask)


def test_registry_rejects_unknown_names_with_a_suggestion():
    import pytest

    from ticketx.errors import UsageError

    with pytest.raises(UsageError, match="did you mean 'random-mask'"):
        BASELINES["random-mask2"]


def test_sanity_baselines_keep_every_layers_count(digits_ticket):
    t = ticketfile.load(digits_ticket)
    ticket = Arm(t, 2, 5, seed=0, head="keep").build(TICKET)
    got = Arm(t, 2, 5, seed=0, head="keep").build(BASELINES["shuffle"])
    for n, m in ticket.mask.items():
        assert int(got.mask[n].sum()) == int(m.sum()), n
    assert not all(torch.equal(got.mask[n], ticket.mask[n]) for n in t.names)


def test_invert_is_refused_for_an_imp_ticket(digits_ticket):
    from ticketx.errors import UsageError

    t = ticketfile.load(digits_ticket)
    with pytest.raises(UsageError, match="defined for prune-at-init tickets"):
        Arm(t, 2, 5, seed=0, head="keep").build(BASELINES["invert"])


def _scored_ticket(scope: str = "global"):
    """A prune-at-init-like ticket whose scores we control: a 3-layer model, scores = a fixed permutation."""
    from ticketx.models import build_model, head_name, prunable_names
    from ticketx.pai import select

    torch.manual_seed(0)
    model = build_model("lenet_300_100", 5, 1, 8)
    names = prunable_names(model)
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(7)
    scores = {n: torch.randperm(params[n].numel(), generator=gen).float().reshape(params[n].shape) for n in names}
    mask = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    masks = []
    for d in (0.5, 0.2, 0.05):
        mask = select(scores, mask, d, scope=scope)
        masks.append(mask)
    rounds = [{"round": 0, "density": 1.0}] + [{"round": r, "density": M.density(m)} for r, m in enumerate(masks, 1)]
    meta = {"found_by": "prune-at-init", "model": "lenet_300_100", "data": "digits[0-4]", "classes": list("01234"),
            "num_classes": 5, "image_size": 8, "channels": 1, "head": head_name(model), "rounds": rounds,
            "prune": {"criterion": "snip", "iterations": None}, "train": {"optimizer": "adam"}}
    return ticketfile.make(meta, masks, {k: v.detach().clone() for k, v in model.state_dict().items()},
                           extras={"scores": scores}), scores


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_invert_keeps_exactly_the_lowest_scored_weights_at_every_round(tmp_path, scope):
    t, scores = _scored_ticket(scope)
    ticketfile.save(t, tmp_path / "p.pt")
    t = ticketfile.load(tmp_path / "p.pt")  # the scores travel in the file (format 2)
    assert t.format_version == 2 and set(t.extras["scores"]) == set(t.names)
    for r in range(1, t.num_rounds + 1):
        inv = Arm(t, r, 5, seed=0, head="keep").build(BASELINES["invert"]).mask
        kept = t.mask(r)
        for n in t.names:
            k = int(kept[n].sum())
            lowest = torch.sort(scores[n].reshape(-1)).indices[:k]  # distinct scores: no ties
            want = torch.zeros(scores[n].numel(), dtype=torch.bool)
            want[lowest] = True
            assert torch.equal(inv[n].reshape(-1), want), (r, n)


def test_invert_of_a_ticket_without_scores_is_refused_in_one_line(tmp_path):
    from ticketx.baselines import invert_problem

    t, _ = _scored_ticket()
    t.extras.clear()
    assert "stores no scores" in invert_problem(t)
    t.meta["prune"]["iterations"] = 100
    assert "iterative" in invert_problem(t)