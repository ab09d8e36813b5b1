"""Studies: one YAML file -> a grid of cells (ticket searches, transfers, stability) -> run, skip, resume, collect.

The file's schema and loading live in the resolve layer (`ticketx.settings.study`); here: the cells
(`cells`), running them (`runner`) and their results (`results`).
"""

from ticketx.settings.study import Study, load_study, prune_spec, train_spec
from ticketx.study.cells import Cell, SearchCell, StabilityCell, TransferCell, count, expand
from ticketx.study.results import COLUMNS, STABILITY_COLUMNS, collect, load_provenance, report, stability_rows
from ticketx.study.runner import cell_dir, is_done, provenance, run_study, write_provenance

__all__ = [
    "COLUMNS", "Cell", "STABILITY_COLUMNS", "SearchCell", "StabilityCell", "Study", "TransferCell", "cell_dir", "collect",
    "count", "expand", "is_done", "load_provenance", "load_study", "provenance", "prune_spec", "report", "run_study",
    "stability_rows", "train_spec", "write_provenance",
]
