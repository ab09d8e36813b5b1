"""End to end on the real CIFAR-10 (JPEG image folders from ../shared/data): find with conv4 on
classes 0-4, transfer to classes 5-9 with baselines. Skips when the archive is absent."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from conftest import CIFAR_JPG

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
PER_CLASS = 30


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory) -> Path:
    archive = next((p for p in CIFAR_JPG if p.is_file()), None)
    if archive is None:
        pytest.skip("real CIFAR-10 archive not found (../shared/data/cifar10-jpg.tar.gz)")
    dest = tmp_path_factory.mktemp("cifar10jpg")
    taken: Counter = Counter()
    with tarfile.open(archive, "r:gz") as tar:  # one streaming pass, PER_CLASS images per class and split
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and taken[parts[0], parts[1]] < PER_CLASS:
                taken[parts[0], parts[1]] += 1
                tar.extract(member, dest, filter="data")
    return dest


def test_find_then_transfer_on_real_cifar10(cifar_folder, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("TICKETX_DATA", str(tmp_path / "data"))
    common = ["--model", "conv4", "--rounds", "1", "--length", "4it", "--batch-size", "25", "--eval-every", "4it"]
    code, out, err = cli("find", "--data", f"imagefolder:{cifar_folder}[0-4]", *common, "--out", tmp_path / "a.pt")
    assert code == 0, err
    from ticketx import ticket as ticketfile
    from ticketx.data import decode

    t = ticketfile.load(tmp_path / "a.pt")
    assert t.meta["classes"] == ["airplane", "automobile", "bird", "cat", "deer"]
    assert (t.meta["image_size"], t.meta["channels"]) == (32, 3)
    # the decoded uint8 cache is reused: a second search decodes no JPEG
    monkeypatch.setattr(decode, "decode_image", lambda *a, **k: pytest.fail("JPEGs decoded again"))
    code, out, err = cli("find", "--data", f"imagefolder:{cifar_folder}[0-4]", *common, "--seed", "1", "--out", tmp_path / "b.pt")
    assert code == 0, err
    code, out, err = cli("transfer", tmp_path / "a.pt", "--to", f"imagefolder:{cifar_folder}[5-9]", "--round", "1",
                         "--length", "4it", "--baselines", "random-mask,random-reinit,dense", "--out", tmp_path / "tr")
    assert code == 0, err
    result = json.loads((tmp_path / "tr" / "result.json").read_text())
    assert result["target_classes"] == ["dog", "frog", "horse", "ship", "truck"]
    assert {r["label"] for r in result["runs"]} == {"ticket", "random-mask", "random-reinit", "dense"}
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in result["runs"])
