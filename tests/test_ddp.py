"""One run on several processes with DistributedDataParallel (ticketx.distributed), shown on CPU.

Fast tests check the pieces in one process: the shards of a global batch are exactly the
one-process batch, the evaluation blocks cover the test set once, non-zero ranks write nothing,
the SyncBatchNorm swap. The `slow` ones start 2 gloo processes on CPU (lenet_300_100 at 8x8 px on
digits, one thread each): losses agree with one process at the same global batch, the masked
weights are bit-identical across ranks after every step, and a DDP search killed with SIGKILL
and rerun ends with the same ticket as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import REPO, tiny_find_spec
from ticketx import distributed, store
from ticketx import ticket as ticketfile
from ticketx.data import Batches, load_data
from ticketx.errors import UsageError


def _images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % 10


KW = dict(mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.mark.parametrize("world", [2, 3])
def test_the_shards_of_a_global_batch_are_the_one_process_batch(world):
    x, y = _images(50)
    one = Batches(x, y, batch_size=12, train=True, crop_padding=2, flip=True, **KW)
    ranks = [Batches(x, y, batch_size=12, train=True, crop_padding=2, flip=True, shard=(r, world), **KW) for r in range(world)]
    assert all(len(b) == len(one) == 4 for b in ranks)  # the same number of steps (drop_last)
    seed = 7
    shards = [list(b.epoch(torch.Generator().manual_seed(seed))) for b in ranks]
    for i, (xb, yb) in enumerate(one.epoch(torch.Generator().manual_seed(seed))):
        parts = [s[i] for s in shards]
        assert [len(p[1]) for p in parts] == [12 // world] * world
        assert torch.equal(torch.cat([p[0] for p in parts]), xb) and torch.equal(torch.cat([p[1] for p in parts]), yb)


def test_evaluation_blocks_cover_the_test_set_once():
    x, y = _images(23)
    full = torch.cat([yb for _, yb in Batches(x, y, batch_size=4, train=False, **KW)])
    blocks = [torch.cat([yb for _, yb in Batches(x, y, batch_size=4, train=False, shard=(r, 3), **KW)]) for r in range(3)]
    assert [len(b) for b in blocks] == [7, 8, 8]
    assert torch.equal(torch.cat(blocks), full)
    with pytest.raises(ValueError, match="shard"):
        Batches(x, y, batch_size=4, train=False, shard=(3, 3), **KW)


def test_without_torchrun_everything_is_one_process(tmp_path):
    assert not distributed.active() and not distributed.init()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.broadcast({"a": 1}) == {"a": 1} and distributed.describe("cuda:0") == "cuda:0"
    distributed.agree(3, "a step")
    distributed.check_batch_size(7)
    distributed.barrier()
    assert store.writes()


def test_the_batch_size_must_split_evenly(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    with pytest.raises(UsageError, match=r"batch size \(30\).*multiple of.*\(4\)") as err:
        distributed.check_batch_size(30)
    assert "--batch-size 28" in (err.value.hint or "")
    distributed.check_batch_size(32)


def test_other_ranks_write_and_delete_nothing(monkeypatch, tmp_path):
    keep = tmp_path / "keep.json"
    keep.write_text("{}")
    (tmp_path / "tree").mkdir()
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    store.write_json(tmp_path / "a.json", {"x": 1})
    store.save_torch(tmp_path / "b.pt", {"x": torch.ones(1)})
    store.remove_file(keep)
    store.remove_tree(tmp_path / "tree")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json", "tree"]


def test_sync_batchnorm_swap_shares_the_tensors_and_restores_the_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(36, 5), nn.BatchNorm1d(5))
    before = [type(m) for m in model]
    weight, mean = model[1].weight, model[1].running_mean
    with distributed.sync_batchnorm(model, True):
        assert [type(m) for m in model if "Norm" in type(m).__name__] == [nn.SyncBatchNorm] * 2
        assert model[1].weight is weight and model[1].running_mean is mean
        assert any(p is weight for p in model.parameters())  # what the optimizer is built from
        model[1].running_mean.add_(1.0)  # what a forward does to the statistics, in place
        model.eval()
    assert [type(m) for m in model] == before and not model[1].training
    assert model[1].weight is weight and bool((model[1].running_mean == 1.0).all())
    with distributed.sync_batchnorm(model, False):
        assert [type(m) for m in model] == before


# ---- 2 processes on CPU (gloo) --------------------------------------------------------------

SPEC = dict(batch_size=60, length="24it", eval_every="1it")  # every step logged: loss and accuracy
DENSITY = 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup():
    """The same model, mask and data in every process (and in the one-process reference)."""
    from ticketx import masks as M
    from ticketx import pruning
    from ticketx.models import build_model, prunable_names

    torch.manual_seed(0)
    model = build_model("lenet_300_100", 5, 1, 8)
    params = dict(model.named_parameters())
    dense = M.ones_like({n: params[n] for n in prunable_names(model)})
    mask = pruning.prune_random(None, dense, 1 - DENSITY, scope="layerwise", generator=torch.Generator().manual_seed(0))
    return model, mask, load_data("digits[0-4]", image_size=8), tiny_find_spec(train=SPEC).train


def _digest(tensors: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    """One DDP rank: train, recording a digest of the masked weights after every step."""
    from ticketx import train as TR

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), TICKETX_THREADS="1")
    assert distributed.init() and distributed.rank() == rank
    digests: list[str] = []
    real = TR.MaskEnforcer.__call__

    def enforce_and_record(self):
        real(self)
        digests.append(_digest(self.params))

    TR.MaskEnforcer.__call__ = enforce_and_record
    try:
        model, mask, data, spec = _setup()
        res = TR.train([TR.Run.of(model, mask, data_seed=1)], TR.Recipe.of(data, spec, "cpu"))[0]
        torch.save({"history": res.history, "digests": digests, "state": model.state_dict(),
                    "writes": store.writes()}, Path(out) / f"rank{rank}.pt")
    finally:
        distributed.teardown()


@pytest.mark.slow
def test_two_processes_train_like_one_at_the_same_global_batch(tmp_path):
    from ticketx import train as TR

    torch.multiprocessing.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    # Masks and weights identical on both ranks after every one of the 24 steps, and at the end.
    assert len(r0["digests"]) == 24 and r0["digests"] == r1["digests"]
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])
    assert r0["history"] == r1["history"]  # the same averaged losses and summed accuracies
    assert (r0["writes"], r1["writes"]) == (True, False)

    model, mask, data, spec = _setup()
    with torch.inference_mode(False):
        ref = TR.train([TR.Run.of(model, mask, data_seed=1)], TR.Recipe.of(data, spec, "cpu"))[0]
    ddp_loss = torch.tensor([h["loss"] for h in r0["history"]])
    one_loss = torch.tensor([h["loss"] for h in ref.history])
    # The global batch's mean loss is the mean of the two half-batch means: equal up to float
    # rounding, which grows slowly over the steps (measured: below 1e-6 relative here).
    assert torch.allclose(ddp_loss[:10], one_loss[:10], rtol=1e-5, atol=0)
    assert torch.allclose(ddp_loss, one_loss, rtol=1e-4, atol=0)
    ref_state = model.state_dict()
    assert all(torch.allclose(r0["state"][k], ref_state[k], rtol=0, atol=1e-5) for k in ref_state)
    for name, m in mask.items():  # pruned weights are exactly zero
        assert bool((r0["state"][name][~m] == 0).all()), name


FIND = ["find", "--data", "digits[0-4]", "--model", "lenet_300_100", "--image-size", "8", "--rounds", "1",
        "--epochs", "4", "--batch-size", "16", "--eval-every", "15it", "--rewind", "1ep", "--deterministic",
        "--device", "cpu", "--seed", "3"]


def _torchrun(out: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TICKETX_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("TICKETX_DEBUG", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "ticketx", *FIND, "--out", str(out)]
    return subprocess.Popen(cmd, cwd=out.parent, env=env, stdout=open(log.with_suffix(".out"), "w"),
                            stderr=open(log, "w"))


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc)."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        here = todo.pop()
        kids = [c for c, p in parent.items() if p == here]
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks to kill through /proc (Linux)")
def test_a_killed_ddp_search_resumes_to_the_same_ticket(tmp_path):
    from test_reliability import assert_same_ticket

    ref_out = tmp_path / "ref" / "t.pt"
    ref_out.parent.mkdir()
    proc = _torchrun(ref_out, tmp_path / "ref.log")
    assert proc.wait(300) == 0, (tmp_path / "ref.log").read_text()[-3000:]
    ref = ticketfile.load(ref_out)
    assert ref.meta["device"] == "cpu (DDP, 2 processes)"
    # Human output once (rank 0), the machine output (the ticket's path) once.
    assert (tmp_path / "ref.out").read_text().split() == [str(ref_out)]
    assert (tmp_path / "ref.log").read_text().count("ticket written") == 1

    out = tmp_path / "run" / "t.pt"
    out.parent.mkdir()
    proc = _torchrun(out, tmp_path / "killed.log")
    ck = out.parent / "t.pt.work" / "round_00" / "checkpoint.pt"
    end = time.monotonic() + 300
    while not ck.exists():
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < end, "no checkpoint in time"
        time.sleep(0.02)
    # The node dies: the launcher and both ranks (torchrun starts each rank in its own session).
    victims = [proc.pid, *_descendants(proc.pid)]
    assert len(victims) >= 3, victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    end = time.monotonic() + 60
    while any(_alive(pid) for pid in victims[1:]):
        assert time.monotonic() < end, "the ranks survived SIGKILL"
        time.sleep(0.05)
    assert not out.exists(), "the search finished before it could be killed"

    proc = _torchrun(out, tmp_path / "resumed.log")
    assert proc.wait(300) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert "resumed from checkpoint" in (tmp_path / "resumed.log").read_text()
    assert_same_ticket(ticketfile.load(out), ref)
    assert not (out.parent / "t.pt.work").exists()


def test_a_study_refuses_to_run_under_torchrun(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, out, err = cli("study", "run", tmp_path / "s.yaml")
    assert code == 2, err
    assert "does not run under torchrun" in err and "--devices" in err and not distributed.active()
