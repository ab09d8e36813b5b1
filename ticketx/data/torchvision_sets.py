"""The sets torchvision can download and parse: CIFAR-10/100, MNIST, Fashion-MNIST, SVHN.

Each is read through torchvision once, then kept as a decoded uint8 cache (cache.py), so later
runs never parse pickles, IDX or .mat files again. Offline with files missing, one error says
which file to put where.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from ticketx.data.cache import CACHE_VERSION, BaseSet, cache_dir, load_base, save_base
from ticketx.data.decode import error_reason
from ticketx.data.registry import DATASETS, DatasetInfo, present, register
from ticketx.errors import TicketxError

log = logging.getLogger(__name__)


def _missing_message(info: DatasetInfo, folder: Path) -> str:
    files = ", ".join(info.files)
    if info.archives:
        what = f"{', '.join(info.archives)} (or the extracted {files})"
    else:
        what = files
    return f"{info.name} is not in {folder}: put {what} there, or run with network access"


def _need_fetch(info: DatasetInfo, folder: Path, download: bool) -> bool:
    """Whether torchvision must fetch (or extract); raises the offline message when it may not."""
    if present(folder, info.files):
        return False
    # A downloaded archive is checked (md5) and extracted by torchvision without any network;
    # only an archive that fails its checksum would make torchvision try to fetch it again.
    if info.archives and present(folder, info.archives):
        return True
    if not download:
        raise TicketxError(_missing_message(info, folder), "downloading is turned off")
    return True


_T = TypeVar("_T")


def read_torchvision(info: DatasetInfo, folder: Path, download: bool, read: Callable[[bool], _T]) -> _T:
    """Run `read(fetch)`; any failure becomes one error saying which files to put where."""
    fetch = _need_fetch(info, folder, download)
    try:
        if fetch:
            log.info("fetching %s into %s", info.name, folder)
            folder.mkdir(parents=True, exist_ok=True)
        return read(fetch)
    except TicketxError:
        raise
    except Exception as err:  # torchvision raises RuntimeError, URLError, OSError, ... for missing or bad files
        if fetch:
            raise TicketxError(_missing_message(info, folder), f"download failed: {error_reason(err)}") from err
        raise TicketxError(
            f"cannot read {info.name} from {folder}: {error_reason(err)}",
            f"the files there are incomplete or corrupted: delete them and rerun with network access, "
            f"or put {', '.join(info.archives or info.files)} there",
        ) from err


def _cached_torchvision(name: str, root: Path, download: bool, read: Callable[[Path, bool], BaseSet]) -> BaseSet:
    """Load `name` from its decoded cache, else read it through torchvision once and cache it."""
    cache = cache_dir(root) / f"{name}-v{CACHE_VERSION}.pt"
    base = load_base(cache)
    if base is not None:
        return base
    folder = root / name
    base = read_torchvision(DATASETS[name], folder, download, lambda fetch: read(folder, fetch))
    save_base(cache, base)
    return base


def _hwc(array: Any) -> torch.Tensor:
    """numpy uint8 [N, H, W, C] -> torch uint8 [N, C, H, W], contiguous."""
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def _read_cifar(cls_name: str) -> Callable[[Path, bool], BaseSet]:
    def read(folder: Path, fetch: bool) -> BaseSet:
        from torchvision import datasets

        cls = getattr(datasets, cls_name)
        train = cls(str(folder), train=True, download=fetch)
        test = cls(str(folder), train=False, download=False)
        # .data is the whole set as one HWC uint8 array: no per-sample PIL round trip.
        return BaseSet(
            list(train.classes),
            _hwc(train.data),
            torch.as_tensor(train.targets, dtype=torch.long),
            _hwc(test.data),
            torch.as_tensor(test.targets, dtype=torch.long),
        )

    return read


@register(
    "cifar10",
    num_classes=10,
    image_size=32,
    channels=3,
    flip=True,
    crop_padding=4,  # pad 4 + random 32x32 crop: He et al. 2016, Frankle & Carbin 2019
    description="CIFAR-10: 32x32 colour photos, 10 classes, 50k train / 10k test (Krizhevsky 2009)",
    files=("cifar-10-batches-py/",),
    archives=("cifar-10-python.tar.gz",),
    aliases=("cifar-10",),
    train_images=50_000,
)
def _cifar10(root: Path, download: bool, image_size: int | None) -> BaseSet:
    return _cached_torchvision("cifar10", root, download, _read_cifar("CIFAR10"))


@register(
    "cifar100",
    num_classes=100,
    image_size=32,
    channels=3,
    flip=True,
    crop_padding=4,
    description="CIFAR-100: 32x32 colour photos, 100 fine classes, 50k train / 10k test (Krizhevsky 2009)",
    files=("cifar-100-python/",),
    archives=("cifar-100-python.tar.gz",),
    aliases=("cifar-100",),
    train_images=50_000,
)
def _cifar100(root: Path, download: bool, image_size: int | None) -> BaseSet:
    return _cached_torchvision("cifar100", root, download, _read_cifar("CIFAR100"))


def _read_mnist(cls_name: str) -> Callable[[Path, bool], BaseSet]:
    def read(folder: Path, fetch: bool) -> BaseSet:
        from torchvision import datasets

        cls = getattr(datasets, cls_name)
        train = cls(str(folder), train=True, download=fetch)
        test = cls(str(folder), train=False, download=False)
        # torchvision names MNIST classes '0 - zero': keep '0' so they match `digits`.
        names = [c.split(" - ")[0] for c in train.classes]
        return BaseSet(
            names,
            train.data.unsqueeze(1).contiguous(),
            train.targets.long(),
            test.data.unsqueeze(1).contiguous(),
            test.targets.long(),
        )

    return read


def _idx_files(sub: str, suffix: str = "") -> tuple[str, ...]:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return tuple(f"{sub}/raw/{n}{suffix}" for n in names)


# Frankle & Carbin 2019 trained LeNet on MNIST without augmentation: no flip, no crop.
@register(
    "mnist",
    num_classes=10,
    image_size=28,
    channels=1,
    flip=False,
    crop_padding=0,
    description="MNIST: 28x28 handwritten digits, 60k train / 10k test (LeCun et al. 1998)",
    files=_idx_files("MNIST"),
    archives=_idx_files("MNIST", ".gz"),
    train_images=60_000,
)
def _mnist(root: Path, download: bool, image_size: int | None) -> BaseSet:
    return _cached_torchvision("mnist", root, download, _read_mnist("MNIST"))


@register(
    "fashion-mnist",
    num_classes=10,
    image_size=28,
    channels=1,
    flip=False,
    crop_padding=0,
    description="Fashion-MNIST: 28x28 clothing images, 10 classes, 60k train / 10k test (Xiao et al. 2017)",
    files=_idx_files("FashionMNIST"),
    archives=_idx_files("FashionMNIST", ".gz"),
    aliases=("fashion_mnist", "fmnist", "fashionmnist"),
    train_images=60_000,
)
def _fashion_mnist(root: Path, download: bool, image_size: int | None) -> BaseSet:
    return _cached_torchvision("fashion-mnist", root, download, _read_mnist("FashionMNIST"))


def _read_svhn(folder: Path, fetch: bool) -> BaseSet:
    try:
        import scipy.io  # noqa: F401  (torchvision needs it for the .mat files)
    except ImportError as err:
        raise TicketxError("svhn needs scipy to read its .mat files (it is not installed with ticketx)", "pip install scipy") from err
    from torchvision import datasets

    train = datasets.SVHN(str(folder), split="train", download=fetch)
    test = datasets.SVHN(str(folder), split="test", download=fetch)
    # torchvision has already moved the label 10 to 0 and transposed .data to [N, C, H, W].
    return BaseSet(
        [str(i) for i in range(10)],
        torch.from_numpy(train.data).contiguous(),
        torch.from_numpy(train.labels).long(),
        torch.from_numpy(test.data).contiguous(),
        torch.from_numpy(test.labels).long(),
    )


@register(
    "svhn",
    num_classes=10,
    image_size=32,
    channels=3,
    flip=False,  # digits: a mirrored 2 is not a 2
    crop_padding=4,
    description="SVHN: 32x32 house-number digits, 73k train / 26k test (Netzer et al. 2011)",
    files=("train_32x32.mat", "test_32x32.mat"),
    train_images=73_257,
)
def _svhn(root: Path, download: bool, image_size: int | None) -> BaseSet:
    return _cached_torchvision("svhn", root, download, _read_svhn)
