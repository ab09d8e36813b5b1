"""Claims on a study's results (`expect:` in the study file): pass, fail or inconclusive, for CI.

**How claims are judged.** The claims of a study file are written before its results exist:
they are its pre-registered, confirmatory hypotheses, judged as one family apart from the
exploratory summary (whose many verdicts are adjusted by Benjamini-Hochberg, ticketx.stats).

- Unit: the ticket. A transfer claim is about tickets from its source, so each comparison it
  covers is the two-stage estimate over search seeds (df = tickets - 1). A comparison with one
  ticket cannot support a claim about tickets: the claim is inconclusive ("give at least 2
  search seeds"), never a pass.
- Within a claim that covers several comparisons (sources, densities), every one must pass: an
  intersection-union test, which needs no adjustment; its p-value is the largest of theirs.
- Across claims, Holm's step-down keeps the chance that any passing claim is false at 5%
  (family-wise: a CI gate must not pass by luck, and a study has few claims). A claim is judged
  on the interval at its Holm level, and that interval is the one printed.
- pass: the claim's interval clears its threshold (beats: lies above the margin; matches: lies
  within +-tolerance; search_accuracy: lies above the accuracy). fail: the interval shows the
  opposite (wholly below the margin; wholly outside +-tolerance). Otherwise inconclusive, with
  the number of tickets that would decide it if the mean and sd held. A search_accuracy claim
  over one search seed compares the one measurement as it is (outside the family).

A claim kind is one registry entry. Exit codes of `ticketx study check` (and `study run` with
claims): 0 every claim passes, 1 a claim fails, 3 none fails but one is inconclusive or its
cells are not finished.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ticketx.registry import Registry
from ticketx.study.axes import factors
from ticketx.study.claims import Claim
from ticketx.stats import CONFIDENCE, Estimate, Interval, n_needed, replicated

EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE = 0, 1, 3
ALPHA = 1 - CONFIDENCE  # the family-wise error rate of a study's claims (Holm)
_RANK = {"pass": 0, "inconclusive": 1, "unfinished": 2, "fail": 3}


@dataclass
class Outcome:
    """The judgement of one claim: status, the deciding measurement with its interval, and why."""

    status: str  # pass | fail | inconclusive | unfinished
    measured: Optional[Interval]
    threshold: str  # e.g. '> +0.00 pt', 'within ±1.00 pt', '>= 80.00%'
    n: int  # tickets (search seeds) of the deciding comparison
    n_needed: Optional[int]  # inconclusive: the tickets at which the interval would clear the threshold
    message: str
    p: Optional[float] = None  # the claim's p-value (intersection-union: the largest of its comparisons')
    level: Optional[float] = None  # the confidence level it was judged at (Holm)


@dataclass
class Result:
    """A claim with its outcome (what `study check` prints and writes)."""

    name: str
    kind: str
    where: str
    description: str
    outcome: Outcome
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)  # the summary rows it was judged on

    def as_dict(self) -> dict[str, Any]:
        o = asdict(self.outcome)
        o["measured"] = self.outcome.measured.as_dict() if self.outcome.measured else None
        return {"name": self.name, "kind": self.kind, "where": self.where, "description": self.description, **o}


@dataclass(frozen=True)
class Kind:
    """A claim kind: what it measures in its rows, its p-value, and what its interval shows.

    `measure(rows, claim)` -> [(where in words, estimate)]; `p(estimate, claim)` on the two-sided
    scale (<= alpha exactly when the 1 - alpha interval clears the threshold); `shows(interval,
    claim)` -> 'pass', 'fail' or None; `threshold(claim)` in words; `edge(estimate, claim)` the
    value the interval must clear (for the tickets needed).
    """

    measure: Callable[[list[dict[str, Any]], Claim], list[tuple[str, Estimate]]]
    p: Callable[[Estimate, Claim], float]
    shows: Callable[[Interval, Claim], Optional[str]]
    threshold: Callable[[Claim], str]
    edge: Callable[[Estimate, Claim], float]
    about_tickets: bool = True  # one ticket cannot support it


CLAIMS: Registry[Kind] = Registry("claim kind")


def _pt(x: float, sign: bool = True) -> str:
    return f"{100 * x:{'+' if sign else ''}.2f}"


def estimate_of(row: dict[str, Any]) -> Estimate:
    """A summary row's two-stage estimate (results.paired_summary keeps it beside the CSV columns)."""
    return Estimate(**row["estimate"])


def _where(row: dict[str, Any]) -> str:
    """A comparison in words: its factors' values, then its round and density."""
    words = " ".join(p for a in factors() if a.columns[0] in row and (p := a.phrase(row[a.columns[0]])))
    return f"{words}, round {row['round']} ({100 * row['density']:.2f}%)"


def _margins(rows: list[dict[str, Any]], claim: Claim) -> list[tuple[str, Estimate]]:
    return [(_where(r), estimate_of(r)) for r in rows]


CLAIMS.add("beats", Kind(
    measure=_margins, p=lambda est, c: est.p_above(c.threshold),
    shows=lambda iv, c: "pass" if iv.low > c.threshold else ("fail" if iv.high < c.threshold else None),
    threshold=lambda c: f"> {_pt(c.threshold)} pt", edge=lambda est, c: c.threshold))

CLAIMS.add("matches", Kind(
    measure=_margins, p=lambda est, c: est.p_equivalence(c.threshold),
    shows=lambda iv, c: "pass" if -c.threshold < iv.low and iv.high < c.threshold else (
        "fail" if iv.low > c.threshold or iv.high < -c.threshold else None),
    threshold=lambda c: f"within ±{_pt(c.threshold, False)} pt",
    edge=lambda est, c: c.threshold if est.mean >= 0 else -c.threshold))


def _searches(rows: list[dict[str, Any]], claim: Claim) -> list[tuple[str, Estimate]]:
    """Each search comparison's test accuracy over its search seeds (each seed one ticket)."""
    axes = factors("search")
    groups: dict[tuple[Any, ...], list[float]] = {}
    for r in rows:
        groups.setdefault((*(r.get(a.columns[0]) for a in axes), r["round"]), []).append(float(r["test_acc"]))
    out = []
    for (*values, round_), accs in groups.items():
        where = f"search {' '.join(p for a, v in zip(axes, values) if (p := a.phrase(v)))}, round {round_}"
        out.append((where, replicated({i: [a] for i, a in enumerate(accs)})))
    return out


CLAIMS.add("search_accuracy", Kind(
    measure=_searches, p=lambda est, c: est.p_above(c.threshold),
    shows=lambda iv, c: "pass" if iv.low >= c.threshold else ("fail" if iv.high < c.threshold else None),
    threshold=lambda c: f">= {_pt(c.threshold, False)}%", edge=lambda est, c: c.threshold, about_tickets=False))


@dataclass
class _Pending:
    """A claim measured but not yet judged: its comparisons and its p-value (None: outside the family)."""

    claim: Claim
    measured: list[tuple[str, Estimate]]
    p: Optional[float]
    why_not: str = ""  # inconclusive whatever the level (one ticket, nothing measured)


def _pending(rows: list[dict[str, Any]], claim: Claim) -> _Pending:
    kind = CLAIMS[claim.kind]
    measured = kind.measure(rows, claim)
    if not measured:
        return _Pending(claim, measured, None, "no finished comparison matches the claim")
    if kind.about_tickets and any(est.tickets < 2 for _, est in measured):
        return _Pending(claim, measured, None, "one ticket per comparison: a claim about tickets from a source needs "
                                               "at least 2 search seeds (its verdict is about that ticket only)")
    if not kind.about_tickets and all(est.tickets < 2 for _, est in measured):
        return _Pending(claim, measured, None)  # one search seed: compared as measured
    return _Pending(claim, measured, max(kind.p(est, claim) for _, est in measured))


def holm_levels(p: list[Optional[float]], alpha: float = ALPHA) -> list[Optional[float]]:
    """Holm's step-down: the significance level each claim is judged at (None: outside the family).

    Sorted by p, the j-th of m claims is judged at alpha / (m - j + 1) while every earlier one
    passed; from the first that does not, all later ones are judged at that claim's level.
    """
    ranked = sorted((i for i, v in enumerate(p) if v is not None), key=lambda i: p[i])  # type: ignore[arg-type,return-value]
    m = len(ranked)
    out: list[Optional[float]] = [None] * len(p)
    stopped: Optional[float] = None
    for j, i in enumerate(ranked):
        level = stopped if stopped is not None else alpha / (m - j)
        if stopped is None and p[i] > level:  # type: ignore[operator]
            stopped = level
        out[i] = level
    return out


def judge(rows: list[dict[str, Any]], claim: Claim, alpha: float = ALPHA) -> Outcome:
    """One claim on its rows, judged alone at `alpha` (in a study: at its Holm level, `evaluate`)."""
    pend = _pending(rows, claim)
    return _decide(pend, alpha if pend.p is not None else None)


def _decide(pend: _Pending, alpha: Optional[float]) -> Outcome:
    claim, kind = pend.claim, CLAIMS[pend.claim.kind]
    text = kind.threshold(claim)
    if not pend.measured:
        return Outcome("inconclusive", None, text, 0, None, pend.why_not)
    level = 1 - (alpha if alpha is not None else ALPHA)
    judged = []
    for where, est in pend.measured:
        iv = est.interval(level)
        if est.tickets < 2 and not kind.about_tickets:  # one search: the measurement as it is
            status = "pass" if est.mean >= claim.threshold else "fail"
            iv = est.interval()
        elif pend.why_not or iv.low is None:
            status = "inconclusive"
        else:
            status = kind.shows(iv, claim) or "inconclusive"
        need = n_needed(est, kind.edge(est, claim), 1 - level) if status == "inconclusive" and est.tickets >= 2 else None
        what = "ticket - control" if kind.about_tickets else "test accuracy"
        msg = (f"{where}: {what} {iv.text(sign=kind.about_tickets)}{' pt' if kind.about_tickets else '%'} "
               f"({est.tickets} ticket(s) × {est.retrains / max(1, est.tickets):g} retrains"
               + (f", {100 * level:.2f}% interval" if iv.low is not None else "") + f") vs {text}")
        if pend.why_not:
            msg += f"; {pend.why_not}"
        elif need:
            msg += f"; about {need} tickets would decide it if the mean and sd hold"
        judged.append(Outcome(status, iv, text, est.tickets, need, msg, pend.p, level))
    worst = max(judged, key=lambda o: (_RANK[o.status], -(o.n_needed or 0)))
    if len(judged) > 1:
        passed = sum(o.status == "pass" for o in judged)
        worst.message += f" ({passed} of {len(judged)} comparisons pass; the worst shown)"
    return worst


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
    pending, unfinished, judged_on = [], [], []
    for claim in claims:
        keys, left = _selected(out, prov, claim)
        if claim.kind == "search_accuracy":
            rows = [r for r in searches if search_key(r, r["round"]) in keys]
        else:
            rows = [r for r in summary if r["control"] == claim.arm and comparison_key(r, r["round"]) in keys]
        pending.append(_pending(rows, claim))
        unfinished.append(left)
        judged_on.append(rows if claim.kind != "search_accuracy" else [])
    levels = holm_levels([p.p for p in pending])
    results = []
    for pend, alpha, left, rows in zip(pending, levels, unfinished, judged_on):
        outcome = _decide(pend, alpha)
        if left and outcome.status != "fail":
            outcome.status = "unfinished"
            outcome.message = f"{left} of its cells not finished; so far: {outcome.message}"
        elif left:
            outcome.message += f" ({left} of its cells not finished)"
        results.append(Result(pend.claim.name, pend.claim.kind, pend.claim.where, describe(pend.claim), outcome, rows))
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

    t = Table(title=title, title_justify="left", caption=escape("measured: mean [t interval over tickets at the claim's Holm "
              "level]; transfer claims in points of ticket - control, paired by transfer seed within each ticket; the "
              "worst comparison of each claim is shown; n: tickets (search seeds)"), caption_justify="left")
    for col in ("claim", "what", "measured", "level", "threshold", "n", "status"):
        t.add_column(col, justify="right" if col in ("measured", "n") else "left")
    style = {"pass": "green", "fail": "bold red", "inconclusive": "yellow", "unfinished": "yellow"}
    for r in results:
        o = r.outcome
        measured = "-" if o.measured is None else o.measured.text(sign=r.kind != "search_accuracy")
        status = o.status + (f" (≈ {o.n_needed} tickets needed)" if o.n_needed else "")
        level = "-" if o.level is None else f"{100 * o.level:.2f}%"
        t.add_row(escape(r.name), escape(r.description), measured, level, escape(o.threshold), str(o.n),
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


def write_reports(results: list[Result], suite: str, junit: Optional[Path] = None, json_path: Optional[Path] = None,
                  markdown_path: Optional[Path] = None, *, plots: Sequence[Path] = (), notes: Sequence[str] = ()) -> None:
    """Write the JUnit XML, JSON verdicts and / or Markdown job summary atomically."""
    import json

    from ticketx import store

    if markdown_path is not None:
        md = Path(markdown_path)
        store.write_text(md, markdown(results, suite, plots=plots, base=md.resolve().parent, notes=notes))
    if junit is not None:
        store.write_text(Path(junit), junit_xml(results, suite))
    if json_path is not None:
        store.write_text(Path(json_path), json.dumps({"study": suite, "exit_code": exit_code(results),
                                                      "claims": [r.as_dict() for r in results]}, indent=2) + "\n")


# ---- GitHub-flavoured Markdown: a CI job summary ($GITHUB_STEP_SUMMARY) --------------------------

STATUS_MARK = {"pass": "✅ pass", "fail": "❌ fail", "inconclusive": "⚠️ inconclusive", "unfinished": "⏳ unfinished"}


def _cell(text: Any) -> str:
    """A table cell: one line, pipes escaped (GFM)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]], right: tuple[str, ...] = ()) -> list[str]:
    align = ["---:" if h in right else ":---" for h in header]
    return [_row(header), "| " + " | ".join(align) + " |", *(_row(r) for r in rows)]


def markdown(results: list[Result], suite: str, *, plots: Sequence[Path] = (), base: Optional[Path] = None,
             notes: Sequence[str] = ()) -> str:
    """The claims table, the paired summary at the claimed densities and links to the plots, as
    GitHub-flavoured Markdown (for a CI job summary). Plot links are relative to `base` (the
    folder of the Markdown file) when given; `notes` (e.g. claims changed after the results
    existed) are printed first."""
    import os

    from ticketx.baselines import label

    code = exit_code(results)
    counts = {k: sum(r.outcome.status == k for r in results) for k in _RANK}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no claims"
    out = [f"## ticketx study `{suite}`: {len(results)} claims, {summary} (exit code {code})", ""]
    for note in notes:
        out += [f"> [!WARNING]\n> {_cell(note)}", ""]
    if results:
        out += ["### Claims", ""]
        rows = []
        for r in results:
            o = r.outcome
            measured = "-" if o.measured is None else o.measured.text(sign=r.kind != "search_accuracy")
            need = f" (≈ {o.n_needed} tickets needed)" if o.n_needed else ""
            rows.append([f"`{r.name}`", r.description, measured, "-" if o.level is None else f"{100 * o.level:.2f}%",
                         o.threshold, o.n, STATUS_MARK[o.status] + need])
        out += _table(["claim", "what", "measured", "level", "threshold", "n", "status"], rows, right=("measured", "n"))
        out += ["", "measured: mean [t interval over tickets at the claim's Holm level]; transfer claims in points of "
                    "ticket - control, paired by transfer seed within each ticket; n: tickets (search seeds).", ""]
        for r in results:
            if r.outcome.status != "pass":
                out.append(f"- **{_cell(r.name)}** ({STATUS_MARK[r.outcome.status]}, `{_cell(r.where)}`): {_cell(r.outcome.message)}")
        if any(r.outcome.status != "pass" for r in results):
            out.append("")
    seen: set[tuple[Any, ...]] = set()
    compared = []
    for r in results:
        for row in r.rows:
            key = (_where(row), row["control"])
            if key not in seen:
                seen.add(key)
                compared.append(row)
    if compared:
        out += ["### Summary at the claimed densities", ""]
        rows = []
        for row in compared:
            margin = Interval(row["margin"], row.get("margin_low"), row.get("margin_high"), row["tickets"], None)
            rows.append([_where(row), label(row["control"]), f"{row['tickets']} × {row['retrains'] / max(1, row['tickets']):g}",
                         f"{100 * row['ticket_acc']:.2f}", f"{100 * row['control_acc']:.2f}", margin.text(sign=True),
                         row.get("verdict", "")])
        out += _table(["comparison", "control", "tickets × retrains", "ticket %", "control %", "margin (pt)",
                       "summary verdict"], rows, right=("ticket %", "control %", "margin (pt)"))
        tolerance = next((row["tolerance"] for row in compared if row.get("tolerance") is not None), None)
        out += ["", "margin: ticket - control in points, paired, with its interval adjusted over every comparison of the "
                    "summary (Benjamini-Hochberg), as in summary.csv; summary verdict: the summary's own"
                    + (f", at ±{_pt(tolerance, False)} pt" if tolerance is not None else "")
                    + " (the claims above are judged apart, at their own thresholds).", ""]
    if plots:
        out += ["### Plots", ""]
        for p in plots:
            link = Path(os.path.relpath(p, base)).as_posix() if base is not None else Path(p).as_posix()
            out.append(f"- [{Path(p).name}]({link})")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
