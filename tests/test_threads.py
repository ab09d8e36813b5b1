"""ticketx.threads: the thread policy and the one context manager that changes torch's count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ticketx import threads as TH
from ticketx.errors import UsageError
from ticketx.models import build_model


def test_forward_macs_counts_conv_and_linear():
    lenet = build_model("lenet_300_100", 10, 1, 8)
    assert TH.forward_macs(lenet, (1, 8, 8)) == 64 * 300 + 300 * 100 + 100 * 10
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 5 * 5, 2))
    assert TH.forward_macs(conv, (3, 5, 5)) == 4 * 25 * 3 * 9 + 100 * 2
    bn = build_model("resnet20", 10, 3, 32)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    bn.train()
    assert TH.forward_macs(bn, (3, 32, 32)) > 40e6
    assert bn.training and all(torch.equal(before[k], v) for k, v in bn.state_dict().items())  # no BN update
    assert TH.forward_macs(conv, (3, 7)) is None  # a shape the model cannot take: no estimate, no error


def test_training_threads_policy(monkeypatch):
    monkeypatch.delenv("TICKETX_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(TH, "_TORCH_DEFAULT_THREADS", 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    lenet, resnet = build_model("lenet_300_100", 10, 1, 8), build_model("resnet20", 10, 3, 32)
    assert TH.training_threads(lenet, (1, 8, 8), 60) == 1  # tiny step: one thread
    assert TH.training_threads(resnet, (3, 32, 32), 128) is None  # big step: torch's own count
    assert TH.training_threads(lenet, (1, 8, 8), 60, "cuda") is None  # threads only matter on the CPU
    monkeypatch.setenv("TICKETX_THREADS", "3")
    assert TH.training_threads(resnet, (3, 32, 32), 128) == 3
    monkeypatch.setenv("TICKETX_THREADS", "many")
    with pytest.raises(UsageError, match="TICKETX_THREADS"):
        TH.training_threads(resnet, (3, 32, 32), 128)
    monkeypatch.delenv("TICKETX_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert TH.training_threads(lenet, (1, 8, 8), 60) is None  # the user's choice
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)  # set by torch.set_num_threads
    assert TH.training_threads(lenet, (1, 8, 8), 60) is None


def test_small_step_threshold_sits_between_lenet_and_resnet20():
    """The policy's threshold separates the measured cases it is based on (see SMALL_STEP_FLOPS)."""
    lenet = 6 * TH.forward_macs(build_model("lenet_300_100", 10, 1, 28), (1, 28, 28)) * 60
    resnet = 6 * TH.forward_macs(build_model("resnet20", 10, 3, 32), (3, 32, 32)) * 128
    assert lenet < TH.SMALL_STEP_FLOPS < resnet


def test_cpu_threads_sets_and_restores_even_on_error():
    before = torch.get_num_threads()
    target = 1 if before > 1 else 2
    with TH.cpu_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), TH.cpu_threads(target):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with TH.cpu_threads(None):
        assert torch.get_num_threads() == before
    assert TH.one_thread_on_cpu("cpu") == 1 and TH.one_thread_on_cpu("cuda") is None
