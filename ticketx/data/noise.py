"""Label noise on a training set: an exact fraction of each class's labels replaced by wrong ones.

Two modes, as in the noisy-label literature:
- symmetric: the wrong label is uniform over the other C - 1 classes (Nakkiran et al. 2020's
  double-descent experiments: "a uniformly random incorrect label");
- pairflip: class c becomes class c + 1 mod C (Han et al. 2018's "pair flipping").

Exactly round(fraction x n_c) examples of each class c are flipped, chosen by a permutation of that
class drawn from the noise stream (`ticketx.runtime.label_noise`), never from the data order's.
Every example's draw (its rank in its class and its symmetric offset) is made whatever the mode and
fraction, so the same examples are flipped in both modes, and those flipped at a lower fraction
are among those flipped at a higher one (same seed). Only training labels are ever noised: the
caller applies it to the training split after the validation split is taken.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ticketx.data.images import ImageData
from ticketx.errors import UsageError
from ticketx.runtime import label_noise as noise_stream

MODES = ("symmetric", "pairflip")


@dataclass(frozen=True)
class LabelNoise:
    """What was done to a training set's labels: the flipped examples and their true labels."""

    fraction: float
    mode: str
    seed: int
    flipped: torch.Tensor  # bool [N]: the examples whose label was replaced
    clean: torch.Tensor  # int64 [N]: the true labels

    @property
    def count(self) -> int:
        return int(self.flipped.sum())

    def as_dict(self) -> dict[str, Any]:
        """What a run's record says about its noise."""
        return {"fraction": self.fraction, "mode": self.mode, "seed": self.seed, "flipped": self.count,
                "examples": int(self.flipped.numel())}


def noisy_labels(y: torch.Tensor, num_classes: int, fraction: float, mode: str,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy labels, flipped bool mask): round(fraction x n_c) labels of each class c replaced (module docstring)."""
    if mode not in MODES:
        raise UsageError(f"unknown label-noise mode {mode!r}: choose {' or '.join(MODES)}")
    if not 0 <= fraction < 1:
        raise UsageError(f"label noise is a fraction in [0, 1), got {fraction!r}")
    if num_classes < 2:
        raise UsageError(f"label noise needs at least 2 classes, got {num_classes}")
    y = y.long()
    noisy, flipped = y.clone(), torch.zeros(len(y), dtype=torch.bool)
    for c in range(num_classes):
        idx = (y == c).nonzero().squeeze(1)
        # Both draws for every example of the class, in a fixed order, whatever the mode and fraction.
        order = torch.randperm(len(idx), generator=generator)
        offset = torch.randint(1, num_classes, (len(idx),), generator=generator)
        chosen = order[: round(fraction * len(idx))]
        shift = offset[chosen] if mode == "symmetric" else torch.ones(len(chosen), dtype=torch.long)
        noisy[idx[chosen]] = (c + shift) % num_classes
        flipped[idx[chosen]] = True
    return noisy, flipped


def add_label_noise(data: ImageData, fraction: float, mode: str, seed: int) -> tuple[ImageData, LabelNoise]:
    """`data` with noisy training labels (its test set untouched), and what was flipped."""
    noisy, flipped = noisy_labels(data.train_y, data.num_classes, fraction, mode, noise_stream(seed))
    return (dataclasses.replace(data, train_y=noisy),
            LabelNoise(float(fraction), mode, int(seed), flipped, data.train_y.long().clone()))
