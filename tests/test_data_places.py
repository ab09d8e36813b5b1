"""Chunked, parallel, resumable, shared decoding (decode.decode_to_folder) on real-format Places365 files.

Every test writes a few dozen small JPEGs (datafiles.write_places_many) and compares bytes with
the one-shot in-memory decode (decode_all), which is what ticketx decoded before chunking."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from datafiles import PLACES, write_places_many

from ticketx import store
from ticketx.data import decode, load_data

pytestmark = pytest.mark.usefixtures("offline")
REPO = Path(__file__).resolve().parents[1]
SIZE = (16, 16)
REAL_DECODE = decode.decode_image


def _splits(files: list[Path], n_train: int) -> dict[str, list[Path]]:
    return {"train": files[:n_train], "test": files[n_train:]}


def _expected(splits: dict[str, list[Path]]) -> dict[str, torch.Tensor]:
    return {k: decode.decode_all(v, SIZE, rgb=True) for k, v in splits.items()}


def _counting(monkeypatch, fail_after: int | None = None) -> list[Path]:
    calls: list[Path] = []
    real = REAL_DECODE

    def counted(path, size=None):
        if fail_after is not None and len(calls) == fail_after:
            raise KeyboardInterrupt("pre-empted")  # what a Ctrl-C or a signal handler raises mid-decode
        calls.append(Path(path))
        return real(path, size)

    monkeypatch.setattr(decode, "decode_image", counted)
    return calls


@pytest.mark.parametrize("chunk", [1, 7, 8, 1000])
def test_chunked_decode_is_bit_identical_to_the_one_shot_decode(tmp_path, chunk):
    files = write_places_many(tmp_path, train_per_class=12, val_per_class=3)  # 36 + 9, one gray
    splits = _splits(files, 36)
    lines = []
    xs, color = decode.decode_to_folder(splits, SIZE, tmp_path / "c", chunk_images=chunk, workers=1, progress=lines.append)
    want = _expected(splits)
    for k in ("train", "test"):
        assert xs[k].shape == want[k].shape and xs[k].dtype == torch.uint8
        assert torch.equal(xs[k], want[k])  # same bytes, gray image replicated to 3 channels alike
    assert color is True
    chunks = -(-36 // chunk) + -(-9 // chunk)
    assert sorted(p.name for p in (tmp_path / "c").glob("*.done"))[:1] == ["test-000000.done"]
    assert len(list((tmp_path / "c").glob("*.done"))) == chunks
    assert not list((tmp_path / "c").glob("*.lease"))  # every lease given back
    assert lines[-1].startswith(f"decoding: {chunks}/{chunks} chunks (45/45 images)")
    assert len(lines) <= 21  # about one line per 5% when not on a terminal


def test_places365_load_uses_the_chunked_cache(tmp_path, no_md5, monkeypatch):
    files = write_places_many(tmp_path, train_per_class=6, val_per_class=2)
    monkeypatch.setattr(decode, "CHUNK_IMAGES", 4)
    d = load_data("places365", tmp_path, image_size=16, download=False)
    assert d.classes == PLACES and d.train_x.shape == (18, 3, 16, 16) and d.test_x.shape == (6, 3, 16, 16)
    assert d.train_y.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    want = _expected(_splits(files, 18))
    assert torch.equal(d.train_x, want["train"]) and torch.equal(d.test_x, want["test"])
    folder = tmp_path / "cache" / "places365-16px"
    assert json.loads((folder / "layout.json").read_text())["chunk_images"] == 4
    assert len(list(folder.glob("train-*.done"))) == 5 and len(list(folder.glob("test-*.done"))) == 2
    calls = _counting(monkeypatch)
    again = load_data("places365", tmp_path, image_size=16, download=False)
    assert calls == [] and torch.equal(again.train_x, d.train_x)


def test_interrupted_decode_resumes_with_only_the_missing_chunks(tmp_path, monkeypatch):
    files = write_places_many(tmp_path, train_per_class=12, val_per_class=3)
    splits = _splits(files, 36)
    calls = _counting(monkeypatch, fail_after=20)  # chunks 0-1 of train done, chunk 2 half written
    with pytest.raises(KeyboardInterrupt):
        decode.decode_to_folder(splits, SIZE, tmp_path / "c", chunk_images=8, workers=1, progress=lambda line: None)
    folder = tmp_path / "c"
    assert sorted(p.name for p in folder.glob("*.done")) == ["train-000000.done", "train-000001.done"]
    assert not list(folder.glob("*.lease")) and not (folder / "complete.json").exists()
    calls = _counting(monkeypatch)
    xs, _ = decode.decode_to_folder(splits, SIZE, folder, chunk_images=8, workers=1, progress=lambda line: None)
    assert calls == files[16:]  # each missing image once, none of the 16 already on disk
    want = _expected(splits)
    assert torch.equal(xs["train"], want["train"]) and torch.equal(xs["test"], want["test"])


# A decoding process for the tests below: slowed down, and logging every image it decodes.
_WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from ticketx.data import decode

    args = json.loads(sys.argv[1])
    real = decode.decode_image
    log = open(args["log"], "a", buffering=1)

    def slow(path, size=None):
        log.write(str(path) + "\\n")
        time.sleep(args["delay"])
        return real(path, size)

    decode.decode_image = slow
    Path(args["ready"]).touch()
    while not all(Path(p).exists() for p in args["wait_for"]):  # start together
        time.sleep(0.01)
    splits = {k: [Path(p) for p in v] for k, v in args["splits"].items()}
    xs, color = decode.decode_to_folder(splits, (16, 16), Path(args["folder"]), chunk_images=args["chunk"], workers=1,
                                        lease_timeout=args.get("timeout", 300.0), poll=0.02)
    print(json.dumps({k: int(v.sum()) for k, v in xs.items()}))
    """
)


def _start(tmp_path: Path, i: int, splits, folder: Path, n: int, delay: float, chunk: int) -> subprocess.Popen:
    args = {
        "log": str(tmp_path / f"log{i}"), "ready": str(tmp_path / f"ready{i}"), "delay": delay, "chunk": chunk,
        "wait_for": [str(tmp_path / f"ready{j}") for j in range(n)], "folder": str(folder),
        "splits": {k: [str(p) for p in v] for k, v in splits.items()},
    }
    env = {**os.environ, "PYTHONPATH": str(REPO), "TICKETX_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _decoded(tmp_path: Path, i: int) -> list[str]:
    path = tmp_path / f"log{i}"
    return path.read_text().split() if path.exists() else []


def test_two_processes_share_the_work_and_decode_each_chunk_once(tmp_path):
    files = write_places_many(tmp_path, train_per_class=12, val_per_class=3)
    splits = _splits(files, 36)
    procs = [_start(tmp_path, i, splits, tmp_path / "c", 2, delay=0.01, chunk=4) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    a, b = _decoded(tmp_path, 0), _decoded(tmp_path, 1)
    assert sorted(a + b) == sorted(map(str, files))  # every image decoded exactly once, in all
    assert a and b  # by both processes
    want = _expected(splits)
    sums = {k: int(v.sum()) for k, v in want.items()}
    assert [json.loads(o[0]) for o in outs] == [sums, sums]
    xs, _ = decode.decode_to_folder(splits, SIZE, tmp_path / "c", workers=1)
    assert torch.equal(xs["train"], want["train"]) and torch.equal(xs["test"], want["test"])
    assert (tmp_path / "c" / "complete.json").is_file() and not list((tmp_path / "c").glob("*.lease"))


def test_killed_decoder_is_resumed_and_its_lease_taken_over_at_once(tmp_path, monkeypatch):
    files = write_places_many(tmp_path, train_per_class=12, val_per_class=3)
    splits = _splits(files, 36)
    folder = tmp_path / "c"
    proc = _start(tmp_path, 0, splits, folder, 1, delay=0.05, chunk=4)
    deadline = time.monotonic() + 120
    while len(_decoded(tmp_path, 0)) < 10 and time.monotonic() < deadline:  # inside chunk 2 (images 8-11)
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # pre-empted: no cleanup at all
    proc.wait()
    done = sorted(folder.glob("*.done"))
    assert [p.name for p in done] == ["train-000000.done", "train-000001.done"]
    assert [p.name for p in folder.glob("*.lease")] == ["train-000002.lease"]  # the dead process's lease stays
    calls = _counting(monkeypatch)
    lines: list[str] = []
    t = time.monotonic()
    xs, _ = decode.decode_to_folder(splits, SIZE, folder, workers=1, progress=lines.append)  # default 300 s timeout
    assert time.monotonic() - t < 60  # the lease of a dead process of this host is taken over at once
    assert len(calls) == 45 - 4 * len(done)  # only the chunks that were not on disk
    assert any(line.startswith(f"takeover train-000002 from pid {proc.pid} on ") and line.endswith("its process is gone") for line in lines), lines
    assert not list(folder.glob("*.lease"))
    want = _expected(splits)
    assert torch.equal(xs["train"], want["train"]) and torch.equal(xs["test"], want["test"])


def test_stale_lease_of_another_host_is_taken_over_after_the_timeout(tmp_path, monkeypatch):
    files = write_places_many(tmp_path, train_per_class=4, val_per_class=1)
    splits = _splits(files, 12)
    folder = tmp_path / "c"
    folder.mkdir()
    stale = {"host": "node-that-died", "pid": 4242, "token": "x", "start_unix": 0, "lease_timeout": 300}
    assert store.create_exclusive(folder / "train-000000.lease", json.dumps(stale).encode())
    calls = _counting(monkeypatch)
    lines: list[str] = []
    t = time.monotonic()
    xs, _ = decode.decode_to_folder(splits, SIZE, folder, chunk_images=4, workers=1, lease_timeout=1.0, progress=lines.append)
    assert time.monotonic() - t >= 1.0  # waited a whole timeout without a heartbeat first
    assert calls[-4:] == files[:4]  # chunk 0 came last, after the free ones
    assert len(calls) == 15
    assert any(line == "takeover train-000000 from pid 4242 on node-that-died: no heartbeat for 1s" for line in lines)
    assert torch.equal(xs["train"], _expected(splits)["train"])


def test_process_pool_decode_is_bit_identical(tmp_path, monkeypatch):
    files = write_places_many(tmp_path, train_per_class=12, val_per_class=3)
    splits = _splits(files, 36)
    monkeypatch.setattr(decode, "_POOL_MIN_IMAGES", 0)  # the pool path, not threads, on 45 images
    monkeypatch.setattr(decode, "_BLOCK_IMAGES", 5)
    xs, _ = decode.decode_to_folder(splits, SIZE, tmp_path / "c", chunk_images=16, workers=2, progress=lambda line: None)
    want = _expected(splits)
    assert torch.equal(xs["train"], want["train"]) and torch.equal(xs["test"], want["test"])


def test_a_folder_of_other_images_is_refused(tmp_path):
    files = write_places_many(tmp_path, train_per_class=2, val_per_class=1)
    decode.decode_to_folder(_splits(files, 6), SIZE, tmp_path / "c", workers=1)
    with pytest.raises(decode.TicketxError, match="holds other images"):
        decode.decode_to_folder(_splits(files, 5), SIZE, tmp_path / "c", workers=1)
