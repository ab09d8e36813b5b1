"""Compare tickets: do two tickets keep the same weights, and do they share a density profile?

Pure functions on masks (no model, no data set). For tickets of one architecture at matched
densities (e.g. found on two data sets, or with two seeds):

- `overlap(a, b)`: per layer and for the whole network, how many weights each keeps, how many
  both keep, the fraction of A's kept weights that B keeps (`a_kept_by_b`), the Jaccard index
  |A∩B| / |A∪B|, and the chance level of each for independent uniformly random masks with the
  same per-layer counts (the null "the two tickets agree no more than their densities force").
- `spearman(x, y)`: rank correlation of two per-layer density profiles.
- `match_round(ticket, density)`: the round of a ticket at a given density, if it has one.
- `profile_plot(tickets, path)`: the layerwise density profiles side by side (PNG).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from ticketx.errors import UsageError
from ticketx.ticket import match_round  # noqa: F401  (part of this module's API)

Layer = dict[str, Any]


def _check_same_layout(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
    if set(a) != set(b):
        only_a = sorted(set(a) - set(b))
        only_b = sorted(set(b) - set(a))
        raise UsageError(
            "the tickets do not have the same prunable tensors (different architectures?): "
            f"only in A: {', '.join(only_a) or '-'}; only in B: {', '.join(only_b) or '-'}"
        )
    bad = [f"{n} {tuple(a[n].shape)} vs {tuple(b[n].shape)}" for n in a if tuple(a[n].shape) != tuple(b[n].shape)]
    if bad:
        raise UsageError(f"the tickets' masks differ in shape: {'; '.join(bad)}")


def _ratio(num: float, den: float) -> float | None:
    """num / den, or None where it is undefined (an empty layer): never a NaN in a report or JSON."""
    return num / den if den else None


def chance_shared(kept_a: int, kept_b: int, total: int) -> tuple[float, float]:
    """Mean and variance of |A∩B| for independent uniform masks of these counts in `total` weights.

    |A∩B| is hypergeometric: drawing kept_b positions from `total` of which kept_a are in A.
    """
    if total <= 0:
        return 0.0, 0.0
    mean = kept_a * kept_b / total
    var = 0.0
    if total > 1:
        var = kept_a * (kept_b / total) * ((total - kept_b) / total) * ((total - kept_a) / (total - 1))
    return mean, var


def _layer(kept_a: int, kept_b: int, shared: int, total: int, chance_mean: float, chance_var: float) -> Layer:
    union = kept_a + kept_b - shared
    chance_union = kept_a + kept_b - chance_mean
    sd = math.sqrt(chance_var)
    # Jaccard's spread under the null by the delta method: J = I / (ka + kb - I), so
    # dJ/dI = (ka + kb) / (ka + kb - I)^2, evaluated at the mean intersection.
    jaccard_sd = (kept_a + kept_b) / chance_union ** 2 * sd if chance_union > 0 else 0.0
    return {
        "total": total,
        "kept_a": kept_a,
        "kept_b": kept_b,
        "density_a": _ratio(kept_a, total),
        "density_b": _ratio(kept_b, total),
        "shared": shared,
        "a_kept_by_b": _ratio(shared, kept_a),
        "b_kept_by_a": _ratio(shared, kept_b),
        "jaccard": _ratio(shared, union),
        "chance_shared": chance_mean,
        "chance_shared_sd": sd,
        # E|A∩B| / |A|: equals density_b for one layer; for the network it weights each layer's
        # density_b by A's weights in it, so unequal layerwise densities are accounted for.
        "chance_a_kept_by_b": _ratio(chance_mean, kept_a),
        # The ratio of expectations E|A∩B| / E|A∪B| (not E[J]): the two differ by O(1/|A∪B|),
        # far below any difference worth reporting at the sizes of real layers.
        "chance_jaccard": _ratio(chance_mean, chance_union),
        "chance_jaccard_sd": jaccard_sd,
        # How many null standard deviations the observed overlap lies above chance.
        "z": (shared - chance_mean) / sd if sd > 0 else None,
    }


def overlap(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Overlap of the weights two masks keep: {'layers': {name: stats}, 'network': stats}.

    Every stats dict has total, kept_a, kept_b, shared, a_kept_by_b, b_kept_by_a, jaccard and
    their chance levels (chance_shared ± chance_shared_sd, chance_a_kept_by_b, chance_jaccard ±
    chance_jaccard_sd) and z, the observed intersection in null standard deviations above
    chance. The network's chance level sums each layer's expected intersection (and variance:
    layers are independent), so it respects the two tickets' layerwise densities. Ratios that
    are undefined (an empty layer) are None.
    """
    _check_same_layout(a, b)
    layers: dict[str, Layer] = {}
    sums = [0, 0, 0, 0, 0.0, 0.0]
    for name in a:
        ma, mb = a[name].reshape(-1).bool().cpu(), b[name].reshape(-1).bool().cpu()
        ka, kb, shared, total = int(ma.sum()), int(mb.sum()), int((ma & mb).sum()), ma.numel()
        mean, var = chance_shared(ka, kb, total)
        layers[name] = _layer(ka, kb, shared, total, mean, var)
        for i, v in enumerate((ka, kb, shared, total, mean, var)):
            sums[i] += v
    ka, kb, shared, total, mean, var = sums
    return {"layers": layers, "network": _layer(int(ka), int(kb), int(shared), int(total), mean, var)}


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given the average of the ranks they span (as scipy.stats.rankdata)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            out[order[k]] = avg
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (Pearson on average ranks); None when undefined (n < 2 or a constant)."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} vs {len(y)} values")
    n = len(x)
    if n < 2:
        return None
    rx, ry = ranks(list(x)), ranks(list(y))
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


def density_profile(mask: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Per-layer density of a mask, in the mask's tensor order."""
    return {n: float(m.sum()) / max(1, m.numel()) for n, m in mask.items()}


def compare(masks: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, Any]:
    """Every pair of labelled masks: overlap and the rank correlation of their density profiles."""
    labels = list(masks)
    pairs = []
    for i, la in enumerate(labels):
        for lb in labels[i + 1:]:
            pa, pb = density_profile(masks[la]), density_profile(masks[lb])
            ov = overlap(masks[la], masks[lb])
            pairs.append({"a": la, "b": lb, **ov, "density_spearman": spearman(list(pa.values()), [pb[n] for n in pa])})
    return {"labels": labels, "profiles": {label: density_profile(m) for label, m in masks.items()}, "pairs": pairs}


def profile_plot(tickets: Mapping[str, Mapping[str, torch.Tensor]], path: Any) -> Any:
    """PNG: per-layer % weights remaining of each labelled mask, grouped bars side by side.

    matplotlib is imported here only (Agg canvas, no pyplot state), so `ticketx --help` stays fast.
    """
    from pathlib import Path

    from matplotlib.figure import Figure

    from ticketx.report import save_png

    labels = list(tickets)
    if not labels:
        raise UsageError("profile_plot: no tickets to plot")
    names = list(tickets[labels[0]])
    fig = Figure(figsize=(max(6.0, 0.5 * len(names) * max(1, len(labels)) ** 0.5 + 2), 4.5))
    ax = fig.add_subplot()
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        prof = density_profile(tickets[label])
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(names))]
        ax.bar(xs, [100 * prof[n] for n in names], width=width, label=label)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("% weights remaining")
    ax.set_xlabel("layer")
    ax.set_title("layerwise density profile", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    save_png(fig, path)
    return path


def _check_distinct(paths: Sequence[Any]) -> None:
    """Every path names another file: a ticket compared with itself is no comparison (and would be
    one entry of the table, the second overwriting the first)."""
    import os
    from pathlib import Path

    for i, p in enumerate(paths):
        for q in paths[:i]:
            same = Path(p).resolve() == Path(q).resolve()
            if not same and os.path.exists(p) and os.path.exists(q):
                same = os.path.samefile(p, q)  # hard links
            if same:
                what = f"{p} is given twice" if str(p) == str(q) else f"{q} and {p} are the same file"
                raise UsageError(f"{what}: compare two or more different tickets")


def compare_tickets(paths: Sequence[Any], density: float | None = None) -> dict[str, Any]:
    """Load tickets, match their rounds at one density (within 1% relative), compare their masks."""
    from pathlib import Path

    from ticketx.settings.transfer import load_checked

    if len(paths) < 2:
        raise UsageError("give at least two tickets to compare")
    _check_distinct(paths)
    tickets = [load_checked(p) for p in paths]
    first = tickets[0]
    for p, t in zip(paths[1:], tickets[1:]):
        if t.meta["model"] != first.meta["model"] or t.names != first.names:
            raise UsageError(f"{p} is a {t.meta['model']} ticket; {paths[0]} is a {first.meta['model']}: "
                             "tickets of different architectures select different weights by construction")
    if density is None:
        density = first.rounds[-1]["density"]
    rounds = []
    for p, t in zip(paths, tickets):
        r = match_round(t, density)
        if r is None:
            have = ", ".join(f"{100 * x['density']:.2f}%" for x in t.rounds)
            raise UsageError(f"{p} has no round within 1% of {100 * density:.2f}% weights remaining (it has {have})")
        rounds.append(r)
    labels = [Path(str(p)).stem for p in paths]
    if len(set(labels)) < len(labels):
        labels = [str(p) for p in paths]
    masks = {label: t.mask(r) for label, t, r in zip(labels, tickets, rounds)}
    return {"density": density, "rounds": dict(zip(labels, rounds)), "masks": masks, **compare(masks)}
