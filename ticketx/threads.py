"""CPU thread policy: how many OpenMP threads torch uses, and the one way to change it for a block.

Every place in ticketx that changes torch's thread count goes through `cpu_threads`, which
restores the previous count afterwards; `training_threads` is the policy for a training run.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ticketx.errors import UsageError

# A training step smaller than this many FLOPs runs on one CPU thread: OpenMP synchronises the
# threads in every op (~10-50 us), as much as a small op's whole work, and a thread that loses
# its core to another process stalls every op. Measured on a 2-vCPU AMD EPYC VM (the bench's
# threads rows), lenet_300_100 at batch 60 (0.1 GFLOP): 1.8-2.6 vs 1.8-2.2 ms per step (1 vs 2
# threads) when the machine is idle, 4.1 vs 10.6 ms when other processes load it; two such runs
# side by side at 1 thread each train 1.8x as fast as one. Bigger steps (resnet20 at batch 128
# is ~30 GFLOP) gain from threads on an idle machine (1.5-1.8x), so they keep torch's count.
SMALL_STEP_FLOPS = 2e9
# torch's choice at import (all cores, or OMP_NUM_THREADS). A different count at train() time
# means the caller ran torch.set_num_threads, and that choice is respected.
_TORCH_DEFAULT_THREADS = torch.get_num_threads()
_MAC_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with torch using `n` CPU threads (None: unchanged), then restore the count."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def forward_macs(model: nn.Module, sample_shape: Sequence[int]) -> int | None:
    """Multiply-adds of one sample's forward pass through the conv and linear layers (None if it fails).

    Runs one forward of a zero sample in eval mode without gradients: batch-norm statistics,
    the RNG and the weights are untouched.
    """
    total = 0

    def hook(module: nn.Module, args: Any, out: Any) -> None:
        nonlocal total
        if not isinstance(out, torch.Tensor):
            return
        if isinstance(module, nn.Linear):
            total += out.numel() * module.in_features
        else:
            total += out.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)

    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros((1, *sample_shape), dtype=dtype, device=param.device if param is not None else "cpu")
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _MAC_LAYERS)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    except Exception:  # the estimate is only a hint; training reports real errors itself
        return None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def training_threads(model: nn.Module, sample_shape: Sequence[int], batch_size: int,
                     device: torch.device | str = "cpu") -> int | None:
    """CPU threads to train `model` with, or None to leave torch's setting alone (always None off the CPU).

    $TICKETX_THREADS wins. OMP_NUM_THREADS, MKL_NUM_THREADS or an earlier torch.set_num_threads
    are respected. Otherwise one thread when a step (3x the forward, 2 FLOPs per multiply-add)
    is under SMALL_STEP_FLOPS. The choice depends only on the model and the batch, never on the
    machine's load, so --deterministic runs stay bit-reproducible.
    """
    if torch.device(device).type != "cpu":
        return None
    env = os.environ.get("TICKETX_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise UsageError(f"TICKETX_THREADS must be a positive integer, got {env!r}")
        return int(env)
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    if torch.get_num_threads() != _TORCH_DEFAULT_THREADS or _TORCH_DEFAULT_THREADS <= 1:
        return None
    macs = forward_macs(model, sample_shape)
    if macs is None:
        return None
    return 1 if 6 * macs * batch_size < SMALL_STEP_FLOPS else None


def one_thread_on_cpu(device: torch.device | str) -> int | None:
    """1 for work on the CPU that is faster on one thread (pass to `cpu_threads`), None elsewhere."""
    return 1 if torch.device(device).type == "cpu" else None
