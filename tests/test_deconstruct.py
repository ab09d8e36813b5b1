"""Zhou et al. 2019's ablations: each mask-1 arm keeps the mask and per-layer counts and changes exactly
what it says; mask-0 values survive every optimizer step exactly; the toward-zero bits a search stores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ticketx import deconstruct as D
from ticketx import ticket as ticketfile
from ticketx.baselines import BASELINES, TICKET, TOWARD_ZERO, Arm

W = torch.tensor([[0.5, -1.0, 2.0, -0.25], [3.0, -4.0, 0.75, 1.5]])
KEEP = torch.tensor([[True, False, True, True], [False, True, True, False]])


def test_permute_kept_moves_only_kept_values_among_kept_positions():
    out = D.permute_kept(W, KEEP, torch.Generator().manual_seed(3))
    assert torch.equal(out[~KEEP], W[~KEEP])  # pruned positions untouched (the mask zeroes them later)
    assert torch.equal(out[KEEP].sort().values, W[KEEP].sort().values)  # the same multiset of kept values
    assert not torch.equal(out[KEEP], W[KEEP])  # ... elsewhere (this seed moves them)


def test_with_signs_keeps_signs_and_takes_the_new_magnitudes():
    fresh = torch.tensor([[-7.0, 1.0, 0.1, 9.0], [2.0, 0.3, -5.0, 1.0]])
    out = D.with_signs(fresh, W, KEEP)
    assert torch.equal(torch.sign(out[KEEP]), torch.sign(W[KEEP]))
    assert torch.equal(out[KEEP].abs(), fresh[KEEP].abs())
    assert torch.equal(out[~KEEP], W[~KEEP])


def test_signed_constant_is_plus_minus_sigma_with_the_signs():
    out = D.signed_constant(W, 0.125, KEEP)
    assert torch.equal(out[KEEP].abs(), torch.full((int(KEEP.sum()),), 0.125))
    assert torch.equal(torch.sign(out[KEEP]), torch.sign(W[KEEP]))
    assert torch.equal(out[~KEEP], W[~KEEP])
    assert torch.equal(D.signed_constant(torch.zeros(3), 2.0, torch.ones(3, dtype=torch.bool)), torch.full((3,), 2.0))  # sign(0) = +1


def test_random_signs_keep_magnitudes_and_draw_signs():
    w = torch.linspace(0.1, 1.0, 4000).reshape(40, 100)  # all positive
    keep = torch.rand(40, 100, generator=torch.Generator().manual_seed(0)) < 0.5
    out = D.random_signs(w, keep, torch.Generator().manual_seed(1))
    assert torch.equal(out.abs(), w)
    assert torch.equal(out[~keep], w[~keep])
    negative = float((out[keep] < 0).float().mean())
    assert 0.45 < negative < 0.55  # fair coin: 2,000 draws, sd 0.011


def test_frozen_values_per_mask0_action():
    start = {"w": W}
    mask = {"w": KEEP}
    toward = {"w": torch.tensor([[True, True, False, False], [True, False, False, False]])}
    assert D.frozen_values("zero", start, mask) == {}
    frozen = D.frozen_values("frozen", start, mask)["w"]
    assert torch.equal(frozen, torch.where(KEEP, torch.zeros_like(W), W))
    zhou = D.frozen_values("zhou", start, mask, toward)["w"]
    # pruned & moved toward zero -> 0; pruned & moved away -> the start value; kept -> 0
    assert torch.equal(zhou, torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.5]]))


# ---- the arms, on a real ticket --------------------------------------------------------------

ABLATIONS = ("permuted-weights", "signed-reinit", "signed-constant", "random-signs")


@pytest.mark.parametrize("head", ["new", "keep"])
def test_ablation_arms_keep_the_mask_and_change_only_the_kept_values(digits_ticket, head):
    t = ticketfile.load(digits_ticket)
    ticket = Arm(t, 2, 5, seed=0, head=head).build(TICKET)
    base = ticket.model.state_dict()
    head_name = t.meta["head"]
    for kind in ABLATIONS:
        got = Arm(t, 2, 5, seed=0, head=head).build(BASELINES[kind])
        state = got.model.state_dict()
        assert BASELINES[kind].paper.startswith("Zhou")
        for n, m in ticket.mask.items():
            assert torch.equal(got.mask[n], m), (kind, n)  # the same mask, so the same per-layer counts
            w, a = base[n], state[n]
            assert not a[~m].any(), (kind, n)  # pruned weights are zero
            if head == "new" and n == head_name:
                assert torch.equal(a, w), (kind, n)  # a new output layer is every arm's own: untouched
                continue
            kept, new = w[m], a[m]
            if kind == "permuted-weights":
                assert torch.equal(new.sort().values, kept.sort().values), n
                assert not torch.equal(new, kept), n
            elif kind == "signed-reinit":
                assert torch.equal(torch.sign(new), torch.sign(kept)), n
                assert not torch.equal(new.abs(), kept.abs()), n
            elif kind == "signed-constant":
                assert torch.equal(torch.sign(new), torch.sign(kept)), n
                assert torch.unique(new.abs()).numel() == 1, n  # one magnitude per layer
            else:
                assert torch.equal(new.abs(), kept.abs()), n
                assert not torch.equal(torch.sign(new), torch.sign(kept)), n
        for n in base:  # biases are the ticket's
            if n not in ticket.mask and not (head == "new" and n.startswith(head_name.rsplit(".", 1)[0])):
                assert torch.equal(state[n], base[n]), (kind, n)


def test_signed_constant_sigma_is_the_std_of_the_layers_original_initialisation(digits_ticket):
    """The tiny ticket rewinds to 0, so θ_0 is its rewind weights: σ = their std per layer."""
    t = ticketfile.load(digits_ticket)
    assert t.meta["rewind_step"] == 0
    got = Arm(t, 2, 5, seed=0).build(BASELINES["signed-constant"])
    for n, m in got.mask.items():
        if n == t.meta["head"]:
            continue
        sigma = float(t.rewind[n].double().std(unbiased=False))
        assert got.model.state_dict()[n][m].abs().unique().item() == pytest.approx(sigma, rel=1e-6)


def test_ablation_streams_are_independent_per_ticket_seed_and_round(digits_ticket):
    t = ticketfile.load(digits_ticket)
    other = ticketfile.Ticket(meta={**t.meta, "fingerprint": "0123456789ab"}, names=t.names, shapes=t.shapes,
                              packed=t.packed, bits=t.bits, rewind=t.rewind, extras=t.extras)
    n = t.names[0]
    for kind in ("permuted-weights", "signed-reinit", "random-signs"):
        def w(ticket, seed, round_):
            return Arm(ticket, round_, 5, seed=seed).build(BASELINES[kind]).model.state_dict()[n]
        a = w(t, 0, 1)
        assert torch.equal(a, w(t, 0, 1)), kind  # reproducible
        assert not torch.equal(a, w(t, 1, 1)), kind  # another seed
        assert not torch.equal(a, w(other, 0, 1)), kind  # another ticket
        # another round: its own stream (the mask differs across rounds too, so compare the seeds)
        assert Arm(t, 1, 5, seed=0).stream_seed(kind) != Arm(t, 2, 5, seed=0).stream_seed(kind), kind


# ---- mask 0 -----------------------------------------------------------------------------------


def test_a_search_stores_which_pruned_weights_moved_toward_zero(digits_ticket):
    t = ticketfile.load(digits_ticket)
    bits = t.extras[TOWARD_ZERO]
    assert set(bits) == set(t.names)
    for n in t.names:
        assert bits[n].dtype == torch.bool and bits[n].shape == t.shapes[n]
        assert 0 < int(bits[n].sum()) < bits[n].numel()
    # magnitude pruning removes the smallest final weights: most of them moved toward zero
    m0, m2 = t.mask(0), t.mask(2)
    pruned = torch.cat([(m0[n] & ~m2[n]).reshape(-1) for n in t.names])
    toward = torch.cat([bits[n].reshape(-1) for n in t.names])
    assert float(toward[pruned].float().mean()) > float(toward[~pruned].float().mean())


@pytest.mark.parametrize("how", ["frozen", "zhou"])
def test_mask0_arm_holds_the_pruned_weights_at_their_values(digits_ticket, how):
    t = ticketfile.load(digits_ticket)
    prep = Arm(t, 2, 5, seed=0, mask0=how).build(TICKET)
    head = t.meta["head"]
    assert head not in prep.frozen  # a new output layer's pruned weights stay zero
    for n, fill in prep.frozen.items():
        m = prep.mask[n]
        hold = ~m if how == "frozen" else ~m & ~t.extras[TOWARD_ZERO][n]
        assert torch.equal(fill[hold], t.rewind[n][hold])
        assert not fill[~hold].any()
    assert Arm(t, 2, 5, seed=0).build(TICKET).frozen is None


def test_mask0_zhou_is_refused_for_a_ticket_without_movement_bits(digits_ticket):
    from ticketx.errors import UsageError

    t = ticketfile.load(digits_ticket)
    bare = ticketfile.Ticket(meta=t.meta, names=t.names, shapes=t.shapes, packed=t.packed, bits=t.bits, rewind=t.rewind)
    with pytest.raises(UsageError, match="toward_zero"):
        Arm(bare, 2, 5, seed=0, mask0="zhou").build(TICKET)
    assert Arm(bare, 2, 5, seed=0, mask0="frozen").build(TICKET).frozen


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("optimizer", [dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
                                       dict(optimizer="adam", lr=0.01, weight_decay=0.01)])
def test_frozen_pruned_weights_survive_100_optimizer_steps_exactly(optimizer):
    from ticketx.settings import TrainSpec
    from ticketx.train import prepare

    torch.manual_seed(0)
    model = Tiny()
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    mask = {n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in model.named_parameters() if n.endswith("weight")}
    toward = {n: torch.rand(m.shape, generator=gen) < 0.5 for n, m in mask.items()}
    frozen = D.frozen_values("zhou", start, mask, toward)
    setup = prepare(model, TrainSpec(**optimizer), mask=mask, frozen=frozen)
    x, y = torch.randn(32, 6, generator=gen), torch.randint(0, 3, (32,), generator=gen)
    for _ in range(100):
        setup.stepper(x, y)
        state = model.state_dict()
        for n, m in mask.items():
            hold = ~m & ~toward[n]
            assert torch.equal(state[n][hold], start[n][hold]), n  # frozen at the start value, bit for bit
            assert not state[n][~m & toward[n]].any(), n  # zero where the weight moved toward zero
    for n, m in mask.items():
        assert not torch.equal(model.state_dict()[n][m], start[n][m]), n  # the kept weights trained
        p = dict(model.named_parameters())[n]
        assert not p.grad[~m & ~toward[n]].any(), n  # no gradient reached a frozen weight's optimizer state


def test_without_frozen_values_the_enforcer_is_todays(monkeypatch):
    from ticketx.train import MaskEnforcer

    model = Tiny()
    enf = MaskEnforcer(model, {"a.weight": torch.zeros(8, 6, dtype=torch.bool)})
    assert enf.held == [] and enf.fills == []


def test_transfer_run_key_records_mask0_only_when_not_zero(digits_ticket, tmp_path):
    from ticketx.data import load_data
    from ticketx.settings.transfer import TransferSpec, resolve_transfer
    from ticketx.transfer import arm_run

    data = load_data("digits[5-9]", image_size=8)
    keys = {}
    for how in ("zero", "frozen", "zhou"):
        plan = resolve_transfer(digits_ticket, TransferSpec(target="digits[5-9]", mask0=how))
        run = arm_run(name="ticket", baseline=TICKET, plan=plan, data=data, round_=2, seed=0, runs_root=tmp_path)
        keys[how] = (run.key, run.info["config"])
    assert "mask0" not in keys["zero"][1]
    assert keys["frozen"][1]["mask0"] == "frozen" and keys["zhou"][1]["mask0"] == "zhou"
    assert len({k for k, _ in keys.values()}) == 3


def test_study_transfer_mask0_enters_only_the_keys_it_changes(tmp_path):
    from datafiles import ci_grid
    from ticketx.study import load_study

    plain_path, frozen_path = tmp_path / "a.yaml", tmp_path / "b.yaml"
    plain_path.write_text(ci_grid("[0]", "[0]"))
    frozen_path.write_text(ci_grid("[0]", "[0]").replace("transfer:\n", "transfer:\n  mask0: frozen\n", 1))
    zero_path = tmp_path / "c.yaml"
    zero_path.write_text(ci_grid("[0]", "[0]").replace("transfer:\n", "transfer:\n  mask0: zero\n", 1))
    plain, frozen, zero = (load_study(p) for p in (plain_path, frozen_path, zero_path))
    assert [c.key for c in zero.cells] == [c.key for c in plain.cells]  # zero: every key as before
    searches = {c.key for c in plain.cells if c.kind == "search"}
    assert searches == {c.key for c in frozen.cells if c.kind == "search"}  # tickets are found the same way
    transfers = [c for c in frozen.cells if c.kind == "transfer"]
    assert all(c.transfer.mask0 == "frozen" for c in transfers)
    assert not {c.key for c in transfers} & {c.key for c in plain.cells}
