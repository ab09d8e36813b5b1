"""ticketx.data.torchvision_sets and places: every loader on tiny files in its real on-disk format.

Nothing here touches the network (the `offline` fixture makes every torchvision download fail
the way it fails offline); each test writes its own few files into tmp_path (datafiles.py)."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
import torch
from datafiles import CIFAR10_NAMES, PLACES, PLACES_COLORS, write_cifar10, write_cifar100, write_idx, write_places, write_svhn

from ticketx.data import decode, load_data
from ticketx.errors import TicketxError

pytestmark = pytest.mark.usefixtures("offline")


def test_cifar10_real_layout_and_decoded_cache(tmp_path, no_md5):
    written = write_cifar10(tmp_path)
    d = load_data("cifar10", tmp_path, download=False)
    assert d.classes == CIFAR10_NAMES
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (10, 3, 32, 32)
    assert d.train_y.tolist() == [i % 10 for i in range(20)]
    assert d.test_y.tolist() == list(range(10))
    # Row = red plane, green plane, blue plane: image 0 is the solid colour (10, 20, 30).
    assert d.train_x[0, :, 5, 7].tolist() == [10, 20, 30]
    assert torch.equal(d.train_x[0].reshape(-1), torch.from_numpy(written["first"]))
    assert (d.flip, d.crop_padding, d.channels, d.image_size) == (True, 4, 3, 32)
    # Decoded once: the raw files are no longer needed.
    assert (tmp_path / "cache" / "cifar10-v1.pt").is_file()
    shutil.rmtree(tmp_path / "cifar10")
    again = load_data("cifar10", tmp_path, download=False)
    assert torch.equal(again.train_x, d.train_x) and torch.equal(again.test_y, d.test_y)
    assert again.classes == d.classes
    # A damaged cache is not trusted: it is rebuilt from the raw files (here: gone, so an error).
    (tmp_path / "cache" / "cifar10-v1.pt").write_bytes(b"truncated")
    with pytest.raises(TicketxError, match="cifar10 is not in"):
        load_data("cifar10", tmp_path, download=False)


def test_cifar10_subset_resize_and_luminance(tmp_path, no_md5):
    write_cifar10(tmp_path)
    d = load_data("cifar10[0-2,7]", tmp_path, image_size=64, download=False)
    assert d.name == "cifar10[0-2,7]"
    assert d.classes == ["airplane", "automobile", "bird", "horse"]
    assert d.train_x.shape == (8, 3, 64, 64)
    assert sorted(Counter(d.train_y.tolist()).items()) == [(0, 2), (1, 2), (2, 2), (3, 2)]
    assert d.test_y.tolist() == [0, 1, 2, 3]
    assert d.crop_padding == 8  # 4 px at 32 px scales to 8 px at 64 px
    gray = load_data("cifar10", tmp_path, channels=1, download=False)
    assert gray.train_x.shape == (20, 1, 32, 32) and len(gray.mean) == 1
    # BT.601 luma of (10, 20, 30): 0.299*10 + 0.587*20 + 0.114*30 = 18.15 -> 18
    assert int(gray.train_x[0, 0, 3, 3]) == 18


def test_cifar100(tmp_path, no_md5):
    write_cifar100(tmp_path)
    d = load_data("cifar100[0,3,99]", tmp_path, download=False)
    assert d.classes == ["class00", "class03", "class99"]
    assert Counter(d.train_y.tolist()) == {0: 1, 1: 1, 2: 1}
    assert d.test_y.tolist() == [2]
    full = load_data("cifar100", tmp_path, download=False)
    assert full.num_classes == 100 and full.train_x.shape == (100, 3, 32, 32)


@pytest.mark.parametrize("name, sub", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_idx_files(tmp_path, name, sub):
    write_idx(tmp_path / name / sub / "raw")
    d = load_data(name, tmp_path, download=False)
    assert d.train_x.shape == (12, 1, 28, 28) and d.test_x.shape == (5, 1, 28, 28)
    assert d.train_y.tolist() == [i % 10 for i in range(12)]
    assert d.train_x[0, 0, 0, :3].tolist() == [1, 2, 3]
    assert (d.flip, d.crop_padding) == (False, 0)
    if name == "mnist":
        assert d.classes == [str(i) for i in range(10)]
    else:
        assert d.classes[0] == "T-shirt/top"
    rgb = load_data(name, tmp_path, image_size=32, channels=3, download=False)
    assert rgb.train_x.shape == (12, 3, 32, 32)


def test_svhn_mat_files(tmp_path, no_md5):
    write_svhn(tmp_path)
    d = load_data("svhn", tmp_path, download=False)
    assert d.train_x.shape == (6, 3, 32, 32) and d.test_x.shape == (3, 3, 32, 32)
    assert d.train_y.tolist() == [0, 2, 3, 4, 5, 6]  # the label 10 means the digit 0
    assert d.train_x[0, :, 5, 5].tolist() == [40, 50, 60]
    assert int(d.train_x[0, 0, 0, 1]) == 200 and int(d.train_x[0, 0, 1, 0]) == 40  # H and W not swapped
    assert (d.flip, d.crop_padding) == (False, 4)


def test_places365_decoded_at_requested_size_into_a_mapped_cache(tmp_path, no_md5, monkeypatch):
    write_places(tmp_path)
    d = load_data("places365", tmp_path, image_size=16, download=False)
    assert d.classes == PLACES
    assert d.train_x.shape == (6, 3, 16, 16) and d.test_x.shape == (3, 3, 16, 16)
    assert d.train_y.tolist() == [0, 0, 1, 1, 2, 2] and d.test_y.tolist() == [0, 1, 2]
    for i, label in enumerate(d.train_y.tolist()):
        got = d.train_x[i, :, 8, 8].int()
        assert (got - torch.tensor(PLACES_COLORS[label])).abs().max() <= 4  # JPEG rounding
    assert (d.flip, d.crop_padding) == (True, 2)  # 32 px at 256 px scales to 2 px at 16 px
    raw = tmp_path / "cache" / "places365-16px" / "train.u8"
    assert raw.stat().st_size == 6 * 3 * 16 * 16

    def boom(*args, **kwargs):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(decode, "decode_image", boom)
    again = load_data("places365", tmp_path, image_size=16, download=False)
    assert torch.equal(again.train_x, d.train_x) and torch.equal(again.test_y, d.test_y)
    with pytest.raises(TicketxError, match="decoded again"):
        load_data("places365", tmp_path, image_size=8, download=False)  # a new size is a new cache


@pytest.mark.parametrize(
    "name, folder, file",
    [
        ("cifar10", "cifar10", "cifar-10-python.tar.gz"),
        ("cifar100", "cifar100", "cifar-100-python.tar.gz"),
        ("mnist", "mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("fashion-mnist", "fashion-mnist", "FashionMNIST/raw/t10k-labels-idx1-ubyte"),
        ("svhn", "svhn", "train_32x32.mat"),
        ("places365", "places365", "categories_places365.txt"),
    ],
)
def test_missing_files_offline_is_one_clear_error(tmp_path, name, folder, file):
    with pytest.raises(TicketxError) as err:
        load_data(name, tmp_path, download=False)
    msg = str(err.value)
    assert type(err.value) is TicketxError
    assert msg.startswith(f"{name} is not in {tmp_path / folder}: put ")
    assert file in msg and "run with network access" in msg
    assert err.value.hint == "downloading is turned off"
    assert not (tmp_path / "cache").exists()


def test_failed_download_is_one_clear_error(tmp_path):
    with pytest.raises(TicketxError) as err:
        load_data("cifar10", tmp_path, download=True)
    assert f"cifar10 is not in {tmp_path / 'cifar10'}" in str(err.value)
    assert "cifar-10-python.tar.gz" in str(err.value)
    assert err.value.hint.startswith("download failed: URLError") and "unreachable" in err.value.hint


def test_corrupted_files_name_the_folder(tmp_path, no_md5):
    write_cifar10(tmp_path)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(TicketxError) as err:
        load_data("cifar10", tmp_path, download=False)
    assert f"cannot read cifar10 from {tmp_path / 'cifar10'}" in str(err.value)
    assert "corrupted" in err.value.hint
