import pytest
import torch
from torch import nn

from ticketx import masks as M
from ticketx.settings import TrainSpec
from ticketx.train import MaskEnforcer, make_optimizer


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000, 12345])
def test_pack_roundtrip(n):
    x = torch.rand(n, generator=torch.Generator().manual_seed(n)) > 0.5
    p = M.pack_bits(x)
    assert p.dtype == torch.uint8 and p.numel() == (n + 7) // 8
    assert torch.equal(M.unpack_bits(p, n), x)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))


@pytest.mark.parametrize("optimizer,extra", [("sgd", {"momentum": 0.9, "nesterov": True}), ("adam", {})])
def test_masked_weights_stay_zero_under_momentum_and_weight_decay(optimizer, extra):
    net = _net()
    g = torch.Generator().manual_seed(1)
    mask = {n: torch.rand(p.shape, generator=g) > 0.5 for n, p in net.named_parameters() if n.endswith("weight")}
    M.apply(net, mask)
    spec = TrainSpec(optimizer=optimizer, lr=0.05, weight_decay=0.1, **extra)
    opt = make_optimizer(list(net.parameters()), spec)
    enforce = MaskEnforcer(net, mask)
    x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        enforce()
    params = dict(net.named_parameters())
    for n, m in mask.items():
        assert torch.count_nonzero(params[n][~m]) == 0
        assert torch.count_nonzero(params[n][m]) > 0.9 * int(m.sum())  # the kept ones trained


def test_dense_mask_costs_nothing():
    net = _net()
    enforce = MaskEnforcer(net, {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()})
    assert enforce.params == []
