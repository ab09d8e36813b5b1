"""Studies: one YAML file -> a grid of cells (ticket searches, transfers, stability) -> run, skip, resume, collect.

The study axes (`axes`: one file per dimension of the grid) say what a study file may contain
and where each value goes; `load` reads and checks a file, `cells` expands it, `runner` runs a
cell, `results` collects the finished ones, `tables` and `plots` show them, `claims` and
`expect` judge its `expect:` block; `worker` claims cells (`local`: several on one machine,
`slurm`: a cluster, `status`: what they are doing).
"""

from ticketx.settings.study import Study, prune_spec, train_spec
from ticketx.study.cells import Cell, SearchCell, StabilityCell, TransferCell, count, expand
from ticketx.study.load import load_study
from ticketx.study.results import collect, columns, load_provenance, report, stability_columns, stability_rows
from ticketx.study.runner import cell_dir, is_done, provenance, write_provenance
from ticketx.study.worker import run_study

__all__ = [
    "Cell", "SearchCell", "StabilityCell", "Study", "TransferCell", "cell_dir", "collect", "columns",
    "count", "expand", "is_done", "load_provenance", "load_study", "provenance", "prune_spec", "report", "run_study",
    "stability_columns", "stability_rows", "train_spec", "write_provenance",
]
