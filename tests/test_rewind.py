"""Rewinding (late resetting; Frankle et al. 2019/2020, Morcos et al. 2019) pinned down.

Every pruned round must restart from the weights at the rewind step k > 0: not from the
initialisation (that is the original lottery-ticket method, rewind 0), not from the end of the
previous round. And the rewind snapshot must be the state after exactly k optimizer steps:
weights, biases and batch-norm statistics.

The search is observed from outside, through public paths only: a global forward pre-hook sees
the network at every training step (so the test does not depend on how `find` calls `train`),
and the ticket file holds the rewind weights.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_find_spec
from ticketx import ticket as ticketfile


class Recorder:
    """The network's state at each training-mode forward of the root model (= before each step)."""

    def __init__(self, root_type: type) -> None:
        self.root_type = root_type
        self.states: list[dict[str, torch.Tensor]] = []

    def __call__(self, module: nn.Module, args) -> None:
        if type(module) is self.root_type and module.training and torch.is_grad_enabled():
            self.states.append({k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()})


@pytest.fixture
def record():
    handles = []

    def start(root_type: type) -> Recorder:
        rec = Recorder(root_type)
        handles.append(nn.modules.module.register_module_forward_pre_hook(rec))
        return rec

    yield start
    for h in handles:
        h.remove()


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_every_round_restarts_from_the_rewind_step(record, tmp_path, scope):
    from ticketx.search import find
    from ticketx.models import build_model

    rec = record(type(build_model("lenet_300_100", 5, 1, 8)))
    spec = tiny_find_spec(deterministic=True, prune=dict(rounds=3, rewind="3it", scope=scope), train=dict(length="8it"))
    ticket = find(spec, tmp_path / "t.pt", device="cpu")
    saved = ticketfile.load(tmp_path / "t.pt")
    k, total = ticket.meta["rewind_step"], ticket.meta["total_steps"]
    assert (k, total) == (3, 8)
    # round 0 trains steps 0..7, rounds 1..3 train steps 3..7 each
    assert len(rec.states) == total + 3 * (total - k)
    init, at_k = rec.states[0], rec.states[k]
    weights = ticket.names
    biases = [n for n in init if n not in weights]

    # the ticket's rewind weights are the state after exactly k steps of round 0
    assert _equal(saved.rewind, at_k, init.keys())
    assert not _equal(at_k, init, weights), "the rewind point is > 0: the weights must have moved"

    for r in range(1, 4):
        first = total + (r - 1) * (total - k)  # the first step of round r
        start, mask = rec.states[first], ticket.mask(r)
        end_of_previous = rec.states[first - 1]
        for n in weights:
            keep = mask[n]
            assert torch.equal(start[n][keep], at_k[n][keep]), f"round {r}: surviving {n} is not at its rewind value"
            assert not torch.equal(start[n][keep], init[n][keep]), f"round {r}: {n} restarted from the initialisation"
            assert not torch.equal(start[n][keep], end_of_previous[n][keep]), f"round {r}: {n} continued from the previous round"
            assert not start[n][~keep].any(), f"round {r}: pruned weights of {n} are not zero"
        for n in biases:  # never pruned: rewound too
            assert torch.equal(start[n], at_k[n]), f"round {r}: {n} is not at its rewind value"
        assert ticket.rounds[r]["density"] == pytest.approx(mask_density(mask))


def mask_density(mask) -> float:
    return sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())


def test_rewind_0_restarts_from_the_initialisation(record, tmp_path):
    """Frankle & Carbin 2019: rewind point 0 is the original initialisation."""
    from ticketx.search import find
    from ticketx.models import build_model

    rec = record(type(build_model("lenet_300_100", 5, 1, 8)))
    ticket = find(tiny_find_spec(deterministic=True, prune=dict(rounds=1, rewind="0"), train=dict(length="6it")),
                  tmp_path / "t.pt", device="cpu")
    init, start = rec.states[0], rec.states[6]
    mask = ticket.mask(1)
    assert _equal(ticket.rewind, init, init.keys())
    assert all(torch.equal(start[n][mask[n]], init[n][mask[n]]) for n in ticket.names)


class TinyBN(nn.Module):
    """Conv + batch norm + linear: the state has weights, biases and running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_the_rewind_snapshot_is_the_state_after_exactly_k_steps():
    """A run with snapshot_steps=(k,) returns the state after k optimizer steps, batch-norm statistics
    included: the same as a run that stops at step k, and not the state one step before or after."""
    from ticketx.data import load_data
    from ticketx.train import Recipe, Run, state_copy, train

    data = load_data("digits[0-4]", image_size=8)
    spec = tiny_find_spec(train=dict(length="7it", batch_size=32)).train

    def run(length: str, snapshot_steps=()):
        torch.manual_seed(0)
        model = TinyBN()
        res = train([Run.of(model, snapshot_steps=snapshot_steps)],
                    Recipe.of(data, spec.model_copy(update={"length": length}), "cpu", channels_last=False))[0]
        return model, res

    k = 4
    _, res = run("7it", snapshot_steps=(k - 1, k, k + 1))
    stopped, _ = run(f"{k}it")
    at_k, exact = res.snapshots[k], state_copy(stopped)
    assert set(at_k) == set(exact) and {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"} <= set(at_k)
    for name in exact:
        assert torch.equal(at_k[name], exact[name]), f"{name} in the snapshot is not its value after {k} steps"
    assert int(at_k["bn.num_batches_tracked"]) == k
    for other in (k - 1, k + 1):
        for name in ("conv.weight", "conv.bias", "bn.weight", "bn.running_mean", "bn.running_var", "fc.weight"):
            assert not torch.equal(res.snapshots[other][name], at_k[name]), f"{name}: snapshot {other} equals snapshot {k}"


def test_snapshot_at_step_0_is_the_initial_state():
    from ticketx.data import load_data
    from ticketx.train import Recipe, Run, state_copy, train

    data = load_data("digits[0-4]", image_size=8)
    spec = tiny_find_spec(train=dict(length="2it", batch_size=32)).train
    torch.manual_seed(0)
    model = TinyBN()
    init = state_copy(model)
    res = train([Run.of(model, snapshot_steps=(0,))], Recipe.of(data, spec, "cpu", channels_last=False))[0]
    assert all(torch.equal(res.snapshots[0][n], init[n]) for n in init)
