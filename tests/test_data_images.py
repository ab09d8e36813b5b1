"""ticketx.data.images and pixels: class subsets, shape adaptation, load_data's argument checks."""

from __future__ import annotations

import pytest
import torch

from ticketx.data import load_data
from ticketx.errors import UsageError

pytestmark = pytest.mark.usefixtures("offline")


def test_class_subset_is_relabelled_in_sorted_order():
    full = load_data("digits")
    sub = load_data("digits[7,3,5]")
    assert sub.name == "digits[3,5,7]"
    assert sub.classes == ["3", "5", "7"] and sub.num_classes == 3
    assert sorted(sub.train_y.unique().tolist()) == [0, 1, 2]
    for new, old in enumerate([3, 5, 7]):
        assert int((sub.train_y == new).sum()) == int((full.train_y == old).sum())
        assert int((sub.test_y == new).sum()) == int((full.test_y == old).sum())
        assert torch.equal(sub.train_x[sub.train_y == new], full.train_x[full.train_y == old])


def test_adapt_grayscale_to_rgb_and_resize():
    d = load_data("digits", image_size=28, channels=3)
    assert d.train_x.shape == (1438, 3, 28, 28) and d.test_x.shape == (359, 3, 28, 28)
    assert d.train_x.is_contiguous() and d.train_x.dtype == torch.uint8
    assert torch.equal(d.train_x[:, 0], d.train_x[:, 1]) and torch.equal(d.train_x[:, 0], d.train_x[:, 2])
    assert len(d.mean) == 3 and d.mean[0] == pytest.approx(d.mean[2])
    # The resize is a real antialiased resize of the native images, not a crop or a pad.
    native = load_data("digits")
    expected = torch.nn.functional.interpolate(native.train_x[:5], size=(28, 28), mode="bilinear", antialias=True)
    assert torch.equal(d.train_x[:5, :1], expected)
    # Downsizing works too, and 'channels=1' on a gray set is a no-op.
    small = load_data("digits", image_size=4, channels=1)
    assert small.train_x.shape == (1438, 1, 4, 4)


@pytest.mark.parametrize("kwargs, fragment", [({"image_size": 0}, "invalid image size"), ({"channels": 2}, "invalid channel count")])
def test_bad_adaptation_arguments(kwargs, fragment):
    with pytest.raises(UsageError, match=fragment):
        load_data("digits", **kwargs)
