"""Holding out data: a seeded, stratified split (the validation set, and digits' fixed test set)."""

from __future__ import annotations

import dataclasses
import math

import torch

from ticketx.data.images import ImageData
from ticketx.data.pixels import channel_stats
from ticketx.errors import UsageError
from ticketx.runtime import validation_split


def stratified_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held out), both sorted; `fraction` of every class held out.

    The total held out is round(fraction * N), shared among classes by largest remainder, so
    per-class rounding never drifts the total; a class always keeps at least one sample.
    """
    y = y.long()
    n = len(y)
    labels, counts = torch.unique(y, sorted=True, return_counts=True)
    exact = [fraction * int(c) for c in counts]
    take = [math.floor(e) for e in exact]
    extra = round(fraction * n) - sum(take)
    # Largest fractional part first; ties by class order, so the result is deterministic.
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - take[i]), i))
    for i in order[: max(0, extra)]:
        take[i] += 1
    g = validation_split(seed)
    held = []
    for label, count, k in zip(labels.tolist(), counts.tolist(), take):
        k = min(k, count - 1)
        idx = (y == label).nonzero().squeeze(1)
        held.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    held_idx = torch.sort(torch.cat(held)).values if held else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(n, dtype=torch.bool)
    keep[held_idx] = False
    return keep.nonzero().squeeze(1), held_idx


def split_validation(data: ImageData, fraction: float, seed: int) -> tuple[ImageData, tuple[torch.Tensor, torch.Tensor]]:
    """Hold out a seeded, stratified `fraction` of train: (data with the rest, (val_x, val_y))."""
    if not 0 <= fraction < 1:
        raise UsageError(f"invalid validation fraction {fraction!r}: expected 0 <= fraction < 1")
    if fraction == 0:
        c, h, w = data.train_x.shape[1:]
        return data, (torch.empty((0, c, h, w), dtype=torch.uint8), torch.empty(0, dtype=torch.long))
    keep, held = stratified_split(data.train_y, fraction, seed)
    train_x = data.train_x[keep]
    # Statistics come from the images actually trained on, never from the held-out ones.
    mean, std = channel_stats(train_x)
    rest = dataclasses.replace(data, train_x=train_x, train_y=data.train_y[keep], mean=mean, std=std)
    return rest, (data.train_x[held], data.train_y[held])
