"""Baselines: every random stream belongs to the ticket it controls (independent controls)."""

from __future__ import annotations

import torch

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
    for kind in ("shuffle", "invert"):
        got = Arm(t, 2, 5, seed=0, head="keep").build(BASELINES[kind])
        for n, m in ticket.mask.items():
            assert int(got.mask[n].sum()) == int(m.sum()), (kind, n)
        assert not all(torch.equal(got.mask[n], ticket.mask[n]) for n in t.names)
    inv = Arm(t, 2, 5, seed=0, head="keep").build(BASELINES["invert"]).mask
    first = t.mask(1)
    for n in t.names:  # at 64% density the inverse holds every weight round 1 pruned (the lowest-ranked)
        assert bool((inv[n] | first[n]).all())
