"""Study axes: one file per dimension of a study's grid (see `base`). Importing this package registers
every axis, in the order of expansion: search axes (model, source, search optimizer, criterion,
retrain mode, search method, search seed, width, search noise), then transfer axes (target, transfer optimizer,
transfer noise, point, seed). An axis that reads another's value comes after it (the noise axes
change the training settings the optimizer axes build)."""

from ticketx.study.axes import model, source, search_optimizer, criterion, retrain, search_method  # noqa: F401  (search)
from ticketx.study.axes import search_seed  # noqa: F401  (search)
from ticketx.study.axes import width, search_noise  # noqa: F401  (search)
from ticketx.study.axes import target, transfer_optimizer, transfer_noise, point, seed  # noqa: F401  (transfer)
from ticketx.study.axes.base import AXES, Axis, Draft, axis, factors, search_axes, slug, transfer_axes, with_role

__all__ = ["AXES", "Axis", "Draft", "axis", "factors", "search_axes", "slug", "transfer_axes", "with_role"]
