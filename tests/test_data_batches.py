"""ticketx.data.batches: tensor-resident batches, per-sample crop and flip, fused normalisation."""

from __future__ import annotations

import pytest
import torch

from ticketx.data import Batches, load_data, random_crop
from ticketx.data.pixels import channel_stats
from ticketx.errors import TicketxError
from ticketx.threads import cpu_threads

pytestmark = pytest.mark.usefixtures("offline")


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
    mean, std = channel_stats(x)
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
        out = random_crop(x, offsets, 2, mode)
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


# ---- the training path: layouts, no copies, threads, bf16 (from the old tests/test_bench.py) ----


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
