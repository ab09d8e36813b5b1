"""The resolve layer: every schema, cross-field rule and registry-name check, written once.

CLI options, study files and Python calls all become the same frozen, checked plans here
(`SearchSpec`, `TransferPlan`, a `Study`'s cells); the runners (find, transfer, study) never
validate and never load a ticket twice.

    base       strict models, list parsing, seed rule, one-line errors, partial overrides
    train      TrainSpec, PruneSpec, the optimizer's-lr rule, the rewind-before-end rule
    find       SearchSpec and its name checks
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
