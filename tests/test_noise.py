"""Label noise: exactly the asked fraction of each class, reproducible from its own seed, independent of
the data order, on the training split only (validation and test keep their true labels), the same for
every arm of a comparison; memorisation measured on a hand-made case; earlier keys unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ticketx.data import ImageData, add_label_noise, noisy_labels
from ticketx.errors import UsageError
from ticketx.runtime import label_noise as noise_stream
from ticketx.settings import TrainSpec
from ticketx.train import Recipe, Run, Start, measure_fit, training_split

SIZES = [7, 10, 13, 50, 21]  # unbalanced classes, sizes whose rounding differs


def _labels(sizes=SIZES, seed=0) -> torch.Tensor:
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]  # classes interleaved


def _data(sizes=SIZES, test=40) -> ImageData:
    y = _labels(sizes)
    x = torch.arange(len(y), dtype=torch.int64).remainder(256).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)
    ty = torch.arange(test) % len(sizes)
    tx = torch.zeros(test, 1, 4, 4, dtype=torch.uint8)
    return ImageData("toy", [str(c) for c in range(len(sizes))], x.contiguous(), y, tx, ty, (0.5,), (0.25,), False, 0)


@pytest.mark.parametrize("mode", ["symmetric", "pairflip"])
@pytest.mark.parametrize("fraction", [0.2, 0.35, 0.5])
def test_exactly_the_fraction_of_every_class_is_flipped(mode, fraction):
    y = _labels()
    noisy, flipped = noisy_labels(y, len(SIZES), fraction, mode, noise_stream(3))
    for c, n in enumerate(SIZES):
        of_c = y == c
        assert int(flipped[of_c].sum()) == round(fraction * n)  # the exact count, class by class
    assert bool((noisy[flipped] != y[flipped]).all())  # a flipped label is always a wrong one
    assert torch.equal(noisy[~flipped], y[~flipped])  # the others are untouched
    if mode == "pairflip":
        assert torch.equal(noisy[flipped], (y[flipped] + 1) % len(SIZES))


def test_symmetric_noise_reaches_every_other_class_and_pairflip_only_the_next():
    y = torch.arange(5000) % 4
    sym, f = noisy_labels(y, 4, 0.4, "symmetric", noise_stream(0))
    for c in range(4):
        wrong = sym[f & (y == c)]
        counts = torch.bincount(wrong, minlength=4)
        assert counts[c] == 0 and bool((counts[[k for k in range(4) if k != c]] > 100).all())  # ~167 each


def test_noise_is_reproducible_per_seed_nested_and_the_same_examples_in_both_modes():
    y = _labels()
    a, fa = noisy_labels(y, 5, 0.3, "symmetric", noise_stream(7))
    b, fb = noisy_labels(y, 5, 0.3, "symmetric", noise_stream(7))
    assert torch.equal(a, b) and torch.equal(fa, fb)
    c, fc = noisy_labels(y, 5, 0.3, "symmetric", noise_stream(8))
    assert not torch.equal(fa, fc)  # another seed flips other examples
    _, fp = noisy_labels(y, 5, 0.3, "pairflip", noise_stream(7))
    assert torch.equal(fa, fp)  # the same examples whatever the mode
    low, flow = noisy_labels(y, 5, 0.1, "symmetric", noise_stream(7))
    assert bool((fa | ~flow).all()) and torch.equal(low[flow], a[flow])  # 10% is a subset of 30%, same labels


def test_bad_noise_settings_are_refused():
    y = _labels()
    with pytest.raises(UsageError, match="mode"):
        noisy_labels(y, 5, 0.2, "asymmetric", noise_stream(0))
    with pytest.raises(UsageError, match="2 classes"):
        noisy_labels(torch.zeros(5, dtype=torch.long), 1, 0.2, "symmetric", noise_stream(0))
    with pytest.raises(ValueError):
        TrainSpec(label_noise=1.0)


def _recipe(**spec) -> Recipe:
    return Recipe.of(_data(), TrainSpec(batch_size=8, length="1ep", **spec))


def _run(**kw) -> Run:
    return Run(key="k", start=lambda: Start(nn.Identity()), **kw)


def test_noise_depends_on_its_seed_not_on_the_data_order():
    recipe = _recipe(label_noise=0.2)
    one, _, n1 = training_split(recipe, _run(data_seed=1, noise_seed=5))
    two, _, n2 = training_split(recipe, _run(data_seed=2, noise_seed=5))
    assert torch.equal(one.train_y, two.train_y) and n1.seed == n2.seed == 5  # another data order, the same noise
    other, _, _ = training_split(recipe, _run(data_seed=1, noise_seed=6))
    assert not torch.equal(one.train_y, other.train_y)
    default, _, nd = training_split(recipe, _run(data_seed=5))  # no noise seed: the run's data seed
    assert nd.seed == 5 and torch.equal(default.train_y, one.train_y)
    given, _, ng = training_split(_recipe(label_noise=0.2, noise_seed=9), _run(data_seed=1, noise_seed=5))
    assert ng.seed == 9  # the spec's noise seed wins
    clean, _, none = training_split(_recipe(), _run(data_seed=1))
    assert none is None and torch.equal(clean.train_y, recipe.data.train_y)


def test_the_test_set_is_never_noised_and_validation_keeps_its_true_labels():
    recipe = _recipe(label_noise=0.4, val_split=0.2)
    data, val, noise = training_split(recipe, _run(data_seed=3))
    assert torch.equal(data.test_y, recipe.data.test_y) and torch.equal(data.test_x, recipe.data.test_x)
    assert recipe.data.train_y is not data.train_y and torch.equal(recipe.data.train_y, _data().train_y)  # not in place
    # Validation labels are the true labels of its images (each image's pixel is its index in the set).
    index = recipe.data.train_x[:, 0, 0, 0].long()
    truth = {int(i): int(c) for i, c in zip(index, recipe.data.train_y)}
    assert all(truth[int(i)] == int(c) for i, c in zip(val[0][:, 0, 0, 0], val[1]))
    # The training split that remains: exactly 40% of each of its classes flipped.
    for c in range(len(SIZES)):
        n = int((noise.clean == c).sum())
        assert int(noise.flipped[noise.clean == c].sum()) == round(0.4 * n)
    assert torch.equal(noise.clean[~noise.flipped], data.train_y[~noise.flipped])


def test_every_arm_of_a_transfer_trains_on_the_same_noisy_labels(digits_ticket, tmp_path, monkeypatch):
    import ticketx.train
    from conftest import each_run, real_train_one

    from ticketx.settings import TransferSpec, resolve_transfer
    from ticketx.transfer import transfer

    labels: dict[tuple[str, int], torch.Tensor] = {}
    real = real_train_one()

    def record(run, recipe, reporter):
        labels[run.info["label"], run.info["seed"], run.data_seed] = training_split(recipe, run)[0].train_y
        return real(run, recipe, reporter)

    monkeypatch.setattr(ticketx.train, "train", each_run(record))
    spec = TransferSpec(target="digits[5-9]", all_rounds=True, seeds=[0, 1], baselines=["random-mask", "dense"],
                        train=TrainSpec(optimizer="adam", lr=1e-3, length="1ep", label_noise=0.2))
    result = transfer(resolve_transfer(digits_ticket, spec), tmp_path, device="cpu")
    for seed in (0, 1):
        mine = [y for (arm, s, _), y in labels.items() if s == seed]
        assert len(mine) == 5 and all(torch.equal(y, mine[0]) for y in mine)  # 2 rounds x (ticket, mask) + dense
    assert not torch.equal(*[next(y for (a, s, _), y in labels.items() if s == k) for k in (0, 1)])
    runs = result["runs"]
    assert all(r["label_noise"]["fraction"] == 0.2 and r["label_noise"]["seed"] == r["seed"] for r in runs)
    assert all(0 <= r["memorised"] <= 1 and 0 <= r["train_acc"] <= 1 for r in runs)


class _Lookup(nn.Module):
    """Predicts, for each image, the class a table gives its first pixel (the images' own index)."""

    def __init__(self, table: torch.Tensor, mean: float, std: float) -> None:
        super().__init__()
        self.table, self.mean, self.std = table, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = torch.round((x[:, 0, 0, 0] * self.std + self.mean) * 255).long()
        return nn.functional.one_hot(self.table[index], int(self.table.max()) + 1).float()


def test_memorisation_on_a_hand_made_case():
    from ticketx.data import Batches, LabelNoise

    # 10 images, true labels 0..1; images 0-3 flipped. The network predicts the noisy label on
    # images 0 and 1, the true one on 2 and 3, and the wrong class on image 9 (not flipped).
    clean = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    flipped = torch.tensor([True] * 4 + [False] * 6)
    noisy = torch.where(flipped, 1 - clean, clean)
    predict = noisy.clone()
    predict[2:4] = clean[2:4]
    predict[9] = 1 - clean[9]
    x = torch.arange(10, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    train = Batches(x, noisy, batch_size=3, mean=(0.1,), std=(0.3,), train=True, flip=False)
    noise = LabelNoise(0.4, "pairflip", 0, flipped, clean)
    acc, memorised = measure_fit(_Lookup(predict, 0.1, 0.3), train, noise)
    assert memorised == pytest.approx(2 / 4)  # images 0 and 1 of the 4 flipped ones
    assert acc == pytest.approx(7 / 10)  # against the labels trained on: wrong on 2, 3 and 9
    assert measure_fit(_Lookup(predict, 0.1, 0.3), train, None) == (pytest.approx(0.7), None)


def test_add_label_noise_records_what_it_did():
    data, noise = add_label_noise(_data(), 0.2, "symmetric", 4)
    assert noise.as_dict() == {"fraction": 0.2, "mode": "symmetric", "seed": 4,
                               "flipped": sum(round(0.2 * n) for n in SIZES), "examples": sum(SIZES)}
    assert torch.equal(noise.clean, _data().train_y)


def test_runs_record_train_accuracy_always_and_memorisation_with_noise():
    from ticketx.runs import record_of
    from ticketx.train import TrainResult

    run = _run(data_seed=0)
    clean = record_of(run, TrainResult(0.9, None, [], {}, 1.0, 10, train_acc=0.95))
    assert clean["train_acc"] == 0.95 and "memorised" not in clean and "label_noise" not in clean
    noisy = record_of(run, TrainResult(0.8, None, [], {}, 1.0, 10, train_acc=0.85, memorised=0.3, noise={"fraction": 0.2}))
    assert noisy["memorised"] == 0.3 and noisy["label_noise"] == {"fraction": 0.2}


def test_training_without_augmentation_has_no_crop_or_flip():
    from ticketx.train import make_batches, prepare

    data = _data()
    data.flip, data.crop_padding = True, 1
    setup = prepare(nn.Sequential(nn.Flatten(), nn.Linear(16, 5)), TrainSpec())
    on = make_batches(data, 8, setup)
    off = make_batches(data, 8, setup, augment=False)
    assert (on.train.flip, on.train.crop_padding) == (True, 1) and (off.train.flip, off.train.crop_padding) == (False, 0)


def test_earlier_keys_do_not_see_the_new_settings():
    """A spec at the defaults dumps exactly as before noise, augmentation and widths existed (run and cell keys)."""
    from conftest import tiny_find_spec

    before = {"optimizer", "lr", "momentum", "nesterov", "weight_decay", "batch_size", "length", "milestones", "gamma",
              "warmup", "precision", "eval_every", "val_split"}
    assert set(TrainSpec().model_dump()) == before
    assert set(TrainSpec(noise_mode="pairflip", noise_seed=3).model_dump()) == before  # no noise: mode and seed change nothing
    assert set(TrainSpec(label_noise=0.2, augment=False).model_dump()) == before | {"label_noise", "noise_mode", "noise_seed",
                                                                                  "augment"}
    assert "width" not in tiny_find_spec().science() and tiny_find_spec(width=2).science()["width"] == 2
    assert TrainSpec(**TrainSpec(label_noise=0.2, noise_seed=1).model_dump()) == TrainSpec(label_noise=0.2, noise_seed=1)
