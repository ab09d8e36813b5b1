"""Claims on a study's results (`expect:` in the study file): pass, fail or inconclusive, for CI.

A claim kind is one registry entry: a pure function (rows, claim) -> Outcome. Transfer claims
(`beats`, `matches`) read the paired summary (`results.paired_summary`: one row per comparison
and control, with the 95% interval of ticket - control); `search_accuracy` reads the
search rounds. A claim over several comparisons (several sources, densities) passes when every
one passes; the comparison that decides (the worst) is the one reported.

Exit codes of `ticketx study check` (and `study run` with claims): 0 every claim passes, 1 a
claim fails, 3 none fails but one is inconclusive (its interval straddles the threshold: more
seeds needed) or its cells are not finished.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ticketx.registry import Registry
from ticketx.study.axes import factors, search_axes
from ticketx.study.claims import Claim
from ticketx.stats import Interval, beats, interval, matches, n_needed, t975

EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE = 0, 1, 3
_RANK = {"pass": 0, "inconclusive": 1, "unfinished": 2, "fail": 3}


@dataclass
class Outcome:
    """The judgement of one claim: status, the deciding measurement with its interval, and why."""

    status: str  # pass | fail | inconclusive | unfinished
    measured: Optional[Interval]
    threshold: str  # e.g. '> +0.00 pt', 'within ±1.00 pt', '>= 80.00%'
    n: int
    n_needed: Optional[int]  # inconclusive: the n at which the interval would clear the threshold
    message: str


@dataclass
class Result:
    """A claim with its outcome (what `study check` prints and writes)."""

    name: str
    kind: str
    where: str
    description: str
    outcome: Outcome

    def as_dict(self) -> dict[str, Any]:
        o = asdict(self.outcome)
        o["measured"] = self.outcome.measured.as_dict() if self.outcome.measured else None
        return {"name": self.name, "kind": self.kind, "where": self.where, "description": self.description, **o}


ClaimFn = Callable[[list[dict[str, Any]], Claim], Outcome]
CLAIMS: Registry[ClaimFn] = Registry("claim kind")


def _pt(x: float, sign: bool = True) -> str:
    return f"{100 * x:{'+' if sign else ''}.2f}"


def _margin(row: dict[str, Any]) -> Interval:
    """The paired interval of a summary row (its sd recovered from the half-width, for n_needed)."""
    n, low, high = int(row["n"]), row.get("margin_low"), row.get("margin_high")
    if n < 2 or low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return Interval(row["margin"], None, None, n, None)
    sd = (high - low) / 2 * math.sqrt(n) / t975(n - 1)
    return Interval(row["margin"], low, high, n, sd)


def _where(row: dict[str, Any]) -> str:
    """A comparison in words: its factors' values, then its round and density."""
    words = " ".join(p for a in factors() if a.columns[0] in row and (p := a.phrase(row[a.columns[0]])))
    return f"{words}, round {row['round']} ({100 * row['density']:.2f}%)"


def _worst(outcomes: list[Outcome], threshold: str) -> Outcome:
    if not outcomes:
        return Outcome("inconclusive", None, threshold, 0, None, "no finished comparison matches the claim")
    worst = max(outcomes, key=lambda o: (_RANK[o.status], -(o.n_needed or 0)))
    passed = sum(o.status == "pass" for o in outcomes)
    if len(outcomes) > 1:
        worst.message += f" ({passed} of {len(outcomes)} comparisons pass; the worst shown)"
    return worst


def _judge(diff: Interval, verdict: str, want: str, threshold: float, threshold_text: str, where: str) -> Outcome:
    status = "pass" if verdict == want else ("inconclusive" if verdict == "inconclusive" else "fail")
    need = None
    if status == "inconclusive" and diff.sd is not None:
        # matches: the interval must clear the nearer edge of ±tolerance
        edge = threshold if want != "matches" else (threshold if diff.mean >= 0 else -threshold)
        need = n_needed(diff, edge)
    text = f"{where}: ticket - control {diff.text(sign=True)} pt (n = {diff.n}) vs {threshold_text}"
    if diff.n < 2:
        text += "; one pair has no interval: give at least 2 seeds"
    elif need:
        text += f"; about n = {need} would decide it if the mean and sd hold"
    return Outcome(status, diff, threshold_text, diff.n, need, text)


@CLAIMS.register("beats")
def beats_claim(rows: list[dict[str, Any]], claim: Claim) -> Outcome:
    """Pass when the paired interval of ticket - arm lies above the margin; fail when below it."""
    text = f"> {_pt(claim.threshold)} pt"
    return _worst([_judge(d, beats(d, claim.threshold), "above", claim.threshold, text, _where(r))
                   for r in rows for d in [_margin(r)]], text)


@CLAIMS.register("matches")
def matches_claim(rows: list[dict[str, Any]], claim: Claim) -> Outcome:
    """Pass when the paired interval of ticket - arm lies within ±tolerance; fail when wholly outside."""
    text = f"within ±{_pt(claim.threshold, False)} pt"
    return _worst([_judge(d, matches(d, claim.threshold), "matches", claim.threshold, text, _where(r))
                   for r in rows for d in [_margin(r)]], text)


@CLAIMS.register("search_accuracy")
def search_accuracy_claim(rows: list[dict[str, Any]], claim: Claim) -> Outcome:
    """The search's test accuracy at a round, over its seeds, is at least the threshold.

    With several search seeds the 95% interval decides (pass: lower end >= threshold; fail:
    upper end below; else inconclusive); one seed is one measurement, compared as it is.
    """
    text = f">= {_pt(claim.threshold, False)}%"
    groups: dict[tuple[Any, ...], list[float]] = {}
    axes = factors("search")
    for r in rows:
        groups.setdefault((*(r.get(a.columns[0]) for a in axes), r["round"]), []).append(float(r["test_acc"]))
    outcomes = []
    for (*values, round_), accs in groups.items():
        acc = interval(accs)
        where = f"search {' '.join(p for a, v in zip(axes, values) if (p := a.phrase(v)))}, round {round_}"
        if acc.low is None or acc.high is None:
            status = "pass" if acc.mean >= claim.threshold else "fail"
            need = None
        else:
            status = "pass" if acc.low >= claim.threshold else ("fail" if acc.high < claim.threshold else "inconclusive")
            need = n_needed(acc, claim.threshold) if status == "inconclusive" else None
        msg = f"{where}: test accuracy {acc.text()}% (n = {acc.n}) vs {text}"
        outcomes.append(Outcome(status, acc, text, acc.n, need, msg))
    return _worst(outcomes, text)


def describe(claim: Claim) -> str:
    """One line in words: 'ticket beats random mask by > +0.00 pt at 1.39%, 2.55%'."""
    from ticketx.baselines import label

    at = ", ".join(f"{100 * d:.2f}%" for d in claim.densities)
    scope = "".join(f" ({key}: {', '.join(values)})" for key, values in claim.filters.items())
    if claim.kind == "search_accuracy":
        return f"search{scope} round {', '.join(map(str, claim.rounds))}: test accuracy >= {100 * claim.threshold:.2f}%"
    arm = label(claim.arm) if claim.arm != "own-ticket" else "own ticket"
    if claim.kind == "beats":
        return f"ticket{scope} beats {arm} by > {_pt(claim.threshold)} pt at {at}"
    return f"ticket{scope} matches {arm} within ±{_pt(claim.threshold, False)} pt at {at}"


def _selected(out: Path, prov: dict[str, Any], claim: Claim) -> tuple[set[tuple[Any, ...]], int]:
    """(comparison keys the claim covers among finished cells, its unfinished cells)."""
    from ticketx import store
    from ticketx.study.results import comparison_key, search_key
    from ticketx.study.runner import cell_dir, is_done

    cells = {c["id"]: c for c in prov["cells"]}
    keys: set[tuple[Any, ...]] = set()
    unfinished = 0
    for cid in sorted({cid for cid, _ in claim.covers}):
        c = cells.get(cid)
        if c is None:
            continue
        if not is_done(out, c):
            unfinished += 1
            continue
        rounds = [r for i, r in claim.covers if i == cid]
        if claim.kind == "search_accuracy":
            keys.update(search_key(c["info"], r) for r in rounds)
            continue
        if None in rounds:  # a density point: the round the ticket has closest to it
            rounds = [r["round"] for r in store.read_json(cell_dir(out, c) / "result.json")["summary"]]
        keys.update(comparison_key(c["info"], r) for r in rounds)
    return keys, unfinished


def evaluate(out: str | Path, claims: list[Claim], prov: Optional[dict[str, Any]] = None) -> list[Result]:
    """Judge every claim on the finished cells of `<out>` (default provenance: `<out>/study.json`)."""
    from ticketx.study.results import collect, comparison_key, load_provenance, paired_summary, search_key

    out = Path(out)
    prov = prov or load_provenance(out)
    summary = paired_summary(out, prov) if any(c.kind != "search_accuracy" for c in claims) else []
    searches = [r for r in collect(out, prov)[1] if r["kind"] == "search"] if any(
        c.kind == "search_accuracy" for c in claims) else []
    results = []
    for claim in claims:
        keys, unfinished = _selected(out, prov, claim)
        if claim.kind == "search_accuracy":
            rows = [r for r in searches if search_key(r, r["round"]) in keys]
        else:
            rows = [r for r in summary if r["control"] == claim.arm and comparison_key(r, r["round"]) in keys]
        outcome = CLAIMS[claim.kind](rows, claim)
        if unfinished and outcome.status != "fail":
            outcome.status = "unfinished"
            outcome.message = f"{unfinished} of its cells not finished; so far: {outcome.message}"
        elif unfinished:
            outcome.message += f" ({unfinished} of its cells not finished)"
        results.append(Result(claim.name, claim.kind, claim.where, describe(claim), outcome))
    return results


def exit_code(results: list[Result]) -> int:
    """0 every claim passes, 1 one fails, 3 none fails but one is inconclusive or unfinished."""
    statuses = {r.outcome.status for r in results}
    if "fail" in statuses:
        return EXIT_FAIL
    if statuses - {"pass"}:
        return EXIT_INCONCLUSIVE
    return EXIT_PASS


def table(results: list[Result], title: str) -> Any:
    """A Rich table: claim, measured value with its interval, threshold, status (with the n needed)."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title, title_justify="left", caption="measured: mean [95% t interval]; transfer claims in points of "
              "ticket - control, paired by seed; the worst comparison of each claim is shown", caption_justify="left")
    for col in ("claim", "what", "measured", "threshold", "n", "status"):
        t.add_column(col, justify="right" if col in ("measured", "n") else "left")
    style = {"pass": "green", "fail": "bold red", "inconclusive": "yellow", "unfinished": "yellow"}
    for r in results:
        o = r.outcome
        measured = "-" if o.measured is None else o.measured.text(sign=r.kind != "search_accuracy")
        status = o.status + (f" (n ≈ {o.n_needed} needed)" if o.n_needed else "")
        t.add_row(escape(r.name), escape(r.description), measured, escape(o.threshold), str(o.n),
                  f"[{style[o.status]}]{escape(status)}[/]")
    return t


def junit_xml(results: list[Result], suite: str) -> str:
    """JUnit XML: one test case per claim; fail -> <failure>, inconclusive / unfinished -> <skipped>."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites")
    s = ET.SubElement(root, "testsuite", name=suite, tests=str(len(results)),
                      failures=str(sum(r.outcome.status == "fail" for r in results)), errors="0",
                      skipped=str(sum(r.outcome.status in ("inconclusive", "unfinished") for r in results)))
    for r in results:
        case = ET.SubElement(s, "testcase", name=r.name, classname=f"{suite}.{r.kind}", file=r.where.rsplit(":", 1)[0])
        o = r.outcome
        message = f"{o.status}: {o.message}"
        if o.status == "fail":
            ET.SubElement(case, "failure", message=message, type=r.kind).text = f"{r.description}\n{o.message}"
        elif o.status != "pass":
            ET.SubElement(case, "skipped", message=message)
        ET.SubElement(case, "system-out").text = f"{r.description}\n{o.message}"
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_reports(results: list[Result], suite: str, junit: Optional[Path] = None, json_path: Optional[Path] = None) -> None:
    """Write the JUnit XML and / or JSON verdicts atomically."""
    import json

    from ticketx import store

    if junit is not None:
        store.write_text(Path(junit), junit_xml(results, suite))
    if json_path is not None:
        store.write_text(Path(json_path), json.dumps({"study": suite, "exit_code": exit_code(results),
                                                      "claims": [r.as_dict() for r in results]}, indent=2) + "\n")
