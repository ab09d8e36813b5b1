"""Data sets: a registry of loaders, decoded once to uint8 tensors, batched augmentation on device.

A data set string names a base set and optionally a subset of its classes: `cifar10`,
`cifar10[0-4]`, `cifar100[0,5,7]`, `imagefolder:PATH[0-2]` (names.py). Every base set is decoded
once into uint8 tensors [N, C, H, W] and cached (cache.py); shape adaptation happens on the data
side (pixels.py), so a model never needs to know which set it is trained on; batches are cut from
tensors that live on the training device (batches.py).

    names.py             the data set grammar: parse_data, DataSpec
    registry.py          DatasetInfo, register, data_root, dataset_rows
    images.py            ImageData, load_data: string -> tensors ready to train on
    split.py             seeded stratified hold-out: split_validation
    noise.py             label noise on the training split: add_label_noise
    batches.py           Batches, random_crop: the training hot path
    pixels.py            whole-set uint8 ops: resize, grayscale, channel statistics
    cache.py             decoded cache files
    decode.py            image files -> uint8 tensors, in threads
    digits.py            the embedded digits set (embedded/digits.u8.gz)
    torchvision_sets.py  cifar10, cifar100, mnist, fashion-mnist, svhn
    places.py            places365, memory-mapped
    imagefolder.py       imagefolder:PATH
"""

from ticketx.data.batches import Batches, random_crop
from ticketx.data.images import ImageData, load_data
from ticketx.data.names import DataSpec, parse_data
from ticketx.data.noise import LabelNoise, add_label_noise, noisy_labels
from ticketx.data.registry import DATASETS, DatasetInfo, data_root, dataset_rows, register
from ticketx.data.split import held_out_count, split_validation

# Each source family registers its sets on import; this order is the order `ticketx datasets` lists.
from ticketx.data import digits, torchvision_sets, places  # noqa: E402,F401  isort: skip

__all__ = [
    "DATASETS",
    "Batches",
    "DataSpec",
    "DatasetInfo",
    "ImageData",
    "LabelNoise",
    "add_label_noise",
    "data_root",
    "dataset_rows",
    "load_data",
    "noisy_labels",
    "parse_data",
    "random_crop",
    "register",
    "held_out_count",
    "split_validation",
]
