"""A trunk of one's own: a factory of the input shape returning a torch module (dmlopt measures
its output width; returning ``(module, width)`` works too)."""

from __future__ import annotations

import math

from torch import nn


def tiny_mlp(input_shape: tuple[int, ...], hidden: int = 64) -> nn.Module:
    """Flatten, then two linear layers with a ReLU."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
    )
