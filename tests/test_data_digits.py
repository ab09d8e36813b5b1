"""ticketx.data.digits: the digits set, its split and its determinism."""

from __future__ import annotations

import pytest
import torch

from ticketx.data import load_data

pytestmark = pytest.mark.usefixtures("offline")


def test_digits_shapes_split_and_determinism():
    from sklearn.datasets import load_digits

    d = load_data("digits")
    assert d.train_x.shape[1:] == (1, 8, 8) and d.test_x.shape[1:] == (1, 8, 8)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert (len(d.train_x), len(d.test_x)) == (1438, 359)  # 20% of 1797, rounded
    assert d.classes == [str(i) for i in range(10)] and d.num_classes == 10
    assert (d.channels, d.image_size, d.flip, d.crop_padding) == (1, 8, False, 0)
    assert int(d.train_x.max()) == 255 and int(d.train_x.min()) == 0
    # Stratified: every class has ~20% of its images in test; no image is lost.
    target = torch.as_tensor(load_digits().target)
    all_y = torch.cat([d.train_y, d.test_y])
    assert torch.equal(torch.bincount(all_y), torch.bincount(target))
    share = torch.bincount(d.test_y) / torch.bincount(target)
    assert float(share.min()) > 0.18 and float(share.max()) < 0.22
    # The same split every time, independent of the global seed.
    torch.manual_seed(123)
    again = load_data("digits")
    assert torch.equal(again.test_x, d.test_x) and torch.equal(again.train_y, d.train_y)
    assert len(d.mean) == 1 and 0.2 < d.mean[0] < 0.4
