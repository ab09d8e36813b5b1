"""ticketx.data.digits: the embedded digits set, bit for bit the images, labels and split of before."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch

import ticketx.data.digits as digits_mod
from ticketx.data import load_data
from ticketx.data.registry import LOADERS
from ticketx.errors import TicketxError

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = REPO / "ticketx" / "data" / "embedded"

# SHA-256 of the tensors' bytes, computed once with the loader that read scikit-learn's
# digits.csv.gz (np.loadtxt, np.rint(v * 255 / 16), stratified 80/20 split, seed 0), before the
# data was embedded: {load_data kwargs: (train_x, train_y, test_x, test_y)}.
# {} and image_size=8 are the native set; 28 is lenet_300_100's input (the quickstart's).
LABELS_TRAIN = "b0e523ed89489b2e2a28df22c73ec0dbb1d2544c580337f0ecddef53c6cabb85"
LABELS_TEST = "77ce7673e8f7a2f5b85db721b58cd16c130c2269cbc5382b71f69a079a51aa35"
NATIVE_X = (
    "3a6b7a74df26a5ba8240887d58957867f276582d9f06994294c4a5e47156b985",
    "9e1786794306b79a2a3828333cf23aed54d6dcda6b4fb7bfb3c80c60002563c1",
)
BEFORE = {
    (): (NATIVE_X[0], LABELS_TRAIN, NATIVE_X[1], LABELS_TEST),
    (("image_size", 8),): (NATIVE_X[0], LABELS_TRAIN, NATIVE_X[1], LABELS_TEST),
    (("image_size", 28),): (
        "1475b04ae248e7264b16ae276069b4b9b4e5068800cb628704466a05170cc0e9", LABELS_TRAIN,
        "1c5b0df66f035503629793ab962f0d70db9943daf6b521a16af55c85cbd69100", LABELS_TEST,
    ),
    (("image_size", 28), ("channels", 3)): (
        "69dec892038555b1656f46beef6067b04b7a25a598986593dace8a7d399b682a", LABELS_TRAIN,
        "1b248a45369490242f0a89092c52e0936382a27b8c37012a2747fee4a5eece4e", LABELS_TEST,
    ),
}
# The UCI test set's images per digit 0..9.
CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("kwargs", list(BEFORE), ids=["native", "8px", "28px", "28px-rgb"])
def test_same_tensors_bit_for_bit_as_before(kwargs):
    d = load_data("digits", **dict(kwargs))
    size = dict(kwargs).get("image_size", 8)
    channels = dict(kwargs).get("channels", 1)
    assert d.train_x.shape == (1438, channels, size, size) and d.test_x.shape == (359, channels, size, size)
    assert (d.train_x.dtype, d.train_y.dtype) == (torch.uint8, torch.int64)
    got = tuple(sha256(t) for t in (d.train_x, d.train_y, d.test_x, d.test_y))
    assert got == BEFORE[kwargs]


def test_shapes_split_and_determinism():
    d = load_data("digits")
    assert (len(d.train_x), len(d.test_x)) == (1438, 359)  # 20% of 1797, rounded
    assert d.classes == [str(i) for i in range(10)] and d.num_classes == 10
    assert (d.channels, d.image_size, d.flip, d.crop_padding) == (1, 8, False, 0)
    assert int(d.train_x.max()) == 255 and int(d.train_x.min()) == 0
    # Stratified: every class has ~20% of its images in test; no image is lost.
    all_y = torch.cat([d.train_y, d.test_y])
    assert torch.bincount(all_y).tolist() == CLASS_COUNTS
    share = torch.bincount(d.test_y) / torch.tensor(CLASS_COUNTS)
    assert float(share.min()) > 0.18 and float(share.max()) < 0.22
    # The same split every time, independent of the global seed.
    torch.manual_seed(123)
    again = load_data("digits")
    assert torch.equal(again.test_x, d.test_x) and torch.equal(again.train_y, d.train_y)
    assert len(d.mean) == 1 and 0.2 < d.mean[0] < 0.4


def test_embedded_file_is_the_uci_counts():
    counts, labels = digits_mod.read_digits()
    assert counts.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert int(counts.max()) == 16 and torch.bincount(labels.long()).tolist() == CLASS_COUNTS
    # The first row of the UCI test set (optdigits.tes), a 0.
    assert counts[0, 0].tolist() == [0, 0, 5, 13, 9, 1, 0, 0] and int(labels[0]) == 0


def test_loads_without_scikit_learn_or_scipy(monkeypatch):
    # None in sys.modules makes `import sklearn` / `import scipy` raise ImportError.
    for name in ("sklearn", "scipy"):
        monkeypatch.setitem(sys.modules, name, None)
    base = LOADERS["digits"](Path("/nonexistent"), False, None)
    assert (len(base.train_x), len(base.test_x)) == (1438, 359)


def test_damaged_embedded_file_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(digits_mod, "_embedded_bytes", lambda: b"\x00" * 100)
    with pytest.raises(TicketxError, match="embedded/digits.u8.gz is damaged \\(100 bytes\\)"):
        load_data("digits")
    monkeypatch.setattr(digits_mod, "_embedded_bytes", lambda: b"\x11" * (1797 * 65))  # pixel 17 > 16
    with pytest.raises(TicketxError, match="values out of range"):
        load_data("digits")


def test_shipped_as_package_data_with_its_licence():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = " ".join(config["project"]["dependencies"])
    assert "scikit-learn" not in deps and "scipy" not in deps
    globs = config["tool"]["setuptools"]["package-data"]["ticketx.data"]
    shipped = {p.name for g in globs for p in (REPO / "ticketx" / "data").glob(g)}
    assert {"digits.u8.gz", "README.md"} <= shipped
    readme = (EMBEDDED / "README.md").read_text()
    assert "CC BY 4.0" in readme and "Alpaydin" in readme and "Kaynak" in readme
