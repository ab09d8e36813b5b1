"""ticketx.data.imagefolder: the user's own image folders, decoded once and cached."""

from __future__ import annotations

import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CIFAR_JPG
from datafiles import CIFAR10_NAMES, write_folder
from PIL import Image

from ticketx.data import decode, load_data
from ticketx.errors import TicketxError, UsageError

pytestmark = pytest.mark.usefixtures("offline")


def test_imagefolder_decodes_once_then_uses_the_cache(tmp_path, monkeypatch):
    src = tmp_path / "pets"
    write_folder(src, "train", ["cat", "dog", "emu"], n=3)
    write_folder(src, "test", ["cat", "dog", "emu"], n=2)
    (src / "train" / "cat" / "notes.txt").write_text("not an image")
    (src / "train" / "cat" / "._000.png").write_bytes(b"macOS resource fork")
    root = tmp_path / "root"
    calls = []
    real = decode.decode_image
    monkeypatch.setattr(decode, "decode_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    d = load_data(f"imagefolder:{src}", root)
    assert len(calls) == 15
    assert d.name == f"imagefolder:{src}" and d.classes == ["cat", "dog", "emu"]
    assert d.train_x.shape == (9, 3, 12, 12) and d.test_x.shape == (6, 3, 12, 12)
    assert d.train_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and d.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert (d.train_x[:, 0, 0, 0] // 10).tolist() == d.train_y.tolist()  # each image under its own label
    assert d.train_x[0, :, 0, 0].tolist() == [1, 100, 200]
    assert (d.flip, d.crop_padding) == (True, 0)  # 12 px: too small to crop
    assert len(list((root / "cache").glob("imagefolder-*.pt"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(decode, "decode_image", boom)
    again = load_data(f"imagefolder:{src}", root)
    assert torch.equal(again.train_x, d.train_x) and torch.equal(again.test_y, d.test_y)
    sub = load_data(f"imagefolder:{src}[1-2]", root)  # a class subset reuses the same cache
    assert sub.classes == ["dog", "emu"] and sub.train_y.tolist() == [0, 0, 0, 1, 1, 1]

    # Replacing a file changes the key: the folder is decoded again.
    Image.new("RGB", (12, 12), (5, 5, 5)).save(src / "test" / "dog" / "001.png")
    os.utime(src / "test" / "dog" / "001.png", ns=(1, 1))
    with pytest.raises(TicketxError, match="decoded again"):
        load_data(f"imagefolder:{src}", root)


def test_imagefolder_val_split_and_grayscale(tmp_path):
    src = tmp_path / "gray"
    write_folder(src, "train", ["a", "b"], n=2, size=(20, 20), mode="L")
    write_folder(src, "val", ["a", "b"], n=1, size=(20, 20), mode="L")
    d = load_data(f"imagefolder:{src}", tmp_path / "root")
    assert d.train_x.shape == (4, 1, 20, 20) and d.test_x.shape == (2, 1, 20, 20)  # all gray: 1 channel
    assert d.test_y.tolist() == [0, 1] and int(d.test_x[1, 0, 0, 0]) == 11
    assert d.crop_padding == 2  # 20 // 8
    rgb = load_data(f"imagefolder:{src}", tmp_path / "root", channels=3, image_size=32)
    assert rgb.train_x.shape == (4, 3, 32, 32) and rgb.crop_padding == 4


def test_imagefolder_mixed_sizes_and_modes(tmp_path):
    src = tmp_path / "mixed"
    write_folder(src, "train", ["a"], n=1, size=(16, 16), mode="RGB")
    write_folder(src, "train", ["b"], n=1, size=(30, 24), mode="L")  # another size, grayscale
    (src / "train" / "b" / "000.png").rename(src / "train" / "b" / "x.png")
    Image.new("RGBA", (8, 8), (7, 8, 9, 128)).save(src / "train" / "b" / "y.png")
    Image.new("RGB", (16, 16), (50, 60, 70)).save(src / "train" / "b" / "z.jpg", quality=95)
    write_folder(src, "test", ["a", "b"], n=1, size=(16, 16))
    d = load_data(f"imagefolder:{src}", tmp_path / "root")
    assert d.train_x.shape == (4, 3, 16, 16)  # the first image's size, RGB because some are colour
    assert d.train_x[1, :, 8, 8].tolist() == [1, 1, 1]  # gray replicated (written as the only class: value 1)
    assert d.train_x[2, :, 4, 4].tolist() == [7, 8, 9]  # alpha dropped, upsized
    assert (d.train_x[3, :, 8, 8].int() - torch.tensor([50, 60, 70])).abs().max() <= 3
    sized = load_data(f"imagefolder:{src}", tmp_path / "root", image_size=24)
    assert sized.train_x.shape == (4, 3, 24, 24) and sized.crop_padding == 3


def test_imagefolder_layout_errors(tmp_path):
    src = tmp_path / "bad"
    write_folder(src, "train", ["cat", "dog"], n=1)
    with pytest.raises(UsageError, match="has no test/ \\(or val/\\) folder"):
        load_data(f"imagefolder:{src}", tmp_path)
    write_folder(src, "test", ["cat", "cow"], n=1)
    with pytest.raises(UsageError) as err:
        load_data(f"imagefolder:{src}", tmp_path)
    assert "classes of" in str(err.value) and "['dog']" in str(err.value) and "['cow']" in str(err.value)
    with pytest.raises(UsageError, match="does not exist"):
        load_data(f"imagefolder:{tmp_path / 'nowhere'}", tmp_path)
    with pytest.raises(UsageError, match="has no train/ folder"):
        load_data(f"imagefolder:{src / 'test'}", tmp_path)


def test_imagefolder_class_range_and_corrupt_image(tmp_path):
    src = tmp_path / "two"
    write_folder(src, "train", ["a", "b"], n=1)
    write_folder(src, "test", ["a", "b"], n=1)
    with pytest.raises(UsageError, match="class 2 out of range .* it has 2 classes"):
        load_data(f"imagefolder:{src}[1-2]", tmp_path)
    (src / "train" / "b" / "000.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(TicketxError) as err:
        load_data(f"imagefolder:{src}", tmp_path)
    assert str(src / "train" / "b" / "000.png") in str(err.value)


def _cifar10_jpg() -> Path:
    for path in CIFAR_JPG:
        if path.is_file():
            return path
    pytest.skip("real CIFAR-10 JPEG archive not found (../shared/data/cifar10-jpg.tar.gz)")


@pytest.mark.realdata
def test_real_cifar10_jpeg_folder(tmp_path, monkeypatch):
    archive = _cifar10_jpg()
    src = tmp_path / "cifar10-jpg"
    taken: Counter = Counter()
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:  # extract while streaming: one pass over the gzip, 20 images per class
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and taken[parts[0], parts[1]] < 20:
                taken[parts[0], parts[1]] += 1
                tar.extract(member, src, filter="data")
    assert sum(taken.values()) == 400
    d = load_data(f"imagefolder:{src}", tmp_path / "root")
    assert d.classes == sorted(CIFAR10_NAMES)
    assert d.train_x.shape == (200, 3, 32, 32) and d.test_x.shape == (200, 3, 32, 32)
    assert Counter(d.train_y.tolist()) == {i: 20 for i in range(10)}
    assert Counter(d.test_y.tolist()) == {i: 20 for i in range(10)}
    assert (d.flip, d.crop_padding, d.num_classes) == (True, 4, 10)
    assert all(0.35 < m < 0.6 for m in d.mean) and all(0.15 < s < 0.35 for s in d.std)  # natural photos
    # Pixels are the JPEG's own: decode one file independently and compare.
    first = sorted((src / "train" / d.classes[0]).iterdir())[0]
    assert torch.equal(d.train_x[0], torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1))
    monkeypatch.setattr(decode, "decode_image", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = load_data(f"imagefolder:{src}[0-4]", tmp_path / "root")
    assert again.train_x.shape == (100, 3, 32, 32) and again.classes == sorted(CIFAR10_NAMES)[:5]
    assert torch.equal(again.train_x, d.train_x[d.train_y < 5])
