"""Experiment trackers (ticketx.trackers): scalars logged by global step while a network trains, read
back with each tool's own reader; a resumed run logs no step twice; rank 0 only; a missing extra is one
line; `ticketx --help` imports none of them. Tools not installed skip their tests (`[test]` has
tensorboard; `[dev]` all three)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, tiny_find_spec
from ticketx import train as TR
from ticketx.data import load_data
from ticketx.models import build_model
from ticketx.ui import Reporter

LOG = TR.LOG_EVERY


def _events(folder: Path) -> "object":
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder))
    ea.Reload()
    return ea


def _steps(ea, tag: str) -> list[int]:
    return [e.step for e in ea.Scalars(tag)]


def test_find_with_tensorboard_writes_what_tensorboard_reads(cli, tmp_path):
    pytest.importorskip("tensorboard")
    tb = tmp_path / "tb"
    out = tmp_path / "t.pt"
    # 721 images, batch 60: 12 steps per epoch, 36 in all; round 1 rewinds to step 12 (1 epoch)
    code, _, stderr = cli("find", "-d", "digits[0-4]", "-m", "lenet_300_100", "--image-size", "8", "--rounds", "1",
                          "--rewind", "1ep", "--optimizer", "adam", "--lr", "1.2e-3", "--batch-size", "60", "--epochs", "3",
                          "--scope", "layerwise", "--device", "cpu", "--tracker", f"tensorboard:{tb}", "--out", out)
    assert code == 0, stderr
    from ticketx import ticket as ticketfile

    rounds = ticketfile.load(out).rounds
    assert sorted(p.name for p in (tb / "t").iterdir()) == ["round_00", "round_01", "rounds"]
    dense, pruned = _events(tb / "t" / "round_00"), _events(tb / "t" / "round_01")
    for tag in ("train/loss", "train/lr", "train/accuracy", "test/accuracy", "density", "time/step_ms"):
        assert tag in dense.Tags()["scalars"], tag
    # every LOG_EVERY steps and at every evaluation (each epoch end), by global step
    assert _steps(dense, "train/loss") == [12, 24, LOG, 36]
    assert _steps(dense, "test/accuracy") == [12, 24, 36]
    assert [e.value for e in dense.Scalars("test/accuracy")] == pytest.approx([h["test_acc"] for h in rounds[0]["history"]])
    assert _steps(pruned, "train/loss") == [24, LOG, 36]  # the rewound network starts at its rewind step
    assert [e.value for e in pruned.Scalars("density")] == pytest.approx([rounds[1]["density"]] * 2)  # at 24, 36
    assert [e.value for e in dense.Scalars("train/lr")] == pytest.approx([1.2e-3] * 4)
    assert all(0 <= e.value <= 1 for e in dense.Scalars("train/accuracy"))
    summary = _events(tb / "t" / "rounds")
    assert _steps(summary, "round/density") == [0, 1]
    assert [e.value for e in summary.Scalars("round/density")] == pytest.approx([r["density"] for r in rounds])
    # the config: the fields of the run's key (the search's settings), as text
    text = dense.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"lr": 0.0012' in text and '"rewind": "1ep"' in text and '"key":' in text


def _run(folder: Path, reporter, length: str = "3ep"):
    torch.manual_seed(0)
    model = build_model("lenet_300_100", 5, 1, 8)
    spec = tiny_find_spec(train=dict(length=length, eval_every="1ep")).train
    run = TR.Run.of(model, None, key="k", folder=folder, data_seed=1, label="net", config={"lr": spec.lr})
    return TR.train([run], TR.Recipe.of(load_data("digits[0-4]", image_size=8), spec, "cpu"), reporter)[0]


@pytest.mark.parametrize("crash", [False, True], ids=["interrupted", "killed"])
def test_a_resumed_run_continues_its_tracker_run_without_a_step_twice(tmp_path, monkeypatch, crash):
    """Stopped at step 30 (after the epoch-2 checkpoint at 24 and the point at 25): the resumed run
    restarts at 24 and logs each step once. 'killed': nothing of the stopped session is closed or
    recorded after its last epoch end (as SIGKILL would leave it); TensorBoard's purge hides its
    later events, which are logged again."""
    pytest.importorskip("tensorboard")
    from ticketx.trackers import TrackedRun, open_tracker

    tracker = open_tracker("tensorboard", root=tmp_path, group="g")
    real_step = TR.TrackHook.after_step

    def stop_at_30(self, state):
        real_step(self, state)
        if state.step == 30:
            raise KeyboardInterrupt

    monkeypatch.setattr(TR.TrackHook, "after_step", stop_at_30)
    if crash:
        monkeypatch.setattr(TrackedRun, "finish", lambda self, ok=True: None)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "net", _with(tracker))
    monkeypatch.undo()
    recorded = json.loads((tmp_path / "net" / "tracking.json").read_text())["tensorboard"]
    assert recorded["step"] == (24 if crash else LOG) and recorded["key"] == "k"
    res = _run(tmp_path / "net", _with(open_tracker("tensorboard", root=tmp_path, group="g")))
    ea = _events(tmp_path / "tensorboard" / "net")
    assert _steps(ea, "train/loss") == [12, 24, LOG, 36]
    assert _steps(ea, "test/accuracy") == [12, 24, 36]
    assert ea.Scalars("test/accuracy")[-1].value == pytest.approx(res.test_acc)


def _with(tracker) -> Reporter:
    rep = Reporter()
    rep.tracker = tracker
    return rep


def test_only_rank_0_logs(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from ticketx import distributed
    from ticketx.trackers import open_tracker

    tracker = open_tracker("tensorboard", root=tmp_path, group="g")
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    assert open_tracker("tensorboard", root=tmp_path, group="g") is None
    _run(None, _with(tracker), length="1ep")  # another rank's trainer: its reporter is silenced
    assert not (tmp_path / "tensorboard").exists()


def _wandb_records(path: Path) -> list:
    """The records of a W&B run file, parsed with W&B's own protobuf schema. The file is W&B's
    7-byte header, then a LevelDB log: 32 KiB blocks of chunks (crc32, length, type: 1 full,
    2 first, 3 middle, 4 last)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf, out = path.read_bytes(), 7, 32768, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos: pos + 7])
        pos += 7
        if kind == 0 and length == 0:  # zero padding to the block's end
            pos += left - 7
            continue
        buf += data[pos: pos + length]
        pos += length
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def test_wandb_offline_writes_its_run_files_with_the_config(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # never the network
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    from ticketx.trackers import open_tracker

    tracker = open_tracker("wandb:ticketx-test", root=tmp_path, group="g")
    assert tracker.mode == "offline"
    _run(tmp_path / "net", _with(tracker), length="1ep")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    recorded = json.loads((tmp_path / "net" / "tracking.json").read_text())["wandb"]
    assert recorded["id"] in runs[0].name and recorded["step"] == 12
    import time

    deadline = time.monotonic() + 60  # W&B's writer is a separate process: on a busy machine it flushes late
    while True:
        records = _wandb_records(next(runs[0].glob("*.wandb")))  # what `wandb sync` uploads
        found = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert found, "no run record in the offline .wandb file"
    run = found[0]
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["lr"] == pytest.approx(1.2e-3) and config["run"]["key"] == "k" and config["run"]["total_steps"] == 12
    assert (run.run_id, run.project, run.run_group, run.display_name) == (recorded["id"], "ticketx-test", "g", "net")
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]
    assert [h["_step"] for h in history] == [12]
    assert {"train/loss", "train/lr", "train/accuracy", "test/accuracy"} <= set(history[0])


def test_mlflow_file_store_holds_params_and_metrics_by_step(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from ticketx.trackers import open_tracker

    tracker = open_tracker(f"mlflow:{tmp_path / 'mlruns'}", root=tmp_path, group="g")
    _run(tmp_path / "net", _with(tracker), length="3ep")
    recorded = json.loads((tmp_path / "net" / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    run = client.get_run(recorded["id"])
    assert run.data.params["lr"] == "0.0012" and run.data.params["run.key"] == "k"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [12, 24, LOG, 36]
    assert run.info.status == "FINISHED"


def test_a_missing_extra_is_one_line_naming_the_pip_command(cli, no_data, monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    code, _, stderr = cli("find", "-d", "digits[0-4]", "-m", "lenet_300_100", "--tracker", "tensorboard",
                          "--out", tmp_path / "t.pt")
    assert code == 2
    assert stderr.strip().splitlines()[0] == ('error: --tracker tensorboard needs tensorboard, which is not installed: '
                                              'pip install "ticketx[tensorboard]"')
    code, _, stderr = cli("find", "-d", "digits[0-4]", "-m", "lenet_300_100", "--tracker", "tensorbord", "--out", tmp_path / "t.pt")
    assert code == 2 and "did you mean 'tensorboard'" in stderr


def test_help_imports_no_tracker():
    code = ("import sys; sys.argv = ['ticketx', 'find', '--help']\n"
            "try:\n    import ticketx.cli as c; c.main()\nexcept SystemExit: pass\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'wandb', 'mlflow') or m == 'ticketx.trackers']\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_a_study_tracks_its_networks_and_its_summary(cli, tmp_path):
    pytest.importorskip("tensorboard")
    from ticketx import study as S

    ci = REPO / "studies" / "ci.yaml"
    small = ["--set", "search.seeds=[0]", "--set", "sources=['digits[0-2]']", "--set", "transfer.seeds=[0]",
             "--set", "expect=[]", "--set", "tracking=tensorboard"]
    base, tracked = S.load_study(ci, overrides=small[1::2][:-1]), S.load_study(ci, overrides=small[1::2])
    assert [c.key for c in base.cells] == [c.key for c in tracked.cells]  # tracking is not science
    out = tmp_path / "s"
    code, _, stderr = cli("study", "run", ci, "--out", out, *small)
    assert code == 0, stderr
    tb = out / "tensorboard"
    names = sorted(str(p.parent.relative_to(tb)) for p in tb.rglob("events.out.tfevents.*"))
    assert "study" in names
    assert any(n.startswith("cells/search-") and n.endswith("/ticket/round_01") for n in names)
    assert any(n.startswith("runs/random-mask-r01-s0-") for n in names)
    study = _events(tb / "study")
    assert _steps(study, "cells_done") == [len(tracked.cells)]
    assert "summary/text_summary" in study.Tags()["tensors"]
    assert sorted(study.Tags()["images"]) == sorted(f"plots/{p.stem}" for p in (out / "plots").glob("*.png"))
    with pytest.raises(Exception, match=r"tracking\.tracker: .*did you mean 'tensorboard'"):
        S.load_study(ci, overrides=["tracking=tensorbord"])
