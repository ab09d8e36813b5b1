"""Study results: one tidy row per trained network from the finished cells; tables, CSV, plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ticketx.errors import UsageError
from ticketx.study.runner import STUDY_FORMAT, STUDY_VERSION, cell_dir, is_done

COLUMNS = ["study", "kind", "model", "source", "source_classes", "target", "target_classes", "search_optimizer", "criterion",
           "transfer_optimizer", "search_seed", "seed", "round", "density", "label", "test_acc", "run_id", "cell",
           "versions"]


def _classes_of(name: str) -> str:
    return name[name.rfind("[") + 1:-1] if name.endswith("]") else ""


def _versions(v: dict[str, Any]) -> str:
    return " ".join(f"{k}={v[k]}" for k in sorted(v))


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
    return prov


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
                rid = f"{c['id']}/round_{r['round']:02d}"
                rows.append({
                    "study": name, "kind": "search", "model": info["model"], "source": info["data"],
                    "source_classes": _classes_of(info["data"]), "target": info["data"],
                    "target_classes": _classes_of(info["data"]), "search_optimizer": info["optimizer"],
                    "criterion": info.get("criterion", "magnitude"),
                    "transfer_optimizer": "", "search_seed": info["seed"], "seed": info["seed"], "round": r["round"],
                    "density": r["density"], "label": "search", "test_acc": r["test_acc"], "run_id": rid,
                    "cell": c["id"], "versions": versions,
                })
            continue
        if c["kind"] != "transfer":  # stability cells train no network to compare: stability.csv
            continue
        result = store.read_json(here / "result.json")
        own = cells[c["own_ticket"]]["info"] if c.get("own_ticket") in cells else None
        for run in result["runs"]:
            rid = f"{run['label']}-r{run['round']:02d}-s{run['seed']}-{run['key']}"
            if rid in seen:  # the own ticket's networks are shared by the cells of every source
                continue
            seen.add(rid)
            label = run["label"]
            src, sopt, sseed = info["source"], info["search_optimizer"], info["search_seed"]
            if label == "own-ticket":
                assert own is not None
                src, sopt, sseed = own["data"], own["optimizer"], own["seed"]
            if label == "ticket" and src == info["target"] and sopt == info["transfer_optimizer"]:
                label = "own-ticket"  # a source that is also a target is that target's own ticket
            rows.append({
                "study": name, "kind": "transfer", "model": info["model"], "source": src,
                "source_classes": _classes_of(src), "target": info["target"], "target_classes": _classes_of(info["target"]),
                "search_optimizer": sopt, "criterion": info.get("criterion", "magnitude"),
                "transfer_optimizer": info["transfer_optimizer"], "search_seed": sseed,
                "seed": run["seed"], "round": run["round"], "density": run["density"], "label": label,
                "test_acc": run["test_acc"], "run_id": rid, "cell": c["id"], "versions": versions,
            })
    return prov, rows


SUMMARY_COLUMNS = ["study", "model", "source", "search_optimizer", "criterion", "target", "transfer_optimizer", "round", "density",
                   "arm", "n", "ticket_acc", "ticket_low", "ticket_high", "arm_acc", "margin", "margin_low", "margin_high",
                   "verdict", "own_ticket_init", "resolution"]


def paired_summary(out: str | Path, prov: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """The ticket's paired margins per (source, search optimizer, target, transfer optimizer, round).

    A pair is the ticket and an arm trained in the same transfer cell (same ticket, same seed,
    same data order); the dense network, trained once per ticket and seed, pairs with every
    round of that ticket and seed. Baselines are never pooled across sources: each source's
    margins use that source's own controls. n counts (search seed x transfer seed) pairs.
    """
    from ticketx import store
    from ticketx.baselines import label as arm_label
    from ticketx.stats import interval, paired, verdict

    out = Path(out)
    prov = prov or load_provenance(out)
    groups: dict[tuple[Any, ...], list[tuple[tuple[Any, ...], dict[str, float], float]]] = {}
    dense: dict[tuple[Any, ...], float] = {}
    meta: dict[tuple[Any, ...], dict[str, Any]] = {}
    for c in prov["cells"]:
        if c["kind"] != "transfer" or not is_done(out, c):
            continue
        result = store.read_json(cell_dir(out, c) / "result.json")
        info = c["info"]
        pair = (c["source"], info["target"], info["transfer_optimizer"], info["seed"])
        for row in result["summary"]:
            runs = [x for x in result["runs"] if x["for_round"] == row["round"]]
            accs = {x["label"]: x["test_acc"] for x in runs}
            if "dense" in accs:
                dense[pair] = accs["dense"]
            key = (info["model"], info["source"], info["search_optimizer"], info.get("criterion", "magnitude"),
                   info["target"], info["transfer_optimizer"], row["round"])
            groups.setdefault(key, []).append((pair, accs, row["density"]))
            meta[key] = {"own_ticket_init": info.get("own_ticket_init"), "resolution": result.get("resolution")}
    rows = []
    for key, items in groups.items():
        model, source, sopt, crit, target, topt, round_ = key
        for pair, accs, _ in items:
            if "dense" not in accs and pair in dense:
                accs["dense"] = dense[pair]
        ticket = interval([accs["ticket"] for _, accs, _ in items])
        arms = list(dict.fromkeys(a for _, accs, _ in items for a in accs if a != "ticket"))
        base = {"study": prov["name"], "model": model, "source": source, "search_optimizer": sopt, "criterion": crit,
                "target": target,
                "transfer_optimizer": topt, "round": round_, "density": sum(d for *_, d in items) / len(items),
                "ticket_acc": ticket.mean, "ticket_low": ticket.low, "ticket_high": ticket.high, **meta[key]}
        for arm in arms:
            both = [accs for _, accs, _ in items if arm in accs]
            diff = paired([x["ticket"] for x in both], [x[arm] for x in both])
            rows.append({**base, "arm": arm, "n": diff.n, "arm_acc": interval([x[arm] for x in both]).mean,
                         "margin": diff.mean, "margin_low": diff.low, "margin_high": diff.high,
                         "verdict": verdict(arm, arm_label(arm), diff)})
        if not arms:
            rows.append({**base, "arm": "", "n": ticket.n, "verdict": ""})
    order = _order(prov)
    rank = {s: i for i, s in enumerate(order["sources"])}
    trank = {t: i for i, t in enumerate(order["targets"])}
    rows.sort(key=lambda r: (r["model"], r["transfer_optimizer"], r["round"], trank.get(r["target"], 99),
                             rank.get(r["source"], 99), r["search_optimizer"], r["criterion"]))
    return rows


STABILITY_COLUMNS = ["study", "model", "source", "search_optimizer", "criterion", "rewind", "search_seed", "round",
                     "density", "train_barrier", "test_barrier", "stable", "acc_a", "acc_b", "seeds", "points",
                     "batch_norm", "cell"]


def stability_rows(out: str | Path, prov: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """One row per finished stability cell: the ticket, its rewind point and round, the error
    barriers (fractions) and the two trained copies' test accuracies; by source, then density."""
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
            "study": prov["name"], "model": info["model"], "source": info["source"],
            "search_optimizer": info["search_optimizer"], "criterion": info.get("criterion", "magnitude"),
            "rewind": info.get("rewind", ""), "search_seed": info["search_seed"], "round": res["round"],
            "density": res["density"], "train_barrier": res["train_barrier"], "test_barrier": res["test_barrier"],
            "stable": res["stable"], "acc_a": acc_a, "acc_b": acc_b, "seeds": " ".join(map(str, res["seeds"])),
            "points": len(res["alphas"]), "batch_norm": res.get("batch_norm", ""), "cell": c["id"],
        })
    rank = {s: i for i, s in enumerate(_order(prov)["sources"])}
    rows.sort(key=lambda r: (r["model"], rank.get(r["source"], 99), r["search_optimizer"], r["criterion"],
                             r["rewind"], r["search_seed"], r["round"]))
    return rows


OVERLAP_COLUMNS = ["model", "a", "b", "density", "a_kept_by_b", "chance_a_kept_by_b", "jaccard", "chance_jaccard", "z"]


def ticket_overlaps(out: str | Path, prov: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """Every pair of the study's finished tickets of one model, at the lowest density both have
    (within 1% relative): which weights they share, against chance (ticketx.compare.overlap)."""
    from ticketx import ticket as ticketfile
    from ticketx.compare import match_round, overlap

    out = Path(out)
    prov = prov or load_provenance(out)
    found: dict[str, list[tuple[str, Any]]] = {}
    for c in prov["cells"]:
        path = cell_dir(out, c) / "ticket.pt"
        if c["kind"] == "search" and is_done(out, c) and path.exists():
            i = c["info"]
            name = f"{i['data']} ({i['optimizer']}, {i.get('criterion', 'magnitude')}, seed {i['seed']}, {i['role']})"
            found.setdefault(i["model"], []).append((name, ticketfile.load(path)))
    rows = []
    for model, tickets in found.items():
        for k, (na, a) in enumerate(tickets):
            for nb, b in tickets[k + 1:]:
                for r in range(a.num_rounds, 0, -1):
                    rb = match_round(b, a.rounds[r]["density"])
                    if rb is None or rb == 0:
                        continue
                    ma, mb = a.mask(r), b.mask(rb)
                    common = [n for n in ma if n in mb and ma[n].shape == mb[n].shape]
                    net = overlap({n: ma[n] for n in common}, {n: mb[n] for n in common})["network"]
                    rows.append({"model": model, "a": na, "b": nb, "density": a.rounds[r]["density"],
                                 **{k2: net.get(k2) for k2 in OVERLAP_COLUMNS[4:]}, "a_kept_by_b": net["a_kept_by_b"]})
                    break
    return rows


def report(out: str | Path, *, density: Optional[float] = None, plots: bool = True,
           prov: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Write results.csv and the plots of `<out>`, print the transfer matrices; return what was written."""
    from ticketx import report as R
    from ticketx import store
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
    store.write_text(csv_path, R.csv_text(rows, COLUMNS))
    store.write_text(out / "summary.csv", R.csv_text(summary, SUMMARY_COLUMNS))
    for table in R.study_tables(summary, title=prov["name"], density=density):
        console.print(table)
    overlaps = ticket_overlaps(out, prov)
    if overlaps:
        store.write_text(out / "overlap.csv", R.csv_text(overlaps, OVERLAP_COLUMNS))
        console.print(R.overlap_table(overlaps))
    written = {"csv": csv_path, "summary": out / "summary.csv", "plots": [], "rows": len(rows), "cells_done": done,
               "cells": total}
    stab = stability_rows(out, prov)
    if stab:
        written["stability"] = out / "stability.csv"
        store.write_text(out / "stability.csv", R.csv_text(stab, STABILITY_COLUMNS))
        console.print(R.stability_table(stab))
    if plots and summary:
        written["plots"] = R.study_plots(rows, summary, out / "plots")
    state = "[green]complete[/]" if done == total else f"[yellow]{done} of {total} cells done[/] (partial results)"
    console.print(f"study [bold]{prov['name']}[/]: {state}; {len(rows)} trained networks in {csv_path}, "
                  f"paired margins in {out / 'summary.csv'}")
    if stab:
        console.print(f"  stability: {len(stab)} error barriers in {written['stability']} (paths: cells/stability-*/path.png)")
    for p in written["plots"]:
        console.print(f"  plot: {p}")
    return written


def _order(prov: dict[str, Any]) -> dict[str, list[str]]:
    """Sources and targets in the order the study file lists them (tables and plots follow it)."""
    sources: list[str] = []
    targets: list[str] = []
    for c in prov["cells"]:
        if c["kind"] == "search" and c["info"]["role"] == "source" and c["info"]["data"] not in sources:
            sources.append(c["info"]["data"])
        if c["kind"] == "transfer" and c["info"]["target"] not in targets:
            targets.append(c["info"]["target"])
    return {"sources": sources, "targets": targets}
