"""BN-Inception (Inception v2 with batch norm, Ioffe & Szegedy 2015), the paper's trunk.

Module and parameter names are those of the Cadene ``pretrainedmodels`` ``bninception``
(``conv1_7x7_s2``, ``conv1_7x7_s2_bn``, ..., ``inception_5b_pool_proj_bn``), so a state dict of
that model, which the paper used, loads with :func:`dmlopt.models.pretrained.load_pretrained`
(its classifier ``last_linear`` is dropped). Those weights expect BGR images in [0, 255] minus
the mean (104, 117, 128); preparing the input is the data pipeline's job.

Every convolution is followed by its batch norm ``<name>_bn`` and a ReLU. The final 7x7 average
pool is adaptive here, so inputs other than 224/227 work as long as the feature maps entering
the two stride-2 blocks (3c, 4e) have even sizes (as in the reference, whose branches would not
line up otherwise); :func:`bninception` checks this for the input shape it is given.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Inception blocks in order: name, 1x1, 3x3 reduce, 3x3, double 3x3 reduce, double 3x3, pool
#: kind, pool projection. A 1x1 of 0 means no 1x1 branch; a pool projection of 0 means the
#: pooled input is concatenated as it is. "max_s2" blocks halve the resolution.
_BLOCKS: list[tuple[str, int, int, int, int, int, str, int]] = [
    ("3a", 64, 64, 64, 64, 96, "avg", 32),
    ("3b", 64, 64, 96, 64, 96, "avg", 64),
    ("3c", 0, 128, 160, 64, 96, "max_s2", 0),
    ("4a", 224, 64, 96, 96, 128, "avg", 128),
    ("4b", 192, 96, 128, 96, 128, "avg", 128),
    ("4c", 160, 128, 160, 128, 160, "avg", 128),
    ("4d", 96, 128, 192, 160, 192, "avg", 128),
    ("4e", 0, 128, 192, 192, 256, "max_s2", 0),
    ("5a", 352, 192, 320, 160, 224, "avg", 128),
    ("5b", 352, 192, 320, 192, 224, "max", 128),
]

OUT_DIM = 1024


def _pool(kind: str) -> nn.Module:
    """The pooling layer of an Inception block's pool branch, as in the reference."""
    if kind == "avg":
        return nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)
    if kind == "max":
        return nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)  # "max_s2"


class BNInception(nn.Module):
    """BN-Inception feature extractor: (N, C, H, W) images to (N, 1024) pooled features.

    Layers are registered flat under their reference names; ``self.stages`` lists, per stage,
    its branches as sequences of layer names (a convolution name stands for conv, BN, ReLU).
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.stages: list[list[list[str]]] = [
            [
                [
                    self._conv("conv1_7x7_s2", in_channels, 64, 7, stride=2),
                    self._layer("pool1_3x3_s2", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
                    self._conv("conv2_3x3_reduce", 64, 64, 1),
                    self._conv("conv2_3x3", 64, 192, 3),
                    self._layer("pool2_3x3_s2", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
                ]
            ]
        ]
        channels = 192
        for name, c1, c3r, c3, cdr, cd, pool, proj in _BLOCKS:
            channels = self._add_block(
                f"inception_{name}", channels, c1, c3r, c3, cdr, cd, pool, proj
            )
        assert channels == OUT_DIM
        self.global_pool = nn.AdaptiveAvgPool2d(1)

    def _layer(self, name: str, layer: nn.Module) -> str:
        self.add_module(name, layer)
        return name

    def _conv(self, name: str, c_in: int, c_out: int, kernel: int, stride: int = 1) -> str:
        """Register conv ``name`` (with bias, as converted from Caffe) and its BN ``name_bn``."""
        self.add_module(name, nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2))
        self.add_module(f"{name}_bn", nn.BatchNorm2d(c_out))
        return name

    def _add_block(
        self, p: str, c_in: int, c1: int, c3r: int, c3: int, cdr: int, cd: int, pool: str, proj: int
    ) -> int:
        """Register one Inception block's layers; return its output channel count."""
        stride = 2 if pool == "max_s2" else 1
        branches = []
        if c1:
            branches.append([self._conv(f"{p}_1x1", c_in, c1, 1)])
        branches.append(
            [
                self._conv(f"{p}_3x3_reduce", c_in, c3r, 1),
                self._conv(f"{p}_3x3", c3r, c3, 3, stride),
            ]
        )
        branches.append(
            [
                self._conv(f"{p}_double_3x3_reduce", c_in, cdr, 1),
                self._conv(f"{p}_double_3x3_1", cdr, cd, 3),
                self._conv(f"{p}_double_3x3_2", cd, cd, 3, stride),
            ]
        )
        pool_branch = [self._layer(f"{p}_pool", _pool(pool))]
        if proj:
            pool_branch.append(self._conv(f"{p}_pool_proj", c_in, proj, 1))
        branches.append(pool_branch)
        self.stages.append(branches)
        return c1 + c3 + cd + (proj or c_in)

    def _branch(self, names: list[str], x: torch.Tensor) -> torch.Tensor:
        for name in names:
            layer = getattr(self, name)
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                x = F.relu(getattr(self, f"{name}_bn")(x), inplace=True)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for branches in self.stages:
            x = torch.cat([self._branch(names, x) for names in branches], dim=1)
        return torch.flatten(self.global_pool(x), 1)


def _pool2_size(size: int) -> int:
    """Spatial size of the stem's output (entering block 3a) for an input height or width."""
    after_conv1 = (size - 1) // 2 + 1
    after_pool1 = math.ceil((after_conv1 - 3) / 2) + 1
    return math.ceil((after_pool1 - 3) / 2) + 1


def bninception(input_shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    """BN-Inception with global average pooling; output 1024 features.

    Raises ``ValueError`` for a shape that is not an image, or whose height or width would make
    the branches of a stride-2 block disagree in size: the stem's output must be a multiple of 4
    (even when entering block 3c and again when entering 4e), at least 4.
    """
    if len(input_shape) != 3:
        raise ValueError(f"bninception needs images (C, H, W), got input shape {input_shape}")
    for size in input_shape[1:]:
        stem = _pool2_size(size)
        if stem < 4 or stem % 4:
            raise ValueError(
                f"bninception cannot take images of size {size}: the feature maps entering its "
                f"stride-2 blocks must have even sizes (e.g. 64, 96, 128, 224, 227, 256 work)"
            )
    return BNInception(input_shape[0]), OUT_DIM
