"""The initialisations the local models share."""

from __future__ import annotations

from torch import nn


def glorot_init(model: nn.Module) -> None:
    """Gaussian Glorot weights, zero biases: Frankle & Carbin 2019 Fig. 2 (LeNet, Conv-2/4/6).

    Zero biases are TensorFlow's default, which F&C used. (open_lth's LeNet uses Kaiming normal.)
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def kaiming_init(model: nn.Module) -> None:
    """Kaiming normal conv/linear weights (open_lth's default `kaiming_normal`; He et al. 2015).

    Biases keep PyTorch's default, as in open_lth. BatchNorm starts at weight 1, bias 0 (He et al.
    2016, torchvision); open_lth's default `batchnorm_init='uniform'` draws BN weights from
    U(0, 1) instead, which we do not copy: it is not what the papers describe.
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
