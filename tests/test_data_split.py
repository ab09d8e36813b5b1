"""ticketx.data.split: the seeded, stratified validation hold-out."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from ticketx.data import ImageData, split_validation
from ticketx.errors import UsageError

pytestmark = pytest.mark.usefixtures("offline")


def make_data(n: int = 100, num_classes: int = 4) -> ImageData:
    # Image i carries its own index in pixel (0, 0), so splits can be checked for overlap.
    x = torch.zeros((n, 1, 4, 4), dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    y = torch.arange(n) % num_classes
    return ImageData("toy", [str(i) for i in range(num_classes)], x, y, x[:8].clone(), y[:8].clone(), (0.5,), (0.25,), False, 0)


def test_split_validation_sizes_disjoint_stratified_deterministic():
    data = make_data(100, 4)
    rest, (val_x, val_y) = split_validation(data, 0.1, seed=3)
    assert (len(rest.train_x), len(val_x)) == (90, 10) and len(rest.train_y) == 90 and len(val_y) == 10
    kept, held = set(rest.train_x[:, 0, 0, 0].tolist()), set(val_x[:, 0, 0, 0].tolist())
    assert not kept & held and len(kept | held) == 100
    assert torch.equal(val_y, val_x[:, 0, 0, 0].long() % 4)  # labels travel with their images
    assert sorted(Counter(val_y.tolist()).values()) == [2, 2, 3, 3]  # 2.5 per class, total exact
    assert torch.equal(rest.test_x, data.test_x)
    _, (val_again, _) = split_validation(data, 0.1, seed=3)
    _, (val_other, _) = split_validation(data, 0.1, seed=4)
    assert torch.equal(val_again, val_x) and not torch.equal(val_other, val_x)
    assert rest.mean != data.mean  # statistics recomputed on the smaller train set
    same, (empty_x, empty_y) = split_validation(data, 0.0, seed=0)
    assert same is data and empty_x.shape == (0, 1, 4, 4) and empty_y.shape == (0,)
    with pytest.raises(UsageError, match="validation fraction"):
        split_validation(data, 1.0, seed=0)
