"""The training hot path: batches cut from a uint8 tensor that lives on the training device.

cifar10-airbench `CifarLoader` style: indexing a uint8 tensor on the device and doing crop/flip
for the whole batch at once is far faster than per-sample PIL transforms in a DataLoader
(measured by `ticketx bench`: ~14x on a 2-vCPU CPU, README "Performance").
"""

from __future__ import annotations

import math
from typing import Iterator, Literal, Sequence

import torch
import torch.nn.functional as F

from ticketx.errors import TicketxError
from ticketx.threads import cpu_threads, one_thread_on_cpu


class Batches:
    """Tensor-resident batches (cifar10-airbench style): uint8 on the training device is far faster than per-sample PIL.

    The whole set is moved to `device` once as uint8 (4x smaller than float). Each epoch draws
    one permutation and all crop offsets and flip coins up front from `generator`, then cuts
    batches by indexing and augments the whole batch with tensor ops.

    `shard=(rank, world)` (DDP): training batches are the global batches of a single process,
    each cut into `world` contiguous parts of which this rank gets part `rank` (the permutation
    and augmentation are drawn for the whole set from the same generator on every rank, so the
    ranks' parts together are exactly the one-process batch); `len()` is the global count.
    Unshuffled (evaluation) batches cover this rank's contiguous block of the set instead.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        crop_padding: int = 0,
        flip: bool = False,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        drop_last: bool | None = None,
        pad_mode: Literal["zeros", "reflect"] = "zeros",
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"Batches needs uint8 images [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        if len(x) == 0:
            raise TicketxError("no images to make batches from (the data set or class subset is empty)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        channels = x.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {channels}-channel images")
        if pad_mode not in ("zeros", "reflect"):
            raise ValueError(f"pad_mode must be 'zeros' or 'reflect', got {pad_mode!r}")
        if pad_mode == "reflect" and crop_padding >= min(x.shape[-2:]):
            raise ValueError(f"reflection padding {crop_padding} needs images larger than that")
        rank, world = shard
        if not 0 <= rank < world:
            raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
        self.shard = (int(rank), int(world))
        self.device = torch.device(device)
        # The images keep their layout: on CPU `x` may be a memory-mapped cache far larger than
        # RAM (Places365), and a channels_last copy would read all of it. Batches come out in
        # channels_last from the normalisation instead (`_normalise`).
        self.batch_size = min(batch_size, len(x))
        self.train = train
        if world > 1 and not train:  # evaluation: this rank's block of the set
            lo, hi = rank * len(x) // world, (rank + 1) * len(x) // world
            x, y = x[lo:hi], y[lo:hi]
        self.x = x.to(self.device)
        self.y = y.to(self.device, dtype=torch.long)
        # Augmentation only ever applies to training batches.
        self.crop_padding = int(crop_padding) if train else 0
        self.flip = bool(flip) and train
        self.pad_mode = pad_mode
        self.channels_last = channels_last
        self.dtype = dtype
        self.drop_last = train if drop_last is None else drop_last
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(v) for v in std)
        # x_float = x_uint8 / 255 ... normalised = (x/255 - mean) / std = x * scale + shift:
        # one fused multiply-add per batch instead of divide, subtract, divide.
        std_t = torch.tensor([float(s) for s in std], dtype=torch.float32)
        mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std_t)).view(1, channels, 1, 1).to(self.device)
        self._shift = (-mean_t / std_t).view(1, channels, 1, 1).to(self.device)

    def unaugmented(self, batch_size: int, keep: torch.Tensor | None = None) -> "Batches":
        """This set's images (only those where the bool `keep` is true), in order, as evaluation batches:
        same device, layout, precision, normalisation and shard, no augmentation (what the network trained on,
        measured as it is)."""
        x, y = (self.x, self.y) if keep is None else (self.x[keep.to(self.device)], self.y[keep.to(self.device)])
        return Batches(x, y, batch_size=batch_size, mean=self.mean, std=self.std, train=False, device=self.device,
                       channels_last=self.channels_last, dtype=self.dtype, shard=self.shard)

    def __len__(self) -> int:
        n = len(self.x)
        return max(1, n // self.batch_size) if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch()

    def epoch(self, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass: (float images [B, C, H, W] in `dtype`, int64 labels [B]) on the device."""
        n, bs, steps = len(self.x), self.batch_size, len(self)
        order = offsets = flips = None
        if self.train:
            # Everything random is drawn here, on the CPU generator, in a fixed order: the same
            # seed gives the same batches on any device.
            order = torch.randperm(n, generator=generator).to(self.device)
            p = self.crop_padding
            if p > 0:
                offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=generator).to(self.device)
            if self.flip:
                flips = (torch.rand(n, generator=generator) < 0.5).to(self.device)
        rank, world = self.shard
        for b in range(steps):
            sl = slice(b * bs, min(n, (b + 1) * bs))
            if order is not None and world > 1:  # this rank's contiguous part of global batch b
                width = sl.stop - sl.start
                sl = slice(sl.start + rank * width // world, sl.start + (rank + 1) * width // world)
            # A batch is a few small memory-bound ops: a second thread gains little (measured on a
            # 2-vCPU VM: 55k vs 81k CIFAR images/s when idle, either way ~1% of a resnet20 step) and
            # stalls badly when other processes compete for the cores (13k images/s at 2 threads).
            with cpu_threads(one_thread_on_cpu(self.device)):  # restored before the consumer's training step
                if order is None:
                    xb, yb = self.x[sl], self.y[sl]
                else:
                    idx = order[sl]
                    xb, yb = self.x[idx], self.y[idx]
                    if offsets is not None:
                        xb = random_crop(xb, offsets[sl], self.crop_padding, self.pad_mode)
                    if flips is not None:
                        xb = torch.where(flips[sl].view(-1, 1, 1, 1), xb.flip(3), xb)
                out = self._normalise(xb)
            yield out, yb

    def _normalise(self, xb: torch.Tensor) -> torch.Tensor:
        # One pass from uint8 to the output: the int->float conversion, the normalisation and
        # the memory-format change are a single addcmul writing into a tensor of the wanted
        # layout and dtype (no float temporary, no extra channels_last copy).
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        out = torch.empty(xb.shape, dtype=self.dtype, device=xb.device, memory_format=fmt)
        return torch.addcmul(self._shift, xb, self._scale, out=out)


def random_crop(x: torch.Tensor, offsets: torch.Tensor, padding: int, mode: str = "zeros") -> torch.Tensor:
    """Pad a batch by `padding` and crop each image back at its own (dy, dx) in [0, 2*padding].

    Zero padding matches torchvision's RandomCrop(size, padding) used by open_lth and
    Frankle & Carbin 2019; 'reflect' is cifar10-airbench's choice. Every image gets its own
    offset with no Python loop.
    """
    b, c, h, w = x.shape
    p = padding
    padded = F.pad(x, (p, p, p, p), mode="constant" if mode == "zeros" else "reflect")
    # Every crop window as a strided view [B, C, 2p+1, 2p+1, H, W] (no copy); one advanced
    # index then copies each sample's own window. ~1.5x faster on CPU than two gathers with
    # full-size int64 index tensors, and the same kernel on CUDA.
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)
    return windows[torch.arange(b, device=x.device), :, offsets[:, 0], offsets[:, 1]]
