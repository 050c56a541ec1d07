"""ResNet-50 (He et al. 2016) in plain torch, with torchvision's state-dict key names.

Keys are ``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``layer4.2.bn3`` and
``layerN.0.downsample.{0,1}``, so a torchvision ``resnet50`` state dict loads with
:func:`dmlopt.models.pretrained.load_pretrained` (its classifier ``fc`` is dropped). As in
torchvision (ResNet v1.5), a block's stride sits on its 3x3 convolution.
"""

from __future__ import annotations

import torch
from torch import nn

#: (bottleneck width, number of blocks, stride of the first block) for layer1..layer4.
_LAYERS = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]
_EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand, each with BN; identity or projected shortcut."""

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * _EXPANSION
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50(nn.Module):
    """ResNet-50 feature extractor: (N, C, H, W) images to (N, 2048) pooled features."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for i, (width, blocks, stride) in enumerate(_LAYERS, start=1):
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(channels, width, stride if b == 0 else 1))
                channels = width * _EXPANSION
            self.add_module(f"layer{i}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = channels
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, len(_LAYERS) + 1):
            x = getattr(self, f"layer{i}")(x)
        return torch.flatten(self.avgpool(x), 1)


def resnet50(input_shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    """ResNet-50 with global average pooling; output 2048 features."""
    if len(input_shape) != 3:
        raise ValueError(f"resnet50 needs images (C, H, W), got input shape {input_shape}")
    trunk = ResNet50(input_shape[0])
    return trunk, trunk.out_dim
