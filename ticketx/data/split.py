"""Holding out data: a seeded, stratified split (the validation set, and digits' fixed test set)."""

from __future__ import annotations

import dataclasses
import math

import torch

from ticketx.data.images import ImageData
from ticketx.data.pixels import channel_stats
from ticketx.errors import UsageError
from ticketx.runtime import validation_split


def _held_per_class(y: torch.Tensor, fraction: float) -> tuple[torch.Tensor, list[int], list[int]]:
    """(labels, their counts, how many of each to hold out): round(fraction * N) in all, shared among
    classes by largest remainder, so per-class rounding never drifts the total; a class always keeps
    at least one sample."""
    y = y.long()
    labels, counts = torch.unique(y, sorted=True, return_counts=True)
    exact = [fraction * int(c) for c in counts]
    take = [math.floor(e) for e in exact]
    extra = round(fraction * len(y)) - sum(take)
    # Largest fractional part first; ties by class order, so the result is deterministic.
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - take[i]), i))
    for i in order[: max(0, extra)]:
        take[i] += 1
    sizes = counts.tolist()
    return labels, sizes, [min(k, c - 1) for k, c in zip(take, sizes)]


def held_out_count(y: torch.Tensor, fraction: float) -> int:
    """How many images `stratified_split(y, fraction, seed)` holds out, whatever the seed."""
    return sum(_held_per_class(y, fraction)[2]) if fraction > 0 else 0


def stratified_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held out), both sorted; `fraction` of every class held out (`_held_per_class`)."""
    y = y.long()
    labels, counts, take = _held_per_class(y, fraction)
    g = validation_split(seed)
    held = []
    for label, k in zip(labels.tolist(), take):
        idx = (y == label).nonzero().squeeze(1)
        held.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    held_idx = torch.sort(torch.cat(held)).values if held else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(y), dtype=torch.bool)
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
