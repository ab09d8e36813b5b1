"""Batches (ticketx.data) on the training path: layouts, no copies, threads, bf16; digits without sklearn.

Moved from the old tests/test_bench.py; what tests/test_data.py already covers was dropped.
These belong in tests/test_data.py (or the test of the Batches module after data.py's split).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ticketx.data import Batches, random_crop
from ticketx.threads import cpu_threads


def _reference(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x.double() / 255 - m) / s


@pytest.mark.parametrize("channels_last", [False, True])
def test_batches_layouts_give_identical_values(channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(40)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    kw = dict(batch_size=16, mean=mean, std=std, train=True, crop_padding=2, flip=True)
    ref = Batches(x, y, **kw)
    other = Batches(x, y, channels_last=channels_last, **kw)
    for (xa, ya), (xb, yb) in zip(ref.epoch(torch.Generator().manual_seed(3)), other.epoch(torch.Generator().manual_seed(3))):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
        assert xb.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    # Evaluation batches are the normalised images themselves, to float32 rounding.
    (xe, _), = list(Batches(x, y, batch_size=40, mean=mean, std=std, train=False, channels_last=channels_last).epoch())
    assert torch.allclose(xe.double(), _reference(x, mean, std), atol=1e-5)


def test_batches_never_copy_the_images_on_cpu():
    """A memory-mapped set (Places365) must stay mapped: channels_last comes from the output, not a copy."""
    x = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    for cl in (False, True):
        b = Batches(x, torch.arange(10), batch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, crop_padding=2,
                    flip=True, channels_last=cl)
        assert b.x.data_ptr() == x.data_ptr()


def test_batches_assemble_on_one_thread_and_give_the_rest_back(monkeypatch):
    seen = []
    real = torch.addcmul
    monkeypatch.setattr(torch, "addcmul", lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1])
    x = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    b = Batches(x, torch.arange(12), batch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, crop_padding=2, flip=True)
    with cpu_threads(2):
        for _ in b.epoch(torch.Generator().manual_seed(0)):
            assert torch.get_num_threads() == 2  # the consumer's training step keeps its threads
    assert seen == [1, 1, 1]


def test_batches_bf16_output_is_the_rounded_fp32_output():
    x = torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    kw = dict(batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, train=False)
    (f32, _), = list(Batches(x, torch.arange(8), **kw).epoch())
    (b16, _), = list(Batches(x, torch.arange(8), dtype=torch.bfloat16, channels_last=True, **kw).epoch())
    assert b16.dtype == torch.bfloat16 and torch.equal(b16, f32.to(torch.bfloat16))


def test_random_crop_on_channels_last_input_gives_the_same_crops():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (5, 3, 6, 6), dtype=torch.uint8, generator=g)
    offsets = torch.tensor([[0, 0], [4, 4], [2, 2], [0, 4], [3, 1]])
    assert torch.equal(random_crop(x.contiguous(memory_format=torch.channels_last), offsets, 2), random_crop(x, offsets, 2))


@pytest.mark.slow
def test_digits_loads_without_importing_sklearn(tmp_path):
    code = ("import sys; from ticketx.data import load_data; d = load_data('digits', %r); "
            "assert 'sklearn' not in sys.modules, 'sklearn imported'; print(len(d.train_x), len(d.test_x))" % str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1438", "359"]
