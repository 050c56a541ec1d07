"""A dataset of one's own, implementing dmlopt's dataset protocol
(:class:`dmlopt.data.base.MetricDataset`).

Labels are listed up front, without reading a sample; a sample is made only when ``read`` asks
for it, from ``(seed, index)``, so the search, which reads train/val samples only, never makes a
test-class one. Real datasets read a file in ``read`` and list file names in ``__init__``.
"""

from __future__ import annotations

import numpy as np
import torch

from dmlopt.data.base import MetricDataset


class BlobsDataset(MetricDataset):
    """``classes`` Gaussian blobs in ``dim`` dimensions, ``per_class`` samples each."""

    def __init__(
        self, classes: int = 16, per_class: int = 8, dim: int = 8, noise: float = 0.5, seed: int = 0
    ) -> None:
        self.dim, self.noise, self.seed = dim, noise, seed
        self.class_names = [f"blob_{c:03d}" for c in range(classes)]  # sorted: the split's order
        self.labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def center(self, label: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0, label]).normal(size=self.dim)

    def read(self, index: int, *, train: bool) -> torch.Tensor:
        label = int(self.labels[index])
        noise = np.random.default_rng([self.seed, 1, index]).normal(size=self.dim)
        return torch.from_numpy((self.center(label) + self.noise * noise).astype(np.float32))

    def sample_id(self, index: int) -> str:
        return f"blobs:{self.seed}:{self.dim}:{self.noise}:{index}"
