"""The resolve layer: every schema, cross-field rule and registry-name check, written once.

CLI options, study files and Python calls all become the same checked settings here
(`SearchSpec`, `TransferPlan`, the study file's schema; the study axes add their names and
cross-field checks in `ticketx.study.load`). The schemas are pydantic models that are not
frozen: unknown keys are errors and every assignment is validated again (`base.Strict`), so a
changed copy is checked like a new one; `TransferPlan` is a frozen dataclass. The runners do not
validate again, but for the rules that need the data set loaded: search checks the rewind point
against the training length in steps (`rewind_problem` with the epoch's size), transfer checks a
kept output layer against the target's class names (`check_head`, written here). A transfer's ticket
and own ticket are loaded and matched once, here. `ticketx pai` does not come through here: its
options are checked by `ticketx.pai.write_pai_ticket`.

    base       strict models, list parsing, seed rule, one-line errors, partial overrides
    train      TrainSpec, PruneSpec, the optimizer's-lr rule, the rewind-before-end rule
    search     SearchSpec and its name checks
    transfer   TransferSpec -> TransferPlan (ticket and own ticket loaded and matched once)
    study      the study file: schema, line-numbered loading, per-phase settings
    yamlfile   YAML with line numbers for `file:line: key.path: message` errors
"""

from ticketx.settings.base import check_seeds, describe_validation_error
from ticketx.settings.search import SearchSpec, resolve_search
from ticketx.settings.train import DEFAULT_LR, PruneSpec, TrainSpec, resolve_prune, resolve_train, rewind_problem, train_settings
from ticketx.settings.transfer import TransferPlan, TransferSpec, resolve_transfer, ticket_train_spec

__all__ = [
    "DEFAULT_LR", "SearchSpec", "PruneSpec", "TrainSpec", "TransferPlan", "TransferSpec", "check_seeds",
    "describe_validation_error", "resolve_search", "resolve_prune", "resolve_train", "resolve_transfer",
    "rewind_problem", "ticket_train_spec", "train_settings",
]
