"""ticketx.ui: reporters. On a terminal, bars; elsewhere (Slurm, CI, a pipe) one plain line per epoch."""

from __future__ import annotations

from ticketx import ui


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_plain_reporter_prints_one_line_per_epoch_with_eta():
    lines: list[str] = []
    clock = _Clock()
    rep = ui.PlainReporter(write=lines.append, clock=clock)
    task = rep.start("round 1/2", 30)
    rep.update(task, 0)
    clock.now += 5
    rep.update(task, 5, epoch="0.5", loss=0.9)  # a running-loss update: no line
    clock.now += 5
    rep.update(task, 10, epoch="1/3", loss=0.51234, acc=0.8125, img_s=1234.4)
    assert lines == ["round 1/2  epoch 1/3  step 10/30  loss 0.5123  acc 81.25%  1,234 img/s  eta 0:20"]
    clock.now += 3610
    rep.update(task, 20, epoch="2/3", loss=0.4, img_s=12.0)  # no evaluation this epoch: no accuracy
    assert lines[-1] == "round 1/2  epoch 2/3  step 20/30  loss 0.4000  12 img/s  eta 30:10"  # 3620 s for 20 steps
    clock.now += 7200
    rep.update(task, 21, epoch="2.1/3", loss=0.3, img_s=12.0)
    assert lines[-1].endswith("eta 1:17:17")  # 10820 s / 21 steps x 9 left: hours once past 60 minutes
    rep.update(task, 30, epoch="3/3", loss=0.3, acc=0.9, img_s=12.0)
    assert lines[-1].endswith("acc 90.00%  12 img/s")  # finished: no eta
    rep.finish(task)
    assert len(lines) == 4


def test_plain_reporter_eta_counts_from_a_resumed_step():
    lines: list[str] = []
    clock = _Clock()
    rep = ui.PlainReporter(write=lines.append, clock=clock)
    task = rep.start("train", 100)
    rep.update(task, 60)  # resumed at step 60
    clock.now += 10
    rep.update(task, 70, epoch="7/10", loss=0.1, img_s=5.0)
    assert lines[-1].endswith("eta 0:30")  # 10 s per 10 steps, 30 steps left


def test_rich_reporter_falls_back_to_plain_lines_off_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv("TICKETX_PROGRESS", raising=False)
    assert not ui.console.is_terminal  # pytest captures stderr
    with ui.RichReporter() as rep:
        assert rep.plain is not None
        task = rep.start("[1/3] random-mask r1 s0", 4)  # brackets are printed as they are, not as markup
        rep.update(task, 0)
        rep.update(task, 2, epoch="1/2", loss=1.5, acc=0.25, img_s=100.0)
        rep.finish(task)
    err = capsys.readouterr().err
    assert "[1/3] random-mask r1 s0  epoch 1/2  step 2/4  loss 1.5000  acc 25.00%  100 img/s" in err
    monkeypatch.setenv("TICKETX_PROGRESS", "1")
    assert ui.RichReporter().plain is None  # bars forced on: no plain lines


def test_find_off_a_terminal_logs_every_epoch_of_round_0(cli, tmp_path):
    """A batch job's log shows progress during a round, not only the table at its end."""
    code, out, err = cli("find", "--data", "digits[0-4]", "--model", "lenet_300_100", "--rounds", "1", "--epochs", "2",
                         "--device", "cpu", "--out", tmp_path / "t.pt")
    assert code == 0, err
    for r in (0, 1):
        for e in (1, 2):
            assert f"round {r}/1  epoch {e}/2  step " in err, err
    assert err.index("round 0/1  epoch 2/2") < err.index("round 1/1  epoch 1/2")
