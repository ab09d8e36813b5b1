"""ticketx.data.names: the data set grammar, canonical names, errors with 'did you mean'."""

from __future__ import annotations

import pytest

from ticketx.data import DataSpec, parse_data
from ticketx.errors import UsageError

pytestmark = pytest.mark.usefixtures("offline")


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
