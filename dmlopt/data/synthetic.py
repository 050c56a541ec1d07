"""The built-in dataset: small grayscale images generated from a seed, no download.

Each class is a random smooth prototype; each sample is that prototype under a random affine
deformation (rotation, scale, shear, shift), a random contrast, and pixel noise. Pixel distance
between two deformed samples of one class is large, so an untrained network retrieves poorly
and a learned embedding has something to learn.

Samples are generated on demand from ``(seed, index)``: a sample that is never read is never
made, which keeps the test classes untouched during the search.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from dmlopt.config import SyntheticData
from dmlopt.data.base import MetricDataset
from dmlopt.seeding import derive_seed

_PROTOTYPE_GRID = 5  # coarse random field size: fewer cells give smoother, blob-like shapes
_PROTOTYPE, _SAMPLE = 0, 1  # streams of random numbers, kept apart
# Generated samples are kept (they depend on (seed, index) alone) while the whole dataset would
# fit in this many bytes: generating one costs as much CPU as a small model's step on it.
CACHE_BYTES = 512 * 2**20


def _generator(seed: int, stream: int, key: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, stream, key))


class SyntheticDataset(MetricDataset):
    def __init__(self, config: SyntheticData) -> None:
        self.config = config
        self.class_names = [f"class_{c:04d}" for c in range(config.classes)]
        self.labels = np.repeat(np.arange(config.classes, dtype=np.int64), config.per_class)
        sample_bytes = 4 * config.image_size**2  # one float32 channel; channels are repeats
        self._cache: dict[int, torch.Tensor] | None = (
            {} if len(self.labels) * sample_bytes <= CACHE_BYTES else None
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.config.channels, self.config.image_size, self.config.image_size)

    @lru_cache(maxsize=4096)  # noqa: B019  (one cache per dataset lifetime is the intent)
    def prototype(self, label: int) -> torch.Tensor:
        """The class's noiseless image, shape ``(1, 1, S, S)`` in ``[-1, 1]``."""
        g = _generator(self.config.seed, _PROTOTYPE, label)
        coarse = torch.randn(1, 1, _PROTOTYPE_GRID, _PROTOTYPE_GRID, generator=g)
        size = self.config.image_size
        field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        return torch.tanh(2.0 * field / field.std())

    def sample_id(self, index: int) -> str:
        c = self.config
        return f"synthetic:{c.seed}:{c.image_size}:{c.channels}:{index}"

    def read(self, index: int, *, train: bool) -> torch.Tensor:
        # train or not, a sample is the same: the deformations are the dataset, not augmentation
        if self._cache is None:
            return self._generate(index).expand(self.config.channels, -1, -1)
        image = self._cache.get(index)
        if image is None:
            image = self._cache[index] = self._generate(index)
        return image.expand(self.config.channels, -1, -1)

    def _generate(self, index: int) -> torch.Tensor:
        """Sample ``index`` as one channel, ``(1, S, S)``; only ever called for samples read."""
        label = int(self.labels[index])
        g = _generator(self.config.seed, _SAMPLE, index)
        u = torch.rand(7, generator=g)
        angle = (u[0] - 0.5) * math.radians(60)
        scale = 0.8 + 0.4 * u[1]
        shear = (u[2] - 0.5) * 0.4
        shift = (u[3:5] - 0.5) * 0.5
        cos, sin = math.cos(angle), math.sin(angle)
        theta = torch.tensor(
            [[cos / scale, -sin / scale + shear, shift[0]], [sin / scale, cos / scale, shift[1]]]
        ).unsqueeze(0)
        proto = self.prototype(label)
        grid = F.affine_grid(theta, list(proto.shape), align_corners=False)
        image = F.grid_sample(proto, grid, padding_mode="zeros", align_corners=False)[0]
        contrast = 0.6 + 0.8 * u[5]
        noise = torch.randn(image.shape, generator=g) * (0.3 + 0.3 * u[6])
        return contrast * image + noise
