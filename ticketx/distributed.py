"""One run on several GPUs or nodes: DistributedDataParallel under torchrun.

`torchrun --nproc-per-node N -m ticketx find ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK set; `cli.main()` calls `init()` and `teardown()`. Everything else asks this module:
`active()`, `rank()`, `world_size()`, `is_main()`. Without torchrun (or with WORLD_SIZE=1) every
function here is a no-op, so a single-process run executes exactly the code it always did.

What DDP changes, and where:
- train.py: each rank trains on its shard of every global batch (`Batches(shard=...)`), so the
  global batch, the learning-rate schedule and the number of steps are those of one device; the
  model is wrapped in DDP (gradients averaged over ranks); the running loss is averaged over
  ranks when read; every rank evaluates its block of the test set and the correct-answer counts
  are summed (integers: the sum is exact, and every rank holds the same history).
- store.py: only rank 0 writes or deletes files; the other ranks compute the same things and
  skip the write.
- A resumed run: every rank loads the same checkpoint, and `agree` checks that they did.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from typing import Any, Iterator

import torch
from torch import nn

from ticketx.errors import TicketxError, UsageError

# A rank that never reaches a collective (crashed, or a file the others cannot see) stops the
# run after this long instead of hanging forever (default 30 min in torch; a killed peer is
# noticed by torchrun much sooner).
TIMEOUT = _dt.timedelta(minutes=int(os.environ.get("TICKETX_DIST_TIMEOUT_MIN", "30")))


def launched() -> bool:
    """True when this process was started by torchrun (or another launcher) with WORLD_SIZE > 1."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if active() else 0


def is_main() -> bool:
    """Rank 0 (or no DDP): the process that writes files and prints."""
    return rank() == 0


def init() -> bool:
    """Join the process group torchrun describes (idempotent); True if DDP is on.

    One group with two backends: NCCL for CUDA tensors, gloo for CPU tensors, so `--device cpu`
    on a GPU machine and the small CPU objects exchanged here both work.
    """
    if active():
        return True
    if not launched():
        return False
    if not torch.distributed.is_available():  # pragma: no cover - builds without distributed
        raise UsageError("launched with WORLD_SIZE > 1 but this PyTorch has no torch.distributed")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise UsageError(f"WORLD_SIZE is set but {var} is not: launch with torchrun --nproc-per-node N -m ticketx ...")
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        # Before any CUDA work: each process uses the GPU of its local rank.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    torch.distributed.init_process_group(backend=backend, timeout=TIMEOUT)
    return True


def teardown(clean: bool = True) -> None:
    """Leave the process group; after a final barrier when `clean`, so no rank exits before rank 0 is done.

    After an error the barrier is skipped: the other ranks may be waiting in another collective
    (torchrun stops them when this process exits with an error).
    """
    if active():
        with contextlib.suppress(Exception):
            if clean:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def device_for(dev: torch.device) -> torch.device:
    """The device of this rank: a bare 'cuda' becomes cuda:LOCAL_RANK; anything else is kept."""
    if active() and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank() % torch.cuda.device_count())
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    return dev


def describe(dev: torch.device | str) -> str:
    """The device for provenance: 'cuda:0' alone, 'cuda:0 (DDP, 4 processes)' under DDP."""
    return f"{dev} (DDP, {world_size()} processes)" if active() else str(dev)


def barrier() -> None:
    if active():
        torch.distributed.barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """`obj` as rank `src` has it (a small picklable object), on every rank."""
    if not active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src, device=torch.device("cpu"))
    return box[0]


def agree(value: Any, what: str) -> None:
    """Raise on every rank unless all ranks hold the same `value` (e.g. the step a run resumes at).

    Ranks that decide differently would wait for each other forever; the usual cause is a folder
    that not every node sees.
    """
    if not active():
        return
    values: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise TicketxError(f"DDP ranks disagree on {what}: {values}",
                           "every rank must see the same files: put --out on a file system all nodes share")


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over ranks, in place (no-op without DDP)."""
    if active():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def shard() -> tuple[int, int]:
    """(rank, world size): which part of each global batch this process trains on."""
    return rank(), world_size()


def check_batch_size(batch_size: int) -> None:
    """Each rank must get an equal share of every global batch (DDP averages the ranks' gradients)."""
    world = world_size()
    if batch_size % world:
        raise UsageError(
            f"the batch size ({batch_size}) must be a multiple of the number of DDP processes ({world})",
            f"use --batch-size {batch_size - batch_size % world or world}, or another --nproc-per-node",
        )


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel (identical weights on every rank from here on)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    # DDP broadcasts rank 0's parameters and buffers here, so every rank starts identical.
    # Buffers are broadcast from rank 0 before each forward (the default): BatchNorm's running
    # statistics are then rank 0's; with SyncBatchNorm they are the global batch's.
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, output_device=device.index if ids else None)


def sync_bn_wanted() -> bool:
    """$TICKETX_SYNC_BN=1: batch statistics over the global batch (as on one device) instead of each shard."""
    return active() and os.environ.get("TICKETX_SYNC_BN", "").strip() not in ("", "0")


@contextlib.contextmanager
def sync_batchnorm(model: nn.Module, on: bool) -> Iterator[nn.Module]:
    """Swap every BatchNorm of `model` for a SyncBatchNorm for the duration, then put them back.

    The SyncBatchNorm shares the original's parameters and buffers (in-place updates reach both),
    so the optimizer, checkpoints and the caller's model see one set of tensors, and the model
    comes back with its own classes (a SyncBatchNorm cannot run outside a process group).
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    if on:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
                    sync = nn.SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                            child.track_running_stats)
                    if child.affine:
                        sync.weight, sync.bias = child.weight, child.bias
                    if child.track_running_stats:
                        sync.running_mean, sync.running_var = child.running_mean, child.running_var
                        sync.num_batches_tracked = child.num_batches_tracked
                    sync.train(child.training)
                    setattr(parent, name, sync)
                    swapped.append((parent, name, child))
    try:
        yield model
    finally:
        for parent, name, child in reversed(swapped):
            child.train(getattr(parent, name).training)
            setattr(parent, name, child)
