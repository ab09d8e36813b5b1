"""The bottom layer: which device, how deterministic, and every random stream of the package.

Every random number ticketx draws comes from a stream derived here, by a named function that
says what the stream is for and what it depends on. Two streams never share numbers by
accident: each mixes its own inputs and, where inputs could coincide, a salt of its name.
Seeds are stable across runs, machines and Python versions (no `hash()`).

The derivations are part of ticketx's results: changing one changes numbers, so each function
below is kept exactly as it was when its results were recorded (the run keys carry a protocol
version for the day one must change).
"""

from __future__ import annotations

import hashlib
import os

import torch

from ticketx import distributed
from ticketx.errors import UsageError

# ---- devices and determinism ---------------------------------------------------------------


def resolve_device(name: str | None = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; under DDP a bare 'cuda' is the local rank's GPU."""
    if name in ("auto", "", None):
        return distributed.device_for(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"invalid device {name!r}: use auto, cpu, cuda or cuda:N") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available on this machine")
    return distributed.device_for(dev)


def set_deterministic(on: bool) -> None:
    """Bit-reproducible runs where PyTorch allows it.

    CPU: two runs with the same seeds give bit-identical tickets (masks, rewind weights,
    accuracies) on the same machine, torch version and thread count (tests/test_reliability.py).
    Another CPU type or thread count may round differently (other BLAS kernels).

    CUDA cannot always guarantee it:
    - ops without a deterministic CUDA kernel (e.g. the backward of adaptive/avg pooling,
      index_add_/scatter_add_, some interpolation backwards used by timm models) only *warn*
      here (warn_only=True) and stay nondeterministic, since refusing would stop those models;
    - cuBLAS is deterministic only with CUBLAS_WORKSPACE_CONFIG set before its first use in the
      process: set here if unset, which is too late when CUDA ran earlier in the same process;
    - results differ across GPU models, driver/CUDA/cuDNN versions and precisions (bf16/fp16).
    """
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # torch.use_deterministic_algorithms also imports torch._inductor (~2.5 s); the
        # switch it flips for eager mode is this one.
        setter = getattr(torch._C, "_set_deterministic_algorithms", None)
        if setter is not None:
            setter(True, warn_only=True)
        else:  # pragma: no cover - other torch versions
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


COMPILE_MODES = ("off", "auto", "on")


def compile_mode(value: str | bool | None = None) -> str:
    """'off', 'auto' or 'on': a --compile value, a bool, or (None) $TICKETX_COMPILE (unset: 'auto').

    The environment variable also takes 1/0 (its meaning before `auto` existed: 1 = on).
    What `auto` turns on is ticketx.train.COMPILE_AUTO's choice; never under --deterministic.
    """
    if isinstance(value, bool):
        return "on" if value else "off"
    from_env = value is None
    text = (os.environ.get("TICKETX_COMPILE", "") if from_env else str(value)).strip().lower()
    if from_env and text in ("", "1", "0"):
        text = {"": "auto", "1": "on", "0": "off"}[text]
    if text not in COMPILE_MODES:
        where = "TICKETX_COMPILE" if from_env else "--compile"
        raise UsageError(f"{where} must be one of {', '.join(COMPILE_MODES)}, got {text!r}")
    return text


def set_compile(mode: str) -> None:
    """Make `mode` the process's compile setting (and its worker processes': it is $TICKETX_COMPILE)."""
    os.environ["TICKETX_COMPILE"] = compile_mode(mode)


def deterministic_on() -> bool:
    """Whether `set_deterministic(True)` (or torch.use_deterministic_algorithms) is in force in this process."""
    return bool(torch.are_deterministic_algorithms_enabled())


# ---- seed arithmetic -----------------------------------------------------------------------


def seed_for(*parts: int) -> int:
    """An independent 63-bit seed from integers (FNV-1a style; stable across runs and machines)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


def salt(name: str) -> int:
    """A stable 56-bit number for a stream's name, so streams with the same inputs never share numbers."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:7], "big")


def generator(seed: int) -> torch.Generator:
    """A CPU generator at `seed` (every stream's numbers are drawn on the CPU: the same on any device)."""
    return torch.Generator().manual_seed(int(seed))


# ---- the streams ---------------------------------------------------------------------------
# Training


def data_order(data_seed: int, epoch: int) -> torch.Generator:
    """An epoch's data order and augmentation: a pure function of (data seed, epoch), so a run
    resumes exactly and every round of a ticket search sees the same order (open_lth uses one data
    order per level)."""
    return generator(seed_for(data_seed, epoch))


def dropout_seed(data_seed: int, epoch: int, rank: int | None = None) -> int:
    """Dropout and other stochastic layers in an epoch; under DDP each rank's shard gets its own stream."""
    return seed_for(data_seed, epoch, 1) if rank is None else seed_for(data_seed, epoch, 1, rank)


def validation_split(seed: int) -> torch.Generator:
    """Which training images are held out as the validation split."""
    return generator(seed)


def label_noise(noise_seed: int) -> torch.Generator:
    """Which training labels are replaced, and by what (ticketx.data.noise): its own stream, never the data
    order's, so the noisy labels depend on the noise seed alone (for a given training set, mode and fraction)."""
    return generator(seed_for(noise_seed, salt("label-noise")))


# Ticket search


def seed_weights(seed: int) -> None:
    """Seed the global generator a model builder draws its initial weights (and dropout masks) from.

    A search builds its network right after `seed_weights(init_seed)`, so a PaI ticket and an IMP
    ticket with the same init seed start from the same weights; a transfer arm right after
    `seed_weights(arm_seed(...))`.
    """
    torch.manual_seed(int(seed))


def prune_round(init_seed: int, data_seed: int, round_: int) -> torch.Generator:
    """The random numbers a pruning criterion may use in round `round_` (the `random` criterion)."""
    return generator(seed_for(init_seed, data_seed, round_))


def own_ticket_init(seed: int) -> int:
    """The init seed of a study's own ticket searched from an initialisation independent of the source ticket's."""
    return seed_for(seed, salt("own-ticket-init")) % (2**31)


def score_sample(seed: int) -> torch.Generator:
    """Which training images score the weights of a pruning-at-initialisation method (SNIP, GraSP)."""
    return generator(seed_for(seed, 0x5A1))


# Transfer


def transfer_data_seed(seed: int, pair_round: int) -> int:
    """The data seed of every arm compared at the ticket's round `pair_round` (paired: one order for all)."""
    return seed_for(seed, pair_round)


# Streams whose numbers do not depend on the round: the networks of one seed then differ across
# rounds only by their masks.
ROUND_FREE_ARM_STREAMS = ("head-weights", "fresh-weights")


def arm_seed(ticket: int, seed: int, stream: str, round_: int) -> int:
    """One random stream of one arm of a transfer: from the ticket it controls, the seed, the stream's name and
    (for mask streams) the round. Two different tickets never share a random mask, a new output layer or a
    re-initialisation, so their controls are independent samples."""
    if stream in ROUND_FREE_ARM_STREAMS:
        return seed_for(ticket, seed, salt(stream))
    return seed_for(ticket, seed, salt(stream), round_)


# Stability


def evaluation_subset(seed: int) -> torch.Generator:
    """A fixed random subset of a set to evaluate on (stability's train error, batch-norm re-estimation)."""
    return generator(seed)
