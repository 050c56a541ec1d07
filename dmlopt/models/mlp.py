"""A multilayer perceptron trunk for precomputed features (the ``npz`` dataset)."""

from __future__ import annotations

from torch import nn


def mlp(input_shape: tuple[int, ...], hidden: int = 256) -> tuple[nn.Module, int]:
    """Two hidden layers with BatchNorm and ReLU."""
    if len(input_shape) != 1:
        raise ValueError(f"mlp needs feature vectors (d,), got input shape {input_shape}")
    trunk = nn.Sequential(
        nn.Linear(input_shape[0], hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
    )
    return trunk, hidden
