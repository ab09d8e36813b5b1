"""Writers of each data set's real on-disk format, a few images each, for the data tests."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


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


def write_places_many(root: Path, train_per_class: int = 12, val_per_class: int = 3, side: int = 32) -> list[Path]:
    """write_places' layout with more, distinct images (seeded noise on each class colour), one grayscale.

    Returns the training files in the order of places365_train_standard.txt, then the val files.
    """
    folder = root / "places365"
    folder.mkdir(parents=True)
    (folder / "categories_places365.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(PLACES)))
    rng = np.random.default_rng(0)
    train_lines, val_lines, train_files, val_files = [], [], [], []

    def image(label: int, gray: bool) -> Image.Image:
        pixels = np.clip(np.array(PLACES_COLORS[label]) + rng.integers(-40, 41, (side, side, 3)), 0, 255).astype(np.uint8)
        im = Image.fromarray(pixels)
        return im.convert("L") if gray else im

    for label, cls in enumerate(PLACES):
        for j in range(train_per_class):
            rel = f"{cls}/{j + 1:08d}.jpg"
            path = folder / "data_256_standard" / rel.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            image(label, gray=label == 1 and j == 0).save(path, quality=90)  # Places has a few gray JPEGs
            train_lines.append(f"{rel} {label}\n")
            train_files.append(path)
        for j in range(val_per_class):
            name = f"Places365_val_{label * val_per_class + j + 1:08d}.jpg"
            (folder / "val_256").mkdir(exist_ok=True)
            image(label, gray=False).save(folder / "val_256" / name, quality=90)
            val_lines.append(f"{name} {label}\n")
            val_files.append(folder / "val_256" / name)
    (folder / "places365_train_standard.txt").write_text("".join(train_lines))
    (folder / "places365_val.txt").write_text("".join(val_lines))
    return train_files + val_files


CI_STUDY = Path(__file__).resolve().parents[1] / "studies" / "ci.yaml"
CI_SEARCH_SEEDS = "  seeds: [0, 1, 2, 3, 4, 5]  # 6 tickets per source: the unit of every claim\n"
CI_TRANSFER_SEEDS = "  seeds: [0, 1]              # 2 retrains of each ticket (repeated measures within a ticket)\n"


def ci_grid(transfer_seeds: str = "[0, 1, 2, 3]", search_seeds: str = "[0]") -> str:
    """studies/ci.yaml's grid, by default with one ticket (search seed) per source, and without its
    claims (about its 6 tickets): for the tests of the study machinery, which need no statistics."""
    text = CI_STUDY.read_text()
    assert CI_SEARCH_SEEDS in text and CI_TRANSFER_SEEDS in text, "studies/ci.yaml changed: update tests/datafiles.py"
    text = text.split("expect:")[0].replace(CI_SEARCH_SEEDS, f"  seeds: {search_seeds}\n")
    return text.replace(CI_TRANSFER_SEEDS, f"  seeds: {transfer_seeds} \n")

