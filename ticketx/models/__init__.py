"""Models: the lottery-ticket canon (LeNet, Conv-2/4/6, VGG, ResNet) plus any timm model.

Every builder takes (num_classes, in_channels, image_size), the local ones also a width
multiplier (`width`), and sizes all of its layers from them, so a ticket found on one data set
can be rebuilt for another (Morcos et al. 2019 transfer tickets across data sets by swapping only
the output layer). Each model also carries its paper's training and pruning defaults, keyed by
`TrainSpec` / `PruneSpec` fields.

One concept per module:
- registry: ModelInfo, `register`, MODELS (the local models, in registration order)
- build: `model_info`, `build_model` (local or 'timm:<name>', input size and width checked),
  `model_rows`, `prunable_names_of`
- lenet, conv, vgg, resnet: the model families (each registers its models on import)
- timm_models: the timm wrapper (timm itself is imported only when a timm model is asked for)
- width: the width multiplier (`widen`); defaults: the papers' recipes; weight_init: Glorot and
  Kaiming initialisation; inputs: the input-size checks; prunable: `prunable_names`, `head_name`
"""

from __future__ import annotations

# The families register their models on import, in this order (the order `ticketx models` lists).
from ticketx.models import lenet  # noqa: F401  # isort: skip
from ticketx.models import conv  # noqa: F401  # isort: skip
from ticketx.models import vgg  # noqa: F401  # isort: skip
from ticketx.models import resnet  # noqa: F401  # isort: skip
from ticketx.models.build import build_model, check_model_width, has_batch_norm, is_conv, model_info, model_rows, prunable_names_of, width_problem
from ticketx.models.prunable import head_name, prunable_names
from ticketx.models.registry import MODELS, ModelInfo, register
from ticketx.models.timm_models import TIMM_PREFIX

__all__ = [
    "MODELS",
    "TIMM_PREFIX",
    "ModelInfo",
    "build_model",
    "check_model_width",
    "has_batch_norm",
    "head_name",
    "is_conv",
    "model_info",
    "model_rows",
    "prunable_names",
    "prunable_names_of",
    "register",
    "width_problem",
]
