"""ticketx.data: every loader on tiny files in its real on-disk format, parsing, adaptation, batches.

Nothing here touches the network: an autouse fixture makes every torchvision download fail the
way it fails offline, and each test writes its own few images into tmp_path.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ticketx import data as D
from ticketx.data import (
    DATASETS,
    Batches,
    DataSpec,
    ImageData,
    data_root,
    dataset_rows,
    load_data,
    parse_data,
    split_validation,
)
from ticketx.errors import TicketxError, UsageError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ------------------------------------------------------------------------------------------
# Fixtures and writers of each set's real on-disk format
# ------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No test may download: every torchvision fetch fails as it does without network."""
    from urllib.error import URLError

    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.mnist as mnist
    import torchvision.datasets.places365 as places365
    import torchvision.datasets.svhn as svhn
    import torchvision.datasets.utils as utils

    def fail(*args, **kwargs):
        raise URLError("[Errno 101] Network is unreachable")

    for module, name in [
        (cifar, "download_and_extract_archive"),
        (mnist, "download_and_extract_archive"),
        (places365, "download_and_extract_archive"),
        (svhn, "download_url"),
        (utils, "download_url"),
        (utils, "download_and_extract_archive"),
    ]:
        monkeypatch.setattr(module, name, fail)
    # Never fall back to the user's real cache folder.
    monkeypatch.setenv("TICKETX_DATA", str(tmp_path / "env-root"))


@pytest.fixture
def no_md5(monkeypatch):
    """Our tiny files have the real layout but not the real checksums: accept any existing file."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.places365 as places365
    import torchvision.datasets.svhn as svhn

    def exists(fpath, md5=None):
        return os.path.isfile(fpath)

    for module in (cifar, svhn, places365):
        monkeypatch.setattr(module, "check_integrity", exists)


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _cifar_rows(labels: list[int], seed: int) -> np.ndarray:
    # One row of 3072 bytes per image: the red plane, then green, then blue (CIFAR's layout).
    return np.random.default_rng(seed).integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)


def write_cifar10(root: Path) -> dict:
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    first = None
    for b in range(1, 6):
        labels = [(4 * (b - 1) + j) % 10 for j in range(4)]
        rows = _cifar_rows(labels, b)
        if b == 1:
            rows[0, :1024], rows[0, 1024:2048], rows[0, 2048:] = 10, 20, 30
            first = rows[0]
        batch = {"batch_label": f"training batch {b} of 5", "labels": labels, "data": rows, "filenames": [f"{j}.png" for j in range(4)]}
        _pickle(folder / f"data_batch_{b}", batch)
    test_labels = list(range(10))
    test = {"batch_label": "testing batch 1 of 1", "labels": test_labels, "data": _cifar_rows(test_labels, 9), "filenames": []}
    _pickle(folder / "test_batch", test)
    _pickle(folder / "batches.meta", {"num_cases_per_batch": 4, "label_names": CIFAR10_NAMES, "num_vis": 3072})
    return {"first": first}


def write_cifar100(root: Path) -> None:
    folder = root / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    train_labels = [i % 100 for i in range(0, 300, 3)]  # 100 images, classes 0,3,6,...
    train = {"fine_labels": train_labels, "coarse_labels": [0] * 100, "data": _cifar_rows(train_labels, 1), "filenames": []}
    _pickle(folder / "train", train)
    _pickle(folder / "test", {"fine_labels": [5, 7, 99], "coarse_labels": [0] * 3, "data": _cifar_rows([0] * 3, 2), "filenames": []})
    _pickle(folder / "meta", {"fine_label_names": [f"class{i:02d}" for i in range(100)], "coarse_label_names": ["c"] * 20})


def write_idx(folder: Path, train_n: int = 12, test_n: int = 5) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train_n), ("t10k", test_n)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, :3] = (1, 2, 3)
        labels = np.arange(n, dtype=np.uint8) % 10
        # IDX: big-endian magic 0x00000803 (uint8, 3 dims) then the dims; 0x00000801 for labels.
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())


def write_svhn(root: Path) -> None:
    sio = pytest.importorskip("scipy.io")
    folder = root / "svhn"
    folder.mkdir(parents=True)
    for split, n in (("train", 6), ("test", 3)):
        x = np.zeros((32, 32, 3, n), dtype=np.uint8)  # SVHN stores H x W x C x N
        x[:, :, 0, :], x[:, :, 1, :], x[:, :, 2, :] = 40, 50, 60
        x[0, 1, 0, 0] = 200  # row 0, column 1, red, first image
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # labels 1..10; 10 means digit 0
        y[0, 0] = 10
        sio.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})


PLACES = ["/a/airfield", "/b/beach", "/c/canyon"]
PLACES_COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def write_places(root: Path) -> None:
    folder = root / "places365"
    folder.mkdir(parents=True)
    (folder / "categories_places365.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(PLACES)))
    train_lines, val_lines = [], []
    for label, cls in enumerate(PLACES):
        for j in range(2):
            rel = f"{cls}/{j + 1:08d}.jpg"
            path = folder / "data_256_standard" / rel.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 24), PLACES_COLORS[label]).save(path, quality=95)
            train_lines.append(f"{rel} {label}\n")
        name = f"Places365_val_{label + 1:08d}.jpg"
        (folder / "val_256").mkdir(exist_ok=True)
        Image.new("RGB", (24, 24), PLACES_COLORS[label]).save(folder / "val_256" / name, quality=95)
        val_lines.append(f"{name} {label}\n")
    (folder / "places365_train_standard.txt").write_text("".join(train_lines))
    (folder / "places365_val.txt").write_text("".join(val_lines))


def write_folder(root: Path, split: str, classes: list[str], n: int = 3, size=(12, 12), mode: str = "RGB", ext: str = "png") -> None:
    """PNG images whose red value encodes (class, index): 10 * class + index + 1."""
    for label, cls in enumerate(classes):
        folder = root / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            v = 10 * label + i + 1
            color = v if mode == "L" else (v, 100, 200) if mode == "RGB" else (v, 100, 200, 255)
            Image.new(mode, (size[1], size[0]), color).save(folder / f"{i:03d}.{ext}")


def make_data(n: int = 100, num_classes: int = 4) -> ImageData:
    # Image i carries its own index in pixel (0, 0), so splits can be checked for overlap.
    x = torch.zeros((n, 1, 4, 4), dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    y = torch.arange(n) % num_classes
    return ImageData("toy", [str(i) for i in range(num_classes)], x, y, x[:8].clone(), y[:8].clone(), (0.5,), (0.25,), False, 0)


# ------------------------------------------------------------------------------------------
# parse_data
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, base, classes, name",
    [
        ("cifar10", "cifar10", None, "cifar10"),
        ("cifar10[0-4]", "cifar10", (0, 1, 2, 3, 4), "cifar10[0-4]"),
        ("cifar100[0,5,7]", "cifar100", (0, 5, 7), "cifar100[0,5,7]"),
        ("cifar10[0-2,7]", "cifar10", (0, 1, 2, 7), "cifar10[0-2,7]"),
        (" CIFAR10[7, 0-2] ", "cifar10", (0, 1, 2, 7), "cifar10[0-2,7]"),
        ("cifar10[3,4]", "cifar10", (3, 4), "cifar10[3,4]"),
        ("cifar10[0-9]", "cifar10", None, "cifar10"),  # every class = the whole set
        ("digits", "digits", None, "digits"),
        ("fashion-mnist", "fashion-mnist", None, "fashion-mnist"),
        ("fashion_mnist", "fashion-mnist", None, "fashion-mnist"),
        ("fmnist[1-3]", "fashion-mnist", (1, 2, 3), "fashion-mnist[1-3]"),
        ("places365[364]", "places365", (364,), "places365[364]"),
    ],
)
def test_parse_good(text, base, classes, name):
    spec = parse_data(text)
    assert spec == DataSpec(base, classes)
    assert spec.name == name
    assert parse_data(spec.name) == spec  # the canonical name parses back to itself


def test_parse_imagefolder_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = parse_data("imagefolder:pets[0-4]")
    assert spec.base == f"imagefolder:{tmp_path / 'pets'}"
    assert spec.classes == (0, 1, 2, 3, 4)
    assert spec.name == f"imagefolder:{tmp_path / 'pets'}[0-4]"
    # Brackets inside the path are part of the path; only a trailing [...] selects classes.
    assert parse_data("imagefolder:/data/[old]/set").base == "imagefolder:/data/[old]/set"
    assert parse_data("imagefolder:/data/[old]/set[2]").classes == (2,)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("cifar10[", "unbalanced"),
        ("cifar10]", "unbalanced"),
        ("cifar10[]", "empty class list"),
        ("cifar10[a]", "bad class selector 'a'"),
        ("cifar10[1,,2]", "bad class selector ''"),
        ("cifar10[4-2]", "reversed range 4-2"),
        ("cifar10[1,1]", "class 1 selected twice"),
        ("cifar10[0-3,2]", "class 2 selected twice"),
        ("cifar10[10]", "out of range for cifar10: it has 10 classes (0-9)"),
        ("cifar100[5,100,120]", "class 100, 120 out of range"),
        ("imagefolder", "imagefolder needs a folder"),
        ("imagefolder:", "imagefolder needs a folder"),
        ("imagefoldr:/x", "did you mean 'imagefolder'"),
    ],
)
def test_parse_bad(text, fragment):
    with pytest.raises(UsageError) as err:
        parse_data(text)
    assert fragment in str(err.value)


def test_parse_unknown_name_suggests_the_closest():
    with pytest.raises(UsageError) as err:
        parse_data("cifar11[0-3]")
    msg = str(err.value)
    assert "unknown data set 'cifar11'" in msg and "did you mean 'cifar10'?" in msg
    assert "choose from:" in msg and "imagefolder:PATH" in msg
    with pytest.raises(UsageError, match="did you mean 'mnist'"):
        parse_data("mnsit")


def test_registry_is_complete():
    assert set(DATASETS) == {"digits", "cifar10", "cifar100", "svhn", "mnist", "fashion-mnist", "places365"}
    assert (DATASETS["cifar10"].flip, DATASETS["cifar10"].crop_padding) == (True, 4)
    assert (DATASETS["svhn"].flip, DATASETS["svhn"].crop_padding) == (False, 4)
    assert (DATASETS["mnist"].flip, DATASETS["mnist"].crop_padding) == (False, 0)
    assert DATASETS["places365"].num_classes == 365


# ------------------------------------------------------------------------------------------
# digits (embedded) and shape adaptation
# ------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------
# torchvision-backed sets, on tiny files in their real formats
# ------------------------------------------------------------------------------------------


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
    raw = tmp_path / "cache" / "places365-16px-train.u8"
    assert raw.stat().st_size == 6 * 3 * 16 * 16

    def boom(*args, **kwargs):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(D, "_decode_image", boom)
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


def test_dataset_rows_report_presence(tmp_path, no_md5):
    rows = {r["name"]: r for r in dataset_rows(tmp_path)}
    assert rows["digits"]["present"] is True and rows["digits"]["classes"] == 10
    assert rows["cifar10"]["present"] is False and rows["cifar10"]["path"] == str(tmp_path / "cifar10")
    assert rows["cifar100"]["classes"] == 100 and rows["cifar100"]["image_size"] == 32 and rows["cifar100"]["channels"] == 3
    assert "imagefolder:PATH" in rows
    write_cifar10(tmp_path)
    assert {r["name"]: r for r in dataset_rows(tmp_path)}["cifar10"]["present"] is True
    load_data("cifar10", tmp_path, download=False)
    shutil.rmtree(tmp_path / "cifar10")  # the decoded cache alone is enough
    assert {r["name"]: r for r in dataset_rows(tmp_path)}["cifar10"]["present"] is True


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETX_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "flag") == tmp_path / "flag"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("TICKETX_DATA")
    assert data_root().parts[-2:] == ("ticketx", "data")


# ------------------------------------------------------------------------------------------
# imagefolder
# ------------------------------------------------------------------------------------------


def test_imagefolder_decodes_once_then_uses_the_cache(tmp_path, monkeypatch):
    src = tmp_path / "pets"
    write_folder(src, "train", ["cat", "dog", "emu"], n=3)
    write_folder(src, "test", ["cat", "dog", "emu"], n=2)
    (src / "train" / "cat" / "notes.txt").write_text("not an image")
    (src / "train" / "cat" / "._000.png").write_bytes(b"macOS resource fork")
    root = tmp_path / "root"
    calls = []
    real = D._decode_image
    monkeypatch.setattr(D, "_decode_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
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

    monkeypatch.setattr(D, "_decode_image", boom)
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


# ------------------------------------------------------------------------------------------
# split_validation
# ------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------
# Batches
# ------------------------------------------------------------------------------------------


def _position_images(n: int, size: int = 8) -> torch.Tensor:
    """Channel 0 encodes each pixel's position (1 + row * size + col), channel 1 the image id + 1."""
    pos = 1 + torch.arange(size * size, dtype=torch.uint8).view(size, size)
    x = torch.zeros((n, 2, size, size), dtype=torch.uint8)
    x[:, 0] = pos
    x[:, 1] = (torch.arange(n, dtype=torch.uint8) + 1).view(n, 1, 1)
    return x


def _raw(batch: torch.Tensor) -> torch.Tensor:
    # With mean 0 and std 1 the batch is x / 255: undo it to read the pixel codes back.
    return (batch.float() * 255).round().to(torch.int64)


def test_batches_eval_is_sequential_complete_and_unaugmented():
    x = _position_images(10)
    y = torch.arange(10)
    b = Batches(x, y, batch_size=4, mean=(0, 0), std=(1, 1), train=False, crop_padding=2, flip=True)
    assert len(b) == 3
    batches = list(b.epoch())
    assert [len(yb) for _, yb in batches] == [4, 4, 2]
    assert torch.cat([yb for _, yb in batches]).tolist() == list(range(10))
    xs = torch.cat([xb for xb, _ in batches])
    assert xs.dtype == torch.float32 and xs.shape == (10, 2, 8, 8)
    assert torch.equal(_raw(xs), x.long())  # no crop, no flip at evaluation


def test_batches_normalise_with_fused_scale_and_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 6, 6), generator=g, dtype=torch.uint8)
    x[:, 1] //= 4  # channels with different statistics
    mean, std = D._channel_stats(x)
    f = x.double() / 255
    assert mean == pytest.approx(f.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert std == pytest.approx(f.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-9)
    b = Batches(x, torch.zeros(64, dtype=torch.long), batch_size=64, mean=mean, std=std, train=False)
    (out, _), = list(b.epoch())
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (out.std(dim=(0, 2, 3), correction=0) - 1).abs().max() < 1e-5
    expected = ((f - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1))
    assert torch.allclose(out.double(), expected, atol=1e-5)


def test_batches_train_epoch_is_a_seeded_permutation_with_drop_last():
    x = _position_images(10)
    y = torch.arange(10)
    b = Batches(x, y, batch_size=4, mean=(0, 0), std=(1, 1), train=True)
    assert len(b) == 2  # 10 // 4, the last partial batch dropped
    seen = [yb for _, yb in b.epoch(torch.Generator().manual_seed(0))]
    assert [len(s) for s in seen] == [4, 4]
    flat = torch.cat(seen).tolist()
    assert len(set(flat)) == 8 and flat != sorted(flat)
    for xb, yb in b.epoch(torch.Generator().manual_seed(0)):
        assert torch.equal(_raw(xb)[:, 1, 0, 0] - 1, yb)  # images stay with their labels
    # Same seed, same batches; another seed, another order.
    again = [yb for _, yb in b.epoch(torch.Generator().manual_seed(0))]
    other = [yb for _, yb in b.epoch(torch.Generator().manual_seed(1))]
    assert all(torch.equal(p, q) for p, q in zip(seen, again))
    assert not all(torch.equal(p, q) for p, q in zip(seen, other))
    full = Batches(x, y, batch_size=4, mean=(0, 0), std=(1, 1), train=True, drop_last=False)
    assert len(full) == 3 and sorted(torch.cat([yb for _, yb in full.epoch()]).tolist()) == list(range(10))
    big = Batches(x, y, batch_size=64, mean=(0, 0), std=(1, 1), train=True)
    assert len(big) == 1 and len(next(iter(big.epoch()))[1]) == 10  # batch_size > N: N


def test_batches_crop_shifts_each_sample_by_its_own_offset():
    n, size, p = 64, 8, 2
    x = _position_images(n, size)
    b = Batches(x, torch.arange(n), batch_size=16, mean=(0, 0), std=(1, 1), train=True, crop_padding=p)
    gen = torch.Generator().manual_seed(5)
    shifts = set()
    for xb, yb in b.epoch(gen):
        raw = _raw(xb)
        for img in raw:
            code = int(img[0, size // 2, size // 2]) - 1  # the source pixel now at the centre
            dy, dx = code // size - size // 2, code % size - size // 2
            assert -p <= dy <= p and -p <= dx <= p
            shifts.add((dy, dx))
            # The whole image is the original shifted by (dy, dx), zero where it came from padding.
            src = torch.zeros(size + 2 * p, size + 2 * p, dtype=torch.int64)
            src[p:-p, p:-p] = x[0, 0].long()
            assert torch.equal(img[0], src[p + dy : p + dy + size, p + dx : p + dx + size])
    assert len(shifts) > 5  # per-sample offsets, not one per batch
    # Same seed, same crops.
    first = torch.cat([xb for xb, _ in b.epoch(torch.Generator().manual_seed(5))])
    second = torch.cat([xb for xb, _ in b.epoch(torch.Generator().manual_seed(5))])
    assert torch.equal(first, second)


def test_random_crop_matches_a_per_sample_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 5, 7), generator=g, dtype=torch.uint8)
    offsets = torch.randint(0, 5, (6, 2), generator=g)
    for mode, pad_mode in (("zeros", "constant"), ("reflect", "reflect")):
        out = D.random_crop(x, offsets, 2, mode)
        padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode=pad_mode)
        for i, (dy, dx) in enumerate(offsets.tolist()):
            assert torch.equal(out[i], padded[i, :, dy : dy + 5, dx : dx + 7])


def test_batches_flip_some_samples_and_only_when_asked():
    n = 64
    x = _position_images(n)
    plain, mirrored = x[0, 0].long(), x[0, 0].flip(1).long()
    b = Batches(x, torch.arange(n), batch_size=n, mean=(0, 0), std=(1, 1), train=True, flip=True)
    (xb, _), = list(b.epoch(torch.Generator().manual_seed(0)))
    codes = _raw(xb)[:, 0]
    flipped = [torch.equal(c, mirrored) for c in codes]
    assert all(f or torch.equal(c, plain) for f, c in zip(flipped, codes))
    assert 10 < sum(flipped) < 54  # about half: a coin per sample, not per batch
    off = Batches(x, torch.arange(n), batch_size=n, mean=(0, 0), std=(1, 1), train=True, flip=False)
    (xb, _), = list(off.epoch(torch.Generator().manual_seed(0)))
    assert all(torch.equal(c, plain) for c in _raw(xb)[:, 0])


def test_batches_dtype_channels_last_and_bad_input():
    x = _position_images(6)
    b = Batches(x, torch.arange(6), batch_size=4, mean=(0.5, 0.5), std=(0.25, 0.25), train=False, dtype=torch.bfloat16, channels_last=True)
    xb, yb = next(iter(b))
    assert xb.dtype == torch.bfloat16 and yb.dtype == torch.int64
    assert xb.is_contiguous(memory_format=torch.channels_last)
    assert float(xb[0, 1, 0, 0]) == pytest.approx((1 / 255 - 0.5) / 0.25, rel=1e-2)
    with pytest.raises(ValueError, match="uint8"):
        Batches(x.float(), torch.arange(6), batch_size=2, mean=(0, 0), std=(1, 1), train=False)
    with pytest.raises(ValueError, match="mean/std"):
        Batches(x, torch.arange(6), batch_size=2, mean=(0,), std=(1,), train=False)
    with pytest.raises(TicketxError, match="no images"):
        Batches(x[:0], torch.arange(0), batch_size=2, mean=(0, 0), std=(1, 1), train=True)


def test_batches_from_loaded_data_end_to_end():
    d = load_data("digits[0-2]", image_size=12, channels=3)
    b = Batches(d.train_x, d.train_y, batch_size=32, mean=d.mean, std=d.std, train=True, crop_padding=1, flip=True)
    total = 0
    for xb, yb in b.epoch(torch.Generator().manual_seed(0)):
        assert xb.shape == (32, 3, 12, 12) and yb.max() <= 2
        total += len(yb)
    assert total == len(b) * 32 == (len(d.train_x) // 32) * 32


# ------------------------------------------------------------------------------------------
# Real data: CIFAR-10 as JPEG folders
# ------------------------------------------------------------------------------------------


def _cifar10_jpg() -> Path:
    for path in (
        Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz",
        Path("/work/shared/data/cifar10-jpg.tar.gz"),
    ):
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
    monkeypatch.setattr(D, "_decode_image", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = load_data(f"imagefolder:{src}[0-4]", tmp_path / "root")
    assert again.train_x.shape == (100, 3, 32, 32) and again.classes == sorted(CIFAR10_NAMES)[:5]
    assert torch.equal(again.train_x, d.train_x[d.train_y < 5])
