"""Cohorts of cells (`cohort:` in a study): which cells train together is fixed by the study file;
searches of several seeds run in lockstep and find the tickets they find alone; a study with
cohorts gives the results.csv and summary.csv of one network at a time (byte for byte on this
CPU); a killed group resumes from its checkpoints to the same results; workers never train a
cell twice and a cell leased elsewhere falls out of a group."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from ticketx import cohort as C
from ticketx import study as S
from ticketx.study.cells import SearchCell, TransferCell
from ticketx.study.cohorts import groups

from conftest import child_env, tiny_find_spec, worker_events
from datafiles import ci_grid



pytestmark = pytest.mark.usefixtures("one_thread")


def _study_file(folder: Path, cohort: int | str, length: str = "1ep", name: str = "grid") -> Path:
    """studies/ci.yaml's grid with 3 tickets per source and 2 transfer seeds (21 cells, 60 networks)."""
    text = ci_grid("[0, 1]", "[0, 1, 2]").replace("name: ci", f"name: {name}")
    text = text.replace("cpu_threads: 1", "cpu_threads: 1\ndeterministic: true").replace("length: 1ep", f"length: {length}")
    path = folder / f"grid-{cohort}-{length}.yaml"
    path.write_text(text + f"cohort: {cohort}\n")
    return path


def _run(path: Path, out: Path) -> Path:
    S.run_study(S.load_study(path), out)
    S.report(out, plots=False)
    return out


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory) -> Path:
    """The grid trained one network at a time (`cohort: 1`): the reference."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("one")
    return _run(_study_file(folder, 1), folder / "out")


class Calls:
    """Counts the trainer's calls and how many runs each got (the cohort trainer's groups too)."""

    def __init__(self, monkeypatch) -> None:
        import ticketx.train as TR

        self.sizes: list[int] = []
        self.cohorts: list[int] = []
        real_train, real_group = TR.train, C.train_group

        def train(runs, recipe, reporter=None, done=None):
            self.sizes.append(len(runs))
            return real_train(runs, recipe, reporter, done)

        def train_group(group, *a, **k):
            self.cohorts.append(len(group))
            return real_group(group, *a, **k)

        monkeypatch.setattr(TR, "train", train)
        monkeypatch.setattr(C, "train_group", train_group)


# ---- grouping: from the study file alone ----


def test_groups_are_fixed_by_the_study_file(tmp_path):
    study = S.load_study(_study_file(tmp_path, 16))
    got = groups(study, "cpu")
    assert got == groups(S.load_study(_study_file(tmp_path, 16)), "cpu")  # a rerun (another worker) forms the same
    by_id = {c.id: c for c in study.cells}
    order = {c.id: i for i, c in enumerate(study.cells)}
    distinct = set(got.values())
    for g in distinct:
        cells = [by_id[i] for i in g]
        assert list(g) == sorted(g, key=order.get)  # in study order
        assert all(got[i] == g for i in g)
        kinds = {type(c) for c in cells}
        assert len(kinds) == 1
        if kinds == {SearchCell}:  # searches that differ only in their seeds, up to 16 of them
            assert len({(c.find.data, c.find.model, c.find.train.model_dump_json()) for c in cells}) == 1
            assert len({c.find.seed for c in cells}) == len(cells) <= 16
        else:  # one ticket, one own ticket, 16 networks at most
            assert kinds == {TransferCell}
            assert len({(c.source, c.own_ticket) for c in cells}) == 1
            assert sum(c.networks for c in cells) <= 16 or len(cells) == 1
    searches = [g for g in distinct if isinstance(by_id[g[0]], SearchCell)]
    assert sorted(len(g) for g in searches) == [3, 3, 3]  # 2 sources and the target's own tickets, 3 seeds each
    transfers = [g for g in distinct if isinstance(by_id[g[0]], TransferCell)]
    assert len(transfers) == 6 and {len(g) for g in transfers} == {2}  # each ticket's 2 transfer seeds
    # a smaller cohort splits them: 4 networks at most (the cells of 4 networks alone, 3 searches at a time)
    small = S.load_study(_study_file(tmp_path, 4))
    four = groups(small, "cpu")
    assert all(len(g) == 1 for cid, g in four.items() if cid.startswith("transfer"))
    assert {len(g) for cid, g in four.items() if cid.startswith("search")} == {3}
    # cohort 1 (the default): every cell alone; auto for lenet on CPU: cohorts of 16 (ticketx.cohort.AUTO)
    assert set(groups(S.load_study(_study_file(tmp_path, 1)), "cpu").values()) == {(c.id,) for c in study.cells}
    assert groups(S.load_study(_study_file(tmp_path, "auto")), "cpu") == got
    conv = (tmp_path / "conv.yaml")
    conv.write_text(_study_file(tmp_path, "auto").read_text().replace("lenet_300_100", "conv2").replace("image_size: 8", "image_size: 16"))
    assert all(len(g) == 1 for g in groups(S.load_study(conv), "cpu").values())  # auto trains conv nets alone on CPU


def test_groups_are_as_few_as_filling_gives_and_even():
    from ticketx.study.cohorts import _next_fit, balanced

    loads = lambda widths, chunks: [sum(widths[i] for i in c) for c in chunks]  # noqa: E731
    assert loads([2] * 17, balanced([2] * 17, 16)) == [12, 12, 10]  # not 16/16/2
    assert loads([7] * 5, balanced([7] * 5, 16)) == [14, 14, 7]  # 3 groups are needed; none can be evener
    assert balanced([20, 1, 1], 16) == [[0], [1, 2]]  # wider than the cohort: alone
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        widths = torch.randint(1, 9, (int(torch.randint(1, 30, (1,), generator=g)),), generator=g).tolist()
        limit = int(torch.randint(1, 20, (1,), generator=g))
        got, greedy = balanced(widths, limit), _next_fit(widths, limit)
        assert [i for c in got for i in c] == list(range(len(widths)))  # consecutive, every cell once
        assert len(got) == len(greedy)  # as few groups as filling each to the cohort size
        assert max(loads(widths, got)) <= max(loads(widths, greedy))
        assert all(len(c) == 1 or sum(widths[i] for i in c) <= limit for c in got)


# ---- searches of several seeds in lockstep ----


def _ticket_hash(t) -> str:
    h = hashlib.sha256()
    for r in range(1, t.num_rounds + 1):
        for n, m in sorted(t.mask(r).items()):
            h.update(n.encode() + m.numpy().tobytes())
    for n, w in sorted(t.rewind.items()):
        h.update(n.encode() + w.numpy().tobytes())
    return h.hexdigest()


def test_search_seeds_in_lockstep_find_the_tickets_found_one_at_a_time(tmp_path, monkeypatch):
    from ticketx.search import find, find_many

    specs = [tiny_find_spec(seed=s, prune={"rounds": 2, "rate": 0.5}) for s in (0, 1, 2)]
    alone = [find(s, tmp_path / f"alone{i}.pt", device="cpu") for i, s in enumerate(specs)]
    calls = Calls(monkeypatch)
    together = find_many([(s, tmp_path / f"together{i}.pt") for i, s in enumerate(specs)], device="cpu", cohort=3)
    assert calls.sizes == [3, 3, 3] and calls.cohorts == [3, 3, 3]  # each round of the 3 seeds in one cohort
    for a, b in zip(alone, together):
        assert b.meta["fingerprint"] == a.meta["fingerprint"]  # the very same search
        for r in (1, 2):
            assert all(torch.equal(a.mask(r)[n], b.mask(r)[n]) for n in a.mask(r))  # masks exactly equal
        assert all(torch.equal(a.rewind[n], b.rewind[n]) for n in a.rewind)  # rewind 0: the initialisation
        for ra, rb in zip(a.rounds, b.rounds):
            assert rb["test_acc"] == pytest.approx(ra["test_acc"], abs=2 / 179)  # within 2 test images
    assert len({_ticket_hash(t) for t in together}) == 3  # three different tickets, not one copied
    # cohort 1 (the default) keeps today's path: the ticket of `find`, bit for bit
    monkeypatch.undo()
    again = find_many([(specs[0], tmp_path / "one.pt")], device="cpu")
    assert _ticket_hash(again[0]) == _ticket_hash(alone[0])


def test_searches_that_differ_in_more_than_their_seeds_are_refused(tmp_path):
    from ticketx.errors import UsageError
    from ticketx.search import find_many

    with pytest.raises(UsageError, match="differ only in their seeds"):
        find_many([(tiny_find_spec(seed=0), tmp_path / "a.pt"), (tiny_find_spec(seed=1, train={"lr": 0.01}), tmp_path / "b.pt")])


# ---- a study with cohorts ----


@pytest.mark.parametrize("cohort", ["auto", 4])
def test_a_study_with_cohorts_gives_the_results_of_one_at_a_time(one_at_a_time, tmp_path, monkeypatch, cohort):
    calls = Calls(monkeypatch)
    out = _run(_study_file(tmp_path, cohort), tmp_path / "out")
    # byte for byte on this CPU (fp32: batched matmuls may round differently elsewhere; results.csv
    # holds accuracies, which a last-bit difference in a weight changes only when a test image flips)
    for name in ("results.csv", "summary.csv"):
        assert (out / name).read_bytes() == (one_at_a_time / name).read_bytes(), name
    # searches: round r of 3 seeds in one cohort (3 groups x 2 rounds); with auto, transfer cells of
    # one ticket in one call (2 cells of 4 networks, or 3 networks when the own ticket's is shared)
    assert calls.cohorts.count(3) >= 6
    if cohort == "auto":
        assert max(calls.sizes) >= 7 and max(calls.cohorts) >= 7
    else:
        assert max(calls.cohorts) <= 4
    done = [S.runner.is_done(out, c) for c in S.load_study(_study_file(tmp_path, cohort)).cells]
    assert all(done)


def test_a_killed_group_resumes_from_its_checkpoints(tmp_path, monkeypatch):
    path = _study_file(tmp_path, 16, length="2ep")
    reference = _run(path, tmp_path / "reference")
    saves = {"n": 0}
    real_save = C.Cohort.save

    def save_then_stop(self, i, step, running, seconds):  # killed right after a transfer cohort's checkpoints
        real_save(self, i, step, running, seconds)
        if self.members[i].run.experiment == "transfer" and i == self.n - 1:
            saves["n"] += 1
            if saves["n"] == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(C.Cohort, "save", save_then_stop)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        S.run_study(S.load_study(path), out)
    monkeypatch.undo()
    resumed: list[int] = []
    real_resume = C.Cohort.resume

    def resume(self, checkpoints, step, reporter):
        resumed.extend(step for ck in checkpoints if ck is not None)
        return real_resume(self, checkpoints, step, reporter)

    monkeypatch.setattr(C.Cohort, "resume", resume)
    _run(path, out)
    assert len(resumed) >= 7 and len(set(resumed)) == 1  # the killed group's networks, from their epoch-1 checkpoints
    for name in ("results.csv", "summary.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


# ---- workers ----


def test_a_cell_leased_elsewhere_falls_out_of_its_group(tmp_path):
    from ticketx.leases import Leases
    from ticketx.study.runner import done_ids
    from ticketx.study.worker import Pending, Worker, lease_dir

    study = S.load_study(_study_file(tmp_path, 16))
    out = tmp_path / "out"
    worker = Worker(study, out, "cpu", lease_timeout=60)
    first = [c for c in study.cells if c.kind == "search"][:3]
    assert worker.groups[first[0].id] == tuple(c.id for c in first)
    other = Leases(lease_dir(out), 60, owner={"worker": "other"})
    assert other.acquire(first[1].id)  # another worker trains the second seed's search
    worker.leases.start()
    try:
        left = Pending([c for c in study.cells if c.kind == "search"], worker.deps, done_ids(out, study.cells))
        claimed = worker._next(left)
        assert [c.id for c in claimed] == [first[0].id, first[2].id]  # the group without it
        assert first[1].id in left.ready and first[2].id not in left.ready
        assert worker.leases.held.keys() == {first[0].id, first[2].id}
    finally:
        worker.leases.stop()
        worker.leases.release_all()
        other.release_all()


def test_two_workers_with_cohorts_train_each_cell_once(one_at_a_time, tmp_path, monkeypatch, cli):
    env = child_env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "two"
    code, stdout, stderr = cli("study", "run", _study_file(tmp_path, 16), "--out", out, "--workers", "2",
                               "--lease-timeout", "3")
    assert code == 0, stderr
    starts = worker_events(out, "start")
    cells = [c["id"] for c in S.load_provenance(out)["cells"]]
    assert sorted(starts) == sorted(cells) and set(starts.values()) == {1}  # each cell trained exactly once
    assert sum(worker_events(out, "cohort").values()) >= 2  # cells were trained in groups
    assert not list((out / "leases").iterdir())
    # which cells fall out of a group depends on the workers' timing: equal to float tolerance (here, bit for bit)
    assert (out / "results.csv").read_bytes() == (one_at_a_time / "results.csv").read_bytes()


def test_a_failed_group_is_retried_cell_by_cell_and_each_cell_starts_once(one_at_a_time, tmp_path, monkeypatch):
    import ticketx.study.worker as W

    real, failed = W.run_cells, []

    def fail_first(cells, *a, **k):
        if not failed:
            failed.extend(c.id for c in cells)
            raise RuntimeError("boom")
        return real(cells, *a, **k)

    monkeypatch.setattr(W, "run_cells", fail_first)
    out = _run(_study_file(tmp_path, 16), tmp_path / "out")
    assert len(failed) == 3  # the first group: three seeds' searches in lockstep
    starts, retries = worker_events(out, "start"), worker_events(out, "retry")
    cells = [c["id"] for c in S.load_provenance(out)["cells"]]
    assert sorted(starts) == sorted(cells) and set(starts.values()) == {1}  # a retried cell's start is logged once
    assert sorted(retries) == sorted(failed) and set(retries.values()) == {1}
    assert not any((out / "cells" / cid / "failed.json").exists() for cid in cells)
    assert (out / "results.csv").read_bytes() == (one_at_a_time / "results.csv").read_bytes()


# ---- stability cells ----


def test_a_tickets_stability_cells_train_their_copies_together(tmp_path, monkeypatch):
    """`stability:` with cohorts: every round's two copies of a ticket in one cohort; barriers as one at a time."""
    text = _study_file(tmp_path, 1).read_text().replace("    rounds: 1\n", "    rounds: 2\n")
    text = text.replace("cohort: 1\n", "stability:\n  rounds: all\n  points: 3\n")
    one, many = tmp_path / "one.yaml", tmp_path / "many.yaml"
    one.write_text(text)
    many.write_text(text + "cohort: 16\n")
    study = S.load_study(many)
    stab = [c for c in study.cells if c.kind == "stability"]
    grouped = {groups(study, "cpu")[c.id] for c in stab}
    assert len(stab) == 6 * 3 and len(grouped) == 6 and {len(g) for g in grouped} == {3}  # per ticket: its 3 rounds
    S.run_study(S.load_study(one), tmp_path / "o1")
    calls = Calls(monkeypatch)
    S.run_study(study, tmp_path / "o16")
    assert calls.cohorts.count(6) == 6  # per ticket: 3 rounds x 2 copies in one cohort
    for c in stab:  # within 2 test images (the sources' test sets hold 107 and 180 images)
        a = json.loads((tmp_path / "o1" / "cells" / c.id / "stability.json").read_text())
        b = json.loads((tmp_path / "o16" / "cells" / c.id / "stability.json").read_text())
        assert b["endpoint_test_acc"] == pytest.approx(a["endpoint_test_acc"], abs=2 / 107)
        assert b["test_barrier"] == pytest.approx(a["test_barrier"], abs=2 / 107)
        assert b["seeds"] == a["seeds"] and b["round"] == a["round"]
