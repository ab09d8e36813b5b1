"""Study axes: one file per dimension of a study's grid (see `base`). Importing this package registers
every axis, in the order of expansion: search axes (model, source, search optimizer, criterion,
retrain, search seed), then transfer axes (target, transfer optimizer, point, seed)."""

from ticketx.study.axes import model, source, search_optimizer, criterion, retrain, search_seed  # noqa: F401  (search)
from ticketx.study.axes import target, transfer_optimizer, point, seed  # noqa: F401  (transfer)
from ticketx.study.axes.base import AXES, Axis, Draft, axis, factors, search_axes, slug, transfer_axes, with_role

__all__ = ["AXES", "Axis", "Draft", "axis", "factors", "search_axes", "slug", "transfer_axes", "with_role"]
