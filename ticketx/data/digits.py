"""`digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images), read without importing scikit-learn."""

from __future__ import annotations

from pathlib import Path

import torch

from ticketx.data.cache import BaseSet
from ticketx.data.registry import register
from ticketx.data.split import stratified_split
from ticketx.errors import TicketxError


@register(
    "digits",
    num_classes=10,
    image_size=8,
    channels=1,
    flip=False,
    crop_padding=0,
    description="handwritten digits 8x8, 1797 images (scikit-learn's bundled copy; embedded, no download)",
)
def _digits(root: Path, download: bool, image_size: int | None) -> BaseSet:
    import gzip
    import importlib.util

    import numpy as np

    # Read scikit-learn's bundled CSV directly: `import sklearn` alone costs ~2.5 s, the file
    # ~20 ms. Same file and parsing as sklearn.datasets.load_digits (rows of 64 pixels + label).
    spec = importlib.util.find_spec("sklearn")
    found = [Path(d) / "datasets" / "data" / "digits.csv.gz" for d in (spec.submodule_search_locations or [])] if spec else []
    csv = next((f for f in found if f.is_file()), None)
    if csv is None:
        raise TicketxError("the digits data set is scikit-learn's bundled copy, and scikit-learn was not found", "pip install scikit-learn")
    with gzip.open(csv, "rt") as fh:
        rows = np.loadtxt(fh, delimiter=",")
    images, target = rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(np.int64)
    # The bundled pixels are counts 0..16 of set bits in 4x4 blocks: scale to 0..255.
    x = torch.from_numpy(np.rint(images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1).contiguous()
    y = torch.from_numpy(target).long()
    # A fixed 80/20 stratified split (seed 0) so every run and every user sees the same test set.
    train, test = stratified_split(y, 0.2, seed=0)
    return BaseSet([str(i) for i in range(10)], x[train], y[train], x[test], y[test])
