"""A small convolutional trunk for the built-in dataset and other small images."""

from __future__ import annotations

import itertools

from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def small_cnn(input_shape: tuple[int, ...], width: int = 16) -> tuple[nn.Module, int]:
    """Four conv-BN-ReLU-pool blocks and global average pooling; output ``4 * width`` features."""
    if len(input_shape) != 3:
        raise ValueError(f"small_cnn needs images (C, H, W), got input shape {input_shape}")
    if min(input_shape[1:]) < 16:  # four 2x2 poolings
        raise ValueError(f"small_cnn needs images of at least 16x16, got {input_shape}")
    channels = [input_shape[0], width, 2 * width, 4 * width, 4 * width]
    blocks = [_block(a, b) for a, b in itertools.pairwise(channels)]
    trunk = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return trunk, channels[-1]
