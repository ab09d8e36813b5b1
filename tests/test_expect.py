"""Claims on a study's results (`expect:`): each kind on hand-made rows, validation before training,
`study check` exit codes, JUnit / JSON reports, and a broken run caught by studies/ci.yaml's claims."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ticketx import study as S
from ticketx.settings.study import parse_accuracy
from ticketx.study.claims import Claim
from ticketx.study.expect import EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_PASS, exit_code, judge

REPO = Path(__file__).resolve().parents[1]
CI = REPO / "studies" / "ci.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


def _claim(kind: str, threshold: float, arm: str | None = None) -> Claim:
    return Claim("c", kind, arm, threshold, {}, frozenset({("cell", 1)}), (0.1,), "s.yaml:3")


def _row(diffs: list[float] | dict[int, list[float]], arm: str = "random-mask") -> dict:
    """A paired-summary row: per-ticket differences ticket - control (a list: one retrain per ticket)."""
    from ticketx.stats import replicated

    by = diffs if isinstance(diffs, dict) else {i: [d] for i, d in enumerate(diffs)}
    est = replicated(by)
    iv = est.interval()
    return {"model": "m", "source": "a", "search_optimizer": "adam", "target": "b", "transfer_optimizer": "adam",
            "round": 1, "density": 0.1, "control": arm, "tickets": est.tickets, "retrains": est.retrains,
            "margin": iv.mean, "margin_low": iv.low, "margin_high": iv.high, "estimate": est.as_dict()}


# ---- each claim kind passes, fails and is inconclusive on hand-made results ---------------------


def test_beats_passes_above_the_margin_fails_below_and_is_inconclusive_across_it():
    c = _claim("beats", 0.10)
    assert judge([_row([0.30, 0.32, 0.29, 0.31])], c).status == "pass"
    out = judge([_row([0.30, 0.32, 0.29, 0.31])], _claim("beats", 0.40))
    assert out.status == "fail" and out.n == 4 and out.measured.high < 0.40
    out = judge([_row([0.05, -0.02, 0.08, 0.01])], _claim("beats", 0.0))
    assert out.status == "inconclusive" and out.n_needed is not None and out.n_needed > 4
    assert "tickets" in out.message and "a (adam) -> b (adam)" in out.message
    # one pair has no interval: never a pass, however large the margin
    assert judge([_row({0: [0.5]})], _claim("beats", 0.0)).status == "inconclusive"
    # several comparisons: one failing one fails the claim, and it is the one reported
    out = judge([_row([0.30, 0.32, 0.29]), _row([-0.20, -0.22, -0.19])], _claim("beats", 0.0))
    assert out.status == "fail" and out.measured.mean < 0 and "1 of 2 comparisons pass" in out.message


def test_a_claim_about_tickets_from_one_ticket_is_inconclusive_however_clear():
    many_retrains = _row({0: [0.30, 0.31, 0.29, 0.30, 0.32, 0.31]})  # one ticket, six retrains: +30 points
    out = judge([many_retrains], _claim("beats", 0.0))
    assert out.status == "inconclusive" and "at least 2 search seeds" in out.message and out.n == 1


def test_the_claim_level_is_what_the_interval_is_printed_at():
    row = _row({t: [d, d + 0.01] for t, d in enumerate([0.30, 0.32, 0.29])})  # 3 tickets x 2 retrains
    at5 = judge([row], _claim("beats", 0.0), alpha=0.05)
    at1 = judge([row], _claim("beats", 0.0), alpha=0.01)
    assert at5.level == pytest.approx(0.95) and at1.level == pytest.approx(0.99)
    assert at1.measured.low < at5.measured.low and at5.measured.n == 3


def test_holm_levels_step_down_and_stop_at_the_first_claim_that_does_not_pass():
    from ticketx.study.expect import holm_levels

    # sorted: 0.001 (<= 0.05/4), 0.01 (<= 0.05/3), 0.04 (> 0.05/2: stops), 0.03 is ranked third
    assert holm_levels([0.04, 0.001, None, 0.01, 0.03]) == pytest.approx([0.025, 0.0125, None, 0.05 / 3, 0.025])
    assert holm_levels([0.001, 0.002]) == pytest.approx([0.025, 0.05])


def test_matches_within_the_tolerance_outside_it_and_straddling_it():
    c = _claim("matches", 0.01, "dense")
    assert judge([_row([0.001, -0.002, 0.0, 0.002], "dense")], c).status == "pass"
    assert judge([_row([-0.10, -0.12, -0.11, -0.09], "dense")], c).status == "fail"
    assert judge([_row([0.0, -0.02, 0.01, -0.015], "dense")], c).status == "inconclusive"


def test_search_accuracy_one_seed_compared_as_is_several_seeds_by_their_interval():
    rows = [{"model": "m", "source": "a", "search_optimizer": "adam", "round": 0, "test_acc": 0.91}]
    assert judge(rows, _claim("search_accuracy", 0.9)).status == "pass"
    assert judge(rows, _claim("search_accuracy", 0.95)).status == "fail"
    many = [{**rows[0], "test_acc": a} for a in (0.92, 0.93, 0.94)]
    assert judge(many, _claim("search_accuracy", 0.80)).status == "pass"
    assert judge(many, _claim("search_accuracy", 0.99)).status == "fail"
    assert judge(many, _claim("search_accuracy", 0.92)).status == "inconclusive"
    assert judge([], _claim("search_accuracy", 0.5)).status == "inconclusive"  # nothing measured is no pass


def test_exit_codes_and_accuracy_units():
    from ticketx.study.expect import Outcome, Result

    def res(status):
        return Result("c", "beats", "s.yaml:1", "", Outcome(status, None, "", 0, None, ""))

    assert (EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE) == (0, 1, 3)
    assert exit_code([res("pass"), res("pass")]) == 0
    assert exit_code([res("pass"), res("inconclusive")]) == 3
    assert exit_code([res("unfinished")]) == 3
    assert exit_code([res("inconclusive"), res("fail")]) == 1
    assert parse_accuracy(0.8) == parse_accuracy("80%") == pytest.approx(0.8)
    assert parse_accuracy("2pt") == parse_accuracy("2 points") == pytest.approx(0.02)
    with pytest.raises(ValueError, match="write points as '80pt'"):
        parse_accuracy(80)


# ---- the expect block is validated with the rest of the file, before anything trains ------------


def _with_expect(tmp_path: Path, block: str) -> Path:
    text = CI.read_text().split("expect:")[0] + "expect:\n" + block
    path = tmp_path / "ci.yaml"
    path.write_text(text)
    return path


BAD = [
    ("unknown-arm", "  - name: x\n    beats: random-msak\n", "expect[0].beats", "did you mean 'random-mask'?"),
    ("arm-not-trained", "  - name: x\n    beats: random-reinit\n", "expect[0].beats", "does not train 'random-reinit'"),
    ("source", "  - name: x\n    beats: dense\n    sources: ['digits[0-3]']\n", "expect[0].sources[0]",
     "'digits[0-3]' is not a source of this study; did you mean 'digits[0-4]'?"),
    ("target", "  - name: x\n    matches: dense\n    targets: [mnist]\n", "expect[0].targets[0]", "not a target of this study"),
    ("density", "  - name: x\n    beats: random-mask\n    max_density: 0.1\n", "expect[0].max_density",
     "no density of the study is <= 0.1 for lenet_300_100 (round 1: 0.8)"),
    ("round", "  - name: x\n    search_accuracy: 0.8\n    rounds: 3\n", "expect[0].rounds", "round 3 is not one the study searches"),
    ("key", "  - name: x\n    matches: dense\n    withn: 2pt\n", "expect[0].withn", "unknown key; did you mean 'within'?"),
    ("two-kinds", "  - name: x\n    beats: dense\n    matches: dense\n", "expect[0]", "give exactly one of beats, matches, search_accuracy"),
    ("units", "  - name: x\n    search_accuracy: 80\n", "expect[0].search_accuracy", "write points as '80pt'"),
    ("duplicate", "  - name: x\n    search_accuracy: 0.5\n  - name: x\n    search_accuracy: 0.6\n", "expect[1].name", "used twice"),
]


@pytest.mark.parametrize("case, block, key, message", BAD, ids=[b[0] for b in BAD])
def test_a_claim_on_something_the_study_does_not_produce_is_an_error_before_training(cli, tmp_path, monkeypatch, case, block, key, message):
    import ticketx.train

    monkeypatch.setattr(ticketx.train, "train", lambda *a, **k: pytest.fail("trained"))
    path = _with_expect(tmp_path, block)
    code, _, stderr = cli("study", "run", path, "--out", tmp_path / "out")
    assert code == 2, stderr
    line = 1 + path.read_text().splitlines().index("expect:")
    assert f"{path}:" in stderr and f": {key}: " in stderr and message in stderr, stderr
    assert int(stderr.split(f"{path}:")[1].split(":")[0]) > line  # the claim's own line
    assert not (tmp_path / "out").exists()


def test_claims_are_not_part_of_any_cell_key(tmp_path):
    base = S.load_study(CI)
    other = S.load_study(_with_expect(tmp_path, "  - name: y\n    beats: random-mask\n    by: -50pt\n"))
    assert [c.key for c in base.cells] == [c.key for c in other.cells]
    assert [c.name for c in base.claims] == ["searches-learn", "ticket-trains-like-dense"]
    assert other.claims[0].threshold == pytest.approx(-0.5)


# ---- study check on studies/ci.yaml: output, exit codes, JUnit, JSON -------------------------


@pytest.fixture(scope="module")
def ci_out(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ci") / "out"
    S.run_study(S.load_study(CI), out)
    return out


def test_ci_claims_hold_and_the_reports_name_each_claim(cli, ci_out, tmp_path):
    junit, js = tmp_path / "claims.xml", tmp_path / "claims.json"
    code, stdout, stderr = cli("study", "check", CI, "--out", ci_out, "--junit", junit, "--json", js)
    assert code == 0, stderr
    assert "searches-learn" in stderr and "ticket-trains-like-dense" in stderr and "2 pass (exit code 0)" in stderr
    assert "error" not in stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")] == ["searches-learn", "ticket-trains-like-dense"]
    assert "ticket - control" in suite.findall("testcase")[1].find("system-out").text
    data = json.loads(js.read_text())
    assert data["exit_code"] == 0 and [c["status"] for c in data["claims"]] == ["pass", "pass"]
    assert data["claims"][1]["measured"]["n"] == 6 and data["claims"][1]["measured"]["low"] is not None
    # Holm over the 2 claims: the smaller p at 1 - 0.05 / 2, the other at 1 - 0.05
    assert sorted(round(c["level"], 6) for c in data["claims"]) == [0.95, 0.975]
    # the folder alone: the claims as recorded in its study.json
    code, _, stderr = cli("study", "check", ci_out)
    assert code == 0, stderr


def test_a_failing_claim_exits_1_and_an_unfinished_one_3(cli, ci_out, tmp_path):
    path = _with_expect(tmp_path, "  - name: too-high\n    search_accuracy: 99.9%\n"
                                  "  - name: fine\n    matches: dense\n    within: 10pt\n")
    junit = tmp_path / "j.xml"
    code, _, stderr = cli("study", "check", path, "--out", ci_out, "--junit", junit)
    assert code == 1, stderr
    assert "fail too-high" in stderr and "error:" not in stderr
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert cases["too-high"].find("failure") is not None and cases["fine"].find("failure") is None
    assert "test accuracy" in cases["too-high"].find("failure").get("message")

    part = tmp_path / "part"
    shutil.copytree(ci_out, part)
    prov = S.load_provenance(part)
    last = next(c for c in reversed(prov["cells"]) if c["kind"] == "transfer")
    (part / "cells" / last["id"] / "done.json").unlink()
    code, _, stderr = cli("study", "check", CI, "--out", part, "--json", tmp_path / "j.json")
    assert code == 3, stderr
    assert "unfinished" in stderr and "error:" not in stderr
    assert json.loads((tmp_path / "j.json").read_text())["claims"][1]["status"] == "unfinished"


def test_a_study_without_claims_is_a_usage_error(cli, ci_out, tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(CI.read_text().split("expect:")[0])
    code, _, stderr = cli("study", "check", path, "--out", ci_out)
    assert code == 2 and "no claims" in stderr


def test_a_broken_ticket_fails_the_right_claim(cli, tmp_path, monkeypatch):
    """A code change that breaks the ticket (its mask replaced by a 2% random one) fails
    ticket-trains-like-dense, through `study run` itself; the searches' claim still passes."""
    import torch

    import ticketx.transfer
    from ticketx.baselines import Baseline

    def broken(arm, mask):
        gen = torch.Generator().manual_seed(0)
        return {n: m & (torch.rand(m.shape, generator=gen) < 0.02) for n, m in mask.items()}

    monkeypatch.setattr(ticketx.transfer, "TICKET", Baseline("ticket", "ticket", broken))
    junit = tmp_path / "j.xml"
    code, _, stderr = cli("study", "run", CI, "--out", tmp_path / "out", "--no-report", "--junit", junit)
    assert code == 1, stderr
    assert "fail ticket-trains-like-dense" in stderr
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert cases["ticket-trains-like-dense"].find("failure") is not None
    assert cases["searches-learn"].find("failure") is None and cases["searches-learn"].find("skipped") is None


def test_the_markdown_job_summary_of_the_ci_study_parses_and_has_every_claim(cli, ci_out, tmp_path):
    from markdown_it import MarkdownIt

    S.report(ci_out)  # the plots the summary links to
    md = tmp_path / "summary" / "claims.md"
    code, _, stderr = cli("study", "check", CI, "--out", ci_out, "--markdown", md)
    assert code == 0, stderr
    text = md.read_text()
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    tables, table, row = [], None, None
    for t in tokens:  # every table as a list of rows of cell texts
        if t.type == "table_open":
            table = []
        elif t.type == "tr_open":
            row = []
        elif t.type == "inline" and row is not None:
            row.append(t.content)
        elif t.type == "tr_close":
            table.append(row)
            row = None
        elif t.type == "table_close":
            tables.append(table)
    claims, summary = tables
    assert claims[0] == ["claim", "what", "measured", "level", "threshold", "n", "status"]
    names = [c.name for c in S.load_study(CI).claims]
    assert [r[0].strip("`") for r in claims[1:]] == names == ["searches-learn", "ticket-trains-like-dense"]
    assert all(r[-1] == "✅ pass" for r in claims[1:])
    # the claimed comparison (matches dense at 80%): one row per source, the dense control
    assert [(r[1], r[2]) for r in summary[1:]] == [("dense", "6 × 2"), ("dense", "6 × 2")]
    assert all("80.00%" in r[0] for r in summary[1:])
    links = [t for t in tokens if t.type == "inline" and "](" in t.content]
    targets = [c.attrs["href"] for t in links for c in t.children if c.type == "link_open"]
    assert sorted(Path(x).name for x in targets) == sorted(p.name for p in (ci_out / "plots").glob("*.png"))
    assert all((md.parent / x).resolve().exists() for x in targets)  # relative to the Markdown file
