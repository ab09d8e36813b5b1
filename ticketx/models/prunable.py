"""The two facts pruning needs from a model: which tensors are prunable (`prunable_names`: every
conv and linear weight) and which one is the output layer (`head_name`), because Frankle & Carbin
2019 prune the output layer at a different rate."""

from __future__ import annotations

from torch import nn

from ticketx.errors import UsageError

# Layers whose weights are prunable. Subclasses (timm's Conv2dSame, NonDynamicallyQuantizableLinear)
# count too; depthwise convs are plain Conv2d with groups > 1.
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

# Local model classes name their output layer in this class attribute (a module name, e.g. 'fc');
# `head_name` appends '.weight'. A distinct name, because timm models use `head` for a module.
HEAD_ATTR = "head_layer"


def prunable_names(model: nn.Module) -> list[str]:
    """Names of every conv and linear weight, in `model.named_parameters()` order.

    Biases, normalisation parameters, embeddings and position embeddings are never prunable; a
    linear weight tied to an embedding (shared input/output embeddings) counts as an embedding.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    wanted = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, PRUNABLE_TYPES)
        and isinstance(getattr(m, "weight", None), nn.Parameter)
        and id(m.weight) not in embeddings
    }
    return [n for n, p in model.named_parameters() if id(p) in wanted]


def _module_name(model: nn.Module, module: nn.Module) -> str | None:
    return next((n for n, m in model.named_modules() if m is module), None)


def head_name(model: nn.Module) -> str:
    """Parameter name of the output layer's weight, e.g. 'fc.weight'."""
    params = dict(model.named_parameters())
    marked = getattr(model, HEAD_ATTR, None)
    if isinstance(marked, str) and f"{marked}.weight" in params:
        return f"{marked}.weight"
    get_classifier = getattr(model, "get_classifier", None)  # timm's API
    if callable(get_classifier):
        head = get_classifier()
        if isinstance(head, (tuple, list)):  # distilled timm models: (head, head_dist)
            head = head[0]
        name = _module_name(model, head) if isinstance(head, nn.Module) else None
        if name is not None:
            inside = prunable_names(head)
            if inside:  # the last prunable weight inside the classifier (it may be a block)
                return f"{name}.{inside[-1]}" if name else inside[-1]
    # Anything else (e.g. a plain nn.Sequential): the last prunable weight is the output layer.
    names = prunable_names(model)
    if not names:
        raise UsageError(f"{type(model).__name__} has no conv or linear weight to be its output")
    return names[-1]
