"""ticketx.data.registry: the registered sets, where data lives, what `ticketx datasets` reports."""

from __future__ import annotations

import shutil

import pytest
from datafiles import write_cifar10

from ticketx.data import DATASETS, data_root, dataset_rows, load_data

pytestmark = pytest.mark.usefixtures("offline")


def test_registry_is_complete():
    assert set(DATASETS) == {"digits", "cifar10", "cifar100", "svhn", "mnist", "fashion-mnist", "places365"}
    assert (DATASETS["cifar10"].flip, DATASETS["cifar10"].crop_padding) == (True, 4)
    assert (DATASETS["svhn"].flip, DATASETS["svhn"].crop_padding) == (False, 4)
    assert (DATASETS["mnist"].flip, DATASETS["mnist"].crop_padding) == (False, 0)
    assert DATASETS["places365"].num_classes == 365


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETX_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "flag") == tmp_path / "flag"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("TICKETX_DATA")
    assert data_root().parts[-2:] == ("ticketx", "data")


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
