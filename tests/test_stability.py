"""stability: interpolation, the error barrier, paths with batch-norm re-estimation, a tiny instability run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ticketx import stability as S
from ticketx.data import Batches
from ticketx.errors import UsageError


def test_interpolate_endpoints_and_midpoint():
    a = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, -2.0]), "n": torch.tensor(7)}
    assert torch.equal(S.interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(S.interpolate(a, b, 1.0)["w"], b["w"])
    mid = S.interpolate(a, b, 0.25)
    assert torch.allclose(mid["w"], torch.tensor([1.0, 1.0])) and int(mid["n"]) == 3
    with pytest.raises(UsageError):
        S.interpolate(a, {"w": b["w"]}, 0.5)


def test_barrier():
    assert S.barrier([0.1, 0.3, 0.2]) == pytest.approx(0.15)
    assert S.barrier([0.2, 0.2, 0.2]) == 0.0
    assert S.barrier([0.1, 0.05, 0.3]) == pytest.approx(0.1)  # never below 0: the max includes the endpoints
    with pytest.raises(ValueError):
        S.barrier([0.1])


def _bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 3, (40,), generator=g)
    return Batches(x, y, batch_size=20, mean=(0.5,), std=(0.25,), train=False), x, y


def test_barrier_of_a_network_with_itself_is_zero():
    model = _bn_net(0)
    with torch.no_grad():
        model[1].running_mean.normal_()  # non-trivial statistics, so a reset would change them
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batches, _, _ = _batches()
    errs = S.path_errors(model, state, state, batches, points=5)
    assert len(errs) == 5 and S.barrier(errs) == 0.0 and len(set(errs)) == 1
    reset = list(batches.epoch())
    errs_bn = S.path_errors(model, state, state, batches, points=5, bn_reset=reset)
    assert S.barrier(errs_bn) == 0.0 and len(set(errs_bn)) == 1


def test_reset_bn_estimates_the_activation_statistics():
    model = _bn_net(1)
    batches, _, _ = _batches()
    S.reset_bn(model, list(batches.epoch()))
    with torch.no_grad():
        xs = torch.cat([xb for xb, _ in batches.epoch()])
        h = model[0](xs)
    assert torch.allclose(model[1].running_mean, h.mean((0, 2, 3)), atol=1e-5)
    assert model[1].momentum == 0.1 and model.training


def test_path_errors_applies_the_mask():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    a = {k: v.clone() for k, v in model.state_dict().items()}
    b = {k: v + 1.0 for k, v in a.items()}
    mask = {"1.weight": torch.zeros(3, 64, dtype=torch.bool)}
    batches, _, _ = _batches()
    S.path_errors(model, a, b, batches, points=3, mask=mask)
    assert int(torch.count_nonzero(model[1].weight)) == 0


def test_stability_on_a_tiny_ticket(digits_ticket, tmp_path):
    from ticketx import ticket as ticketfile
    from ticketx.data import load_data

    t = ticketfile.load(digits_ticket)
    data = load_data(t.meta["data"], image_size=t.meta["image_size"], channels=t.meta["channels"])
    res = S.stability(t, 1, data, seeds=(0, 1), points=5, train_eval_samples=200)
    assert res["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert len(res["train_error"]) == len(res["test_error"]) == 5
    assert res["test_barrier"] == pytest.approx(S.barrier(res["test_error"]))
    assert res["test_barrier"] >= 0 and res["train_eval_samples"] == 200
    # The endpoints are the two trained copies: their test error is 1 - their final test accuracy.
    assert res["test_error"][0] == pytest.approx(1 - res["endpoint_test_acc"][0])
    assert res["test_error"][-1] == pytest.approx(1 - res["endpoint_test_acc"][1])
    assert res["batch_norm"] == "none in the model" and isinstance(res["stable"], bool)
    with pytest.raises(UsageError, match="different data seeds"):
        S.stability(t, 1, data, seeds=(2, 2))
    pytest.importorskip("matplotlib")
    out = S.path_plot(res, tmp_path / "path.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_several_pairs_give_the_barrier_with_an_interval(digits_ticket):
    from ticketx import ticket as ticketfile
    from ticketx.data import load_data
    from ticketx.stats import interval

    t = ticketfile.load(digits_ticket)
    data = load_data(t.meta["data"], image_size=t.meta["image_size"], channels=t.meta["channels"])
    res = S.stability_pairs(t, 1, data, seeds=[0, 1, 2, 3], points=3, train_eval_samples=100)
    assert [p["seeds"] for p in res["pairs"]] == [[0, 1], [2, 3]]
    barriers = [p["test_barrier"] for p in res["pairs"]]
    iv = interval(barriers)
    assert res["test_barrier"] == pytest.approx(iv.mean)
    assert res["test_barrier_interval"]["n"] == 2 and res["test_barrier_interval"]["low"] == pytest.approx(iv.low)
    assert res["stable"] == (iv.high <= S.STABLE_BARRIER)
    one = S.stability_pairs(t, 1, data, seeds=[0, 1], points=3, train_eval_samples=100)
    assert one["test_barrier_interval"]["low"] is None and one["test_barrier"] == one["pairs"][0]["test_barrier"]
    with pytest.raises(UsageError, match="even number"):
        S.stability_pairs(t, 1, data, seeds=[0, 1, 2])
