"""Print a study's summary.csv as the README's Markdown table: per density, the ticket's accuracy and
its margin over each control (mean over tickets [adjusted interval] and the between-ticket sd).

    python3 scripts/summary_markdown.py runs/quickstart
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def main(folder: str) -> None:
    rows = list(csv.DictReader(open(Path(folder) / "summary.csv")))
    controls = list(dict.fromkeys(r["control"] for r in rows if r["control"]))
    f = lambda v: "" if v in ("", None) else f"{100 * float(v):.2f}"  # noqa: E731
    sign = lambda v: f"{100 * float(v):+.2f}"  # noqa: E731
    first = rows[0]
    print(f"{first['family_tests']} tests, {first['family_discoveries']} shown; intervals at "
          f"{100 * float(first['level']):.2f}%\n")
    print("| % weights remaining | tickets × retrains | ticket % | " + " | ".join(f"vs {c}" for c in controls) + " |")
    print("| --- " * (3 + len(controls)) + "|")
    for density in dict.fromkeys(r["density"] for r in rows):
        at = {r["control"]: r for r in rows if r["density"] == density}
        r0 = next(iter(at.values()))
        k, n = int(r0["tickets"]), int(r0["retrains"])
        cells = [f"{100 * float(density):.2f}", f"{k} × {n // k}",
                 f"{f(r0['ticket_acc'])} [{f(r0['ticket_low'])}, {f(r0['ticket_high'])}]"]
        for c in controls:
            r = at.get(c)
            cells.append("-" if r is None else f"{sign(r['margin'])} [{f(r['margin_low'])}, {f(r['margin_high'])}] "
                         f"σ {f(r['sd_between']) or '-'}: {r['verdict']}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
