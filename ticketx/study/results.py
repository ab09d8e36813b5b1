"""Study results: one tidy row per trained network from the finished cells; the paired summary; CSV, tables, plots.

Columns, grouping and order come from the study axes' declarations (`ticketx.study.axes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ticketx.errors import UsageError
from ticketx.study.axes import factors, search_axes, transfer_axes, with_role
from ticketx.study.axes.base import all_columns, factor_columns
from ticketx.study.load import load_study
from ticketx.study.runner import STUDY_FORMAT, STUDY_VERSION, cell_dir, is_done, provenance


def columns() -> list[str]:
    """results.csv: one row per trained network; the axes' columns come from their declarations."""
    return ["study", "kind", *all_columns(), "round", "density", "weights", "arm", "test_acc", "train_acc", "memorised",
            "run_id", "cell", "versions"]


def point_columns() -> list[str]:
    """The point axis's own columns (a weights point's asked count): comparisons at them are kept apart."""
    return [c for a in with_role("x") for c in a.columns]


def is_point_row(row: dict[str, Any]) -> bool:
    """Whether a summary row is a comparison at a point the point axis names by its own column (a weights
    point), not at a round or density."""
    return any(row.get(c) not in (None, "") for c in point_columns())


# How well each network fits its training split (train.measure_fit): train accuracy for every run,
# memorisation (the share of the flipped labels it fits) for runs with label noise; '' where not measured
# (runs trained before these were recorded, runs without noise).
FIT_COLUMNS = ("train_acc", "memorised")


def _measured(record: dict[str, Any], key: str) -> Any:
    value = record.get(key)
    return "" if value is None else value


def _versions(v: dict[str, Any]) -> str:
    return " ".join(f"{k}={v[k]}" for k in sorted(v))


def comparison_key(columns: dict[str, Any], round_: int) -> tuple[Any, ...]:
    """What identifies one comparison (a summary row, before the control): every factor axis's
    columns and the round; the replication axes (search seed, transfer seed) are what it is
    summarised over."""
    return (*(columns.get(c, "") for c in factor_columns()), *(columns.get(c, "") for c in point_columns()), round_)


def search_key(columns: dict[str, Any], round_: int) -> tuple[Any, ...]:
    """What identifies one search comparison (a claim on search accuracy): the search factors and the round."""
    return (*(columns.get(c, "") for a in factors("search") for c in a.columns), round_)


def load_provenance(out: Path) -> dict[str, Any]:
    from ticketx import store

    path = out / "study.json"
    if not path.exists():
        raise UsageError(f"{out} holds no study (no study.json)", "run it first: ticketx study run STUDY.yaml")
    prov = store.read_json(path)
    if not isinstance(prov, dict) or prov.get("format") != STUDY_FORMAT:
        raise UsageError(f"{path} is not a ticketx study record")
    if prov.get("format_version", 0) > STUDY_VERSION:
        raise UsageError(f"{path} was written by a newer ticketx (study format {prov['format_version']})", "upgrade ticketx")
    if prov.get("format_version", 0) == 2:
        # Version 2 repeated each cell's configuration; today's record names a search's model instead.
        for c in prov["cells"]:
            config = c.pop("config", None) or {}
            if c["kind"] == "search":
                c["model"] = config["find"]["model"]  # not an axis: the architecture the search built
        prov["format_version"] = STUDY_VERSION
    if prov.get("format_version", 0) < STUDY_VERSION:
        # An older record describes its cells in older words: expand the study file it recorded
        # again (the same cells, folders and keys) and describe them as today.
        study = load_study(prov.get("file") or "study.yaml", text=prov["text"], overrides=prov.get("overrides") or [])
        prov = {**provenance(study), "created": prov.get("created"), "updated": prov.get("updated")}
    return prov


def _search_row(info: dict[str, Any]) -> dict[str, Any]:
    """A search cell's axis columns (its transfer-axis columns as a search's: its own data set)."""
    row: dict[str, Any] = {}
    for a in search_axes():
        row.update(a.row(info))
    for a in transfer_axes():
        row.update(a.search_row(row))
    return row


def collect(out: str | Path, prov: Optional[dict[str, Any]] = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(provenance, rows): one row per trained network in the finished cells of `<out>`.

    `prov` (default: `<out>/study.json`, the last run) says which cells belong to the study.
    """
    from ticketx import store

    out = Path(out)
    prov = prov or load_provenance(out)
    name = prov["name"]
    cells = {c["id"]: c for c in prov["cells"]}
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for c in prov["cells"]:
        if not is_done(out, c):
            continue
        here = cell_dir(out, c)
        done = store.read_json(here / "done.json")
        versions = _versions(done.get("versions", {}))
        info = c["info"]
        if c["kind"] == "search":
            for r in done["summary"]:
                rows.append({"study": name, "kind": "search", **_search_row(info), "round": r["round"],
                             "density": r["density"], "weights": _measured(r, "weights"), "arm": "search", "test_acc": r["test_acc"],
                             **{k: _measured(r, k) for k in FIT_COLUMNS},
                             "run_id": f"{c['id']}/round_{r['round']:02d}", "cell": c["id"], "versions": versions})
            continue
        if c["kind"] != "transfer":  # stability cells train no network to compare: stability.csv
            continue
        result = store.read_json(here / "result.json")
        own = cells[c["own_ticket"]]["info"] if c.get("own_ticket") in cells else None
        base = {col: info.get(col, "") for col in all_columns()}
        for run in result["runs"]:
            rid = f"{run['label']}-r{run['round']:02d}-s{run['seed']}-{run['key']}"  # not an axis: the run's folder
            if rid in seen:  # the own ticket's networks are shared by the cells of every source
                continue
            seen.add(rid)
            arm = run["label"]
            row = dict(base)
            if arm == "own-ticket":
                assert own is not None
                for a in search_axes():  # the own ticket's search, not the source ticket's
                    row.update(a.row(own))
            if arm == "ticket" and info.get("own_of_itself"):
                arm = "own-ticket"  # a source that is also a target is that target's own ticket
            rows.append({"study": name, "kind": "transfer", **row, "round": run["round"], "density": run["density"],
                         "weights": _measured(run, "weights"), "arm": arm, "test_acc": run["test_acc"], **{k: _measured(run, k) for k in FIT_COLUMNS}, "run_id": rid, "cell": c["id"], "versions": versions})
    return prov, rows


def histories(out: str | Path, prov: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """Every evaluation in the training histories of the searches' networks (every round) and of the
    transferred tickets (the ticket arm): one row per (network, evaluation) with its axis columns, round,
    density, epoch and test accuracy. The test accuracy a history records is measured every
    `eval_every` and never chooses anything (ticketx.train.EvalHook)."""
    from ticketx import store
    from ticketx import ticket as ticketfile

    out = Path(out)
    prov = prov or load_provenance(out)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for c in prov["cells"]:
        if c["kind"] not in ("search", "transfer") or not is_done(out, c):
            continue
        here = cell_dir(out, c)
        info = c["info"]
        if c["kind"] == "search":
            if not (here / "ticket.pt").exists():
                continue
            for rec in ticketfile.load(here / "ticket.pt").rounds:
                for h in rec.get("history") or []:
                    rows.append({"kind": "search", **_search_row(info), "round": rec["round"], "density": rec["density"],
                                 "arm": "search", "epoch": h["epoch"], "test_acc": h["test_acc"]})
            continue
        if info.get("own_of_itself"):  # its ticket networks are the target's own ticket's
            continue
        base = {col: info.get(col, "") for col in all_columns()}
        for run in store.read_json(here / "result.json")["runs"]:
            rid = f"{run['label']}-r{run['round']:02d}-s{run['seed']}-{run['key']}"  # not an axis: the run's folder
            if run["label"] != "ticket" or rid in seen:
                continue
            seen.add(rid)
            for h in run.get("history") or []:
                rows.append({"kind": "transfer", **base, "round": run["round"], "density": run["density"], "arm": "ticket",
                             "epoch": h["epoch"], "test_acc": h["test_acc"]})
    return rows


WIDTH_COLUMNS = ["wider", "narrower", "wider_round", "narrower_round", "wider_weights", "narrower_weights",
                 "wider_density", "narrower_density", "wider_acc", "narrower_acc", "difference", "low", "high", "df",
                 "wider_tickets", "narrower_tickets", "method"]


def width_columns() -> list[str]:
    """widths.csv: one row per comparison point and pair of widths."""
    other = [c for a in factors() if a.curve != "width" for c in a.columns]
    return ["study", *other, *point_columns(), "round", *WIDTH_COLUMNS]


def width_contrasts(out: str | Path, prov: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """Transferred tickets of every pair of widths compared at one point: at a round (equal density, up to
    the widths' rounding) and at a weights point (equal remaining weights, each width at its own round).

    Tickets of two widths are different tickets (different networks, different initialisations): the
    difference of their mean accuracies gets Welch's two-sample t interval over tickets (each ticket's
    retrains averaged first), not an interval paired by search seed: a seed shares nothing between two
    widths' networks but its number. Empty when the study has one width."""
    from ticketx import store
    from ticketx.stats import welch

    out = Path(out)
    prov = prov or load_provenance(out)
    width = [a for a in factors() if a.curve == "width"]
    if not width:
        return []
    wcol = width[0].columns[0]
    other = [c for a in factors() if a.curve != "width" for c in a.columns]
    groups: dict[tuple[Any, ...], dict[Any, dict[str, list[Any]]]] = {}
    for c in prov["cells"]:
        if c["kind"] != "transfer" or not is_done(out, c):
            continue
        info = c["info"]
        point = tuple(info.get(col, "") for col in point_columns())
        for row in store.read_json(cell_dir(out, c) / "result.json")["summary"]:
            at = "" if any(v not in (None, "") for v in point) else row["round"]  # a weights point: rounds differ
            key = (*(info.get(col, "") for col in other), *point, at)
            per = groups.setdefault(key, {}).setdefault(info.get(wcol), {"acc": [], "round": [], "weights": [], "density": []})
            per["acc"].append(row["ticket"]["mean"])  # one ticket (a source cell): its retrains' mean
            per["round"].append(row["round"])
            per["weights"].append(row.get("ticket_weights"))
            per["density"].append(row["density"])
    rows = []
    for key, by_width in groups.items():
        ws = sorted(by_width, key=float, reverse=True)
        for i, wide in enumerate(ws):
            for narrow in ws[i + 1:]:
                a, b = by_width[wide], by_width[narrow]
                iv, df = welch(a["acc"], b["acc"])
                rounds = lambda x: " ".join(map(str, sorted(set(x["round"]))))  # noqa: E731
                rows.append({"study": prov["name"], **dict(zip(other + point_columns(), key[:-1])), "round": key[-1],
                             "wider": wide, "narrower": narrow, "wider_round": rounds(a), "narrower_round": rounds(b),
                             "wider_weights": _mean_or_blank(a["weights"]), "narrower_weights": _mean_or_blank(b["weights"]),
                             "wider_density": sum(a["density"]) / len(a["density"]),
                             "narrower_density": sum(b["density"]) / len(b["density"]),
                             "wider_acc": sum(a["acc"]) / len(a["acc"]), "narrower_acc": sum(b["acc"]) / len(b["acc"]),
                             "difference": iv.mean, "low": "" if iv.low is None else iv.low,
                             "high": "" if iv.high is None else iv.high, "df": "" if df is None else df,
                             "wider_tickets": len(a["acc"]), "narrower_tickets": len(b["acc"]),
                             "method": "Welch two-sample t over tickets, 95%"})
    return rows


def summary_columns() -> list[str]:
    """summary.csv: one row per comparison (the factor axes' columns and the round) and control."""
    return ["study", *factor_columns(), *point_columns(), "round", "density", "ticket_weights", "control", "tickets", "retrains", "scope", "ticket_acc",
            "ticket_low", "ticket_high", "control_acc", "margin", "margin_low", "margin_high", "level", "verdict",
            "margin_low_95", "margin_high_95", "p", "p_equivalence", "q", "q_equivalence", "sd_between", "sd_within",
            "family_tests", "family_discoveries", "tolerance", "own_ticket_init", "resolution"]


def paired_summary(out: str | Path, prov: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """The ticket's paired margins per comparison (every factor axis's value and the round).

    A pair is the ticket and a control trained in the same transfer cell (same ticket, same seed,
    same data order); a control that does not depend on the round (dense), trained once per
    ticket and seed, pairs with every round of that ticket and seed. Baselines are never pooled
    across sources: each source's margins use that source's own controls.

    Two levels (ticketx.stats): the ticket (the source's search cell: one search seed) is the
    unit, its transfer seeds are repeated measures of it; `margin` is the mean over tickets of
    each ticket's mean margin, with the t interval over tickets (df = tickets - 1), or, with one
    ticket, over its retrains (scope 'ticket': a statement about that ticket only). All rows'
    verdicts are one family under Benjamini-Hochberg: `margin_low` / `margin_high` are the
    adjusted interval at `level` the verdict reads; `margin_low_95` / `margin_high_95`, `p`,
    `p_equivalence` are unadjusted, `q` / `q_equivalence` BH-adjusted.
    """
    from ticketx import store
    from ticketx.baselines import BASELINES
    from ticketx.baselines import label as arm_label
    from ticketx.stats import MATCH_TOLERANCE, judge, replicated
    from ticketx.transfer import REFERENCES

    out = Path(out)
    prov = prov or load_provenance(out)
    # the transfer columns that say which network a cell trains, but for its point
    pairing = [col for a in transfer_axes() if a.role != "x" for col in a.columns]
    groups: dict[tuple[Any, ...], list[tuple[str, tuple[Any, ...], dict[str, float], float]]] = {}
    once: dict[tuple[Any, ...], dict[str, float]] = {}  # round-free controls, by pair
    meta: dict[tuple[Any, ...], dict[str, Any]] = {}
    kept: dict[tuple[Any, ...], list[Any]] = {}  # the tickets' remaining weights (their masks), per comparison
    for c in prov["cells"]:
        if c["kind"] != "transfer" or not is_done(out, c):
            continue
        result = store.read_json(cell_dir(out, c) / "result.json")
        info = c["info"]
        ticket = c["source"]  # not an axis: the ticket is the source's search cell (one search seed)
        pair = (ticket, *(info.get(col) for col in pairing))
        for row in result["summary"]:
            runs = [x for x in result["runs"] if x["for_round"] == row["round"]]
            accs = {x["label"]: x["test_acc"] for x in runs}
            for arm, acc in accs.items():
                if arm in BASELINES and not BASELINES[arm].per_round:
                    once.setdefault(pair, {})[arm] = acc
            key = comparison_key(info, row["round"])
            groups.setdefault(key, []).append((ticket, pair, accs, row["density"]))
            kept.setdefault(key, []).append(row.get("ticket_weights"))
            meta[key] = {"own_ticket_init": info.get("own_ticket_init"), "resolution": result.get("resolution")}
    rows, items = [], []
    cols = factor_columns() + point_columns()
    for key, found in groups.items():
        for _, pair, accs, _ in found:
            for arm, acc in once.get(pair, {}).items():
                accs.setdefault(arm, acc)
        ticket = replicated(_by_ticket((t, accs["ticket"]) for t, _, accs, _ in found)).interval()
        arms = list(dict.fromkeys(a for *_, accs, _ in found for a in accs if a != "ticket"))
        base = {"study": prov["name"], **dict(zip(cols, key[:-1])), "round": key[-1],
                "density": sum(d for *_, d in found) / len(found),
                "ticket_weights": _mean_or_blank(kept.get(key, [])),
                "ticket_acc": ticket.mean, "ticket_low": ticket.low, "ticket_high": ticket.high, **meta[key]}
        for arm in arms:
            both = [(t, accs) for t, _, accs, _ in found if arm in accs]
            est = replicated(_by_ticket((t, accs["ticket"] - accs[arm]) for t, accs in both))
            control = replicated(_by_ticket((t, accs[arm]) for t, accs in both))
            rows.append({**base, "control": arm, "tickets": est.tickets, "retrains": est.retrains, "scope": est.scope,
                         "control_acc": control.mean, "sd_between": est.sd_between, "sd_within": est.sd_within,
                         "estimate": est.as_dict()})
            items.append((arm_label(arm), est, arm in REFERENCES))
        if not arms:
            rows.append({**base, "control": "", "tickets": ticket.n, "verdict": ""})
    fam, judged = judge(items, MATCH_TOLERANCE)
    compared = [r for r in rows if r["control"]]
    for row, j in zip(compared, judged):
        iv, iv95 = j["interval"], j["interval_95"]
        row.update({"margin": iv.mean, "margin_low": iv.low, "margin_high": iv.high, "level": fam.level,
                    "verdict": j["verdict"], "margin_low_95": iv95.low, "margin_high_95": iv95.high,
                    "p": j["p"], "p_equivalence": j["p_equivalence"], "q": j["q"], "q_equivalence": j["q_equivalence"],
                    "family_tests": fam.m, "family_discoveries": fam.discoveries, "tolerance": MATCH_TOLERANCE})
    rows.sort(key=layout_order(prov))
    return rows


def _mean_or_blank(values: list[Any]) -> Any:
    have = [float(v) for v in values if v not in (None, "")]
    return sum(have) / len(have) if len(have) == len(values) and have else ""


def _by_ticket(pairs: Any) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for ticket, value in pairs:
        out.setdefault(ticket, []).append(value)
    return out


def layout_order(prov: dict[str, Any]) -> Any:
    """A sort key for summary rows: tables (the axes that split them, the round), then rows; every
    value in the order the study first produces it (the order of the study file)."""
    rank: dict[str, dict[Any, int]] = {}
    for c in prov["cells"]:
        for col, value in c["info"].items():
            if isinstance(value, (str, int, float, bool)) or value is None:
                rank.setdefault(col, {}).setdefault(value, len(rank[col]))
    table = [col for a in factors() if a.table for col in a.columns[:1]]
    rows = [col for a in factors() if not a.table for col in a.columns[:1]]

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        at = lambda col: rank.get(col, {}).get(row.get(col), 1 << 30)  # noqa: E731
        return (*(at(c) for c in table), row["round"], *(at(c) for c in rows))

    return key


def stability_columns() -> list[str]:
    return ["study", *(c for a in search_axes() for c in a.columns), "rewind", "round", "density", "train_barrier",
            "test_barrier", "test_barrier_low", "test_barrier_high", "pairs", "stable", "acc_a", "acc_b", "seeds", "points",
            "batch_norm", "cell"]


def stability_rows(out: str | Path, prov: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """One row per finished stability cell: the ticket, its rewind point and round, the error
    barriers (fractions) and the two trained copies' test accuracies; by ticket, then density."""
    from ticketx import store

    out = Path(out)
    prov = prov or load_provenance(out)
    rows = []
    for c in prov["cells"]:
        if c["kind"] != "stability" or not is_done(out, c):
            continue
        res = store.read_json(cell_dir(out, c) / "stability.json")
        info = c["info"]
        acc_a, acc_b = res["endpoint_test_acc"]
        rows.append({
            "study": prov["name"], **{k: v for a in search_axes() for k, v in a.row(info).items()},
            "rewind": info.get("rewind", ""), "round": res["round"],
            "density": res["density"], "train_barrier": res["train_barrier"], "test_barrier": res["test_barrier"],
            "test_barrier_low": (res.get("test_barrier_interval") or {}).get("low"),
            "test_barrier_high": (res.get("test_barrier_interval") or {}).get("high"), "pairs": len(res.get("pairs", [res])),
            "stable": res["stable"], "acc_a": acc_a, "acc_b": acc_b, "seeds": " ".join(map(str, res["seeds"])),
            "points": len(res["alphas"]), "batch_norm": res.get("batch_norm", ""), "cell": c["id"],
        })
    order = layout_order(prov)
    rows.sort(key=lambda r: (order({**r, "round": 0}), r.get("rewind", ""),
                             *(r[c] for a in search_axes() if a.role != "factor" for c in a.columns), r["round"]))
    return rows


OVERLAP_COLUMNS = ["model", "a", "b", "density", "a_kept_by_b", "chance_a_kept_by_b", "jaccard", "chance_jaccard", "z"]


def ticket_name(info: dict[str, Any], replicate: bool = True) -> str:
    """A ticket in words: its search axes' values and its role ('lenet_300_100 digits[0-4] (adam) seed 0, source');
    without `replicate`, the kind of ticket it is (its seed left out: what its replicates share)."""
    axes = [a for a in search_axes() if replicate or a.role != "ticket"]
    words = " ".join(p for a in axes if (p := a.phrase(info.get(a.columns[0], ""))))
    return f"{words}, {info.get('role', '')}"


def overlap_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Overlaps averaged over replicate pairs: one row per (kind of ticket A, kind of ticket B),
    e.g. the tickets of one source against each other (how reproducible its tickets are) or
    against another source's."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["a_kind"], r["b_kind"]), []).append(r)  # not an axis: overlap.csv's column
    out = []
    for (arch, a, b), rs in groups.items():
        mean = lambda k: (sum(float(r[k]) for r in rs if r.get(k) is not None) / max(1, sum(r.get(k) is not None for r in rs)))  # noqa: E731
        out.append({"model": arch, "a": a, "b": b, "pairs": len(rs),  # not an axis: overlap.csv's column
                    **{k: mean(k) for k in ("density", "a_kept_by_b", "chance_a_kept_by_b", "jaccard", "chance_jaccard", "z")}})
    return out


def ticket_overlaps(out: str | Path, prov: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """Every pair of the study's finished tickets of one architecture, at the lowest density both have
    (within 1% relative): which weights they share, against chance (ticketx.compare.overlap)."""
    from ticketx import ticket as ticketfile
    from ticketx.compare import overlap
    from ticketx.ticket import match_round

    out = Path(out)
    prov = prov or load_provenance(out)
    found: dict[str, list[tuple[str, Any]]] = {}
    for c in prov["cells"]:
        path = cell_dir(out, c) / "ticket.pt"
        if c["kind"] == "search" and is_done(out, c) and path.exists():
            model = c["model"]  # not an axis: the architecture the search built
            found.setdefault(model, []).append((ticket_name(c["info"]), ticket_name(c["info"], False), ticketfile.load(path)))
    rows = []
    for model, tickets in found.items():
        for k, (na, ka, a) in enumerate(tickets):
            for nb, kb, b in tickets[k + 1:]:
                for r in range(a.num_rounds, 0, -1):
                    rb = match_round(b, a.rounds[r]["density"])
                    if rb is None or rb == 0:
                        continue
                    ma, mb = a.mask(r), b.mask(rb)
                    common = [n for n in ma if n in mb and ma[n].shape == mb[n].shape]
                    net = overlap({n: ma[n] for n in common}, {n: mb[n] for n in common})["network"]
                    rows.append({"model": model, "a": na, "b": nb, "a_kind": ka, "b_kind": kb, "density": a.rounds[r]["density"],
                                 **{k2: net.get(k2) for k2 in OVERLAP_COLUMNS[4:]}, "a_kept_by_b": net["a_kept_by_b"]})
                    break
    return rows


def report(out: str | Path, *, density: Optional[float] = None, plots: bool = True,
           prov: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Write results.csv and the plots of `<out>`, print the transfer matrices; return what was written."""
    from ticketx import report as R
    from ticketx import store
    from ticketx.study.curves import curve_plots, epoch_plots, weights_plots
    from ticketx.study.plots import study_plots
    from ticketx.study.tables import overlap_table, stability_table, study_tables, width_table
    from ticketx.ui import console

    out = Path(out)
    if not out.is_dir():
        raise UsageError(f"no results in {out}: the study has not run there", "run it: ticketx study run STUDY.yaml [--out DIR]")
    if density is not None and not 0 < density <= 1:
        raise UsageError(f"--density is the fraction of weights kept, in (0, 1]; got {density:g}")
    prov, rows = collect(out, prov)
    summary = paired_summary(out, prov)
    done = sum(is_done(out, c) for c in prov["cells"])
    total = len(prov["cells"])
    csv_path = out / "results.csv"
    store.write_text(csv_path, R.csv_text(rows, columns()))
    store.write_text(out / "summary.csv", R.csv_text(summary, summary_columns()))
    for table in study_tables(summary, title=prov["name"], density=density):
        console.print(table)
    overlaps = ticket_overlaps(out, prov)
    if overlaps:
        store.write_text(out / "overlap.csv", R.csv_text(overlaps, OVERLAP_COLUMNS))
        console.print(overlap_table(overlap_groups(overlaps)))
    written = {"csv": csv_path, "summary": out / "summary.csv", "plots": [], "rows": len(rows), "cells_done": done,
               "cells": total, "table": summary, "resolved": prov.get("resolved", {})}
    stab = stability_rows(out, prov)
    if stab:
        written["stability"] = out / "stability.csv"
        store.write_text(out / "stability.csv", R.csv_text(stab, stability_columns()))
        console.print(stability_table(stab))
    widths = width_contrasts(out, prov)
    if widths:
        written["widths"] = out / "widths.csv"
        store.write_text(out / "widths.csv", R.csv_text(widths, width_columns()))
        console.print(width_table(widths))
    plain = [r for r in summary if not is_point_row(r)]  # the round and density points: the usual plots
    if plots and plain:
        written["plots"] = study_plots(rows, plain, out / "plots")
    if plots:  # double descent, memorisation, training curves, equal weights: when the study has the axes they need
        written["plots"] += curve_plots(rows, out / "plots")
        written["plots"] += epoch_plots(histories(out, prov), out / "plots")
        written["plots"] += weights_plots([r for r in summary if is_point_row(r)], out / "plots", summary_columns())
    state = "[green]complete[/]" if done == total else f"[yellow]{done} of {total} cells done[/] (partial results)"
    console.print(f"study [bold]{prov['name']}[/]: {state}; {len(rows)} trained networks in {csv_path}, "
                  f"paired margins in {out / 'summary.csv'}")
    if stab:
        console.print(f"  stability: {len(stab)} error barriers in {written['stability']} (paths: cells/stability-*/path.png)")
    for p in written["plots"]:
        console.print(f"  plot: {p}")
    return written


def track_study(tracker: Any, out: Path, written: dict[str, Any]) -> None:
    """The study as one tracker run (ticketx.trackers): its resolved settings, then at step = cells
    done its summary table (summary.csv's columns) and plots; a report with no new cell done logs nothing."""
    run = tracker.run("study", written.get("resolved", {}), folder=Path(out) / "tracking", key="study", kind="study")
    step = int(written["cells_done"])
    if run.log(step, {"cells_done": step, "cells": written["cells"], "networks": written["rows"]}):
        run.table("summary", summary_columns(), written["table"], step)
        for p in written["plots"]:
            run.image(f"plots/{Path(p).stem}", p, step)
    run.finish()
