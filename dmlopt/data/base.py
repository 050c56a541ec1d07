"""What every dataset adapter provides: labels up front, samples only when read.

Listing a dataset (its labels, its file names) never reads a sample. A sample is decoded,
generated or loaded only in :meth:`MetricDataset.read`, so the search, which only ever reads
train/val indices, cannot touch a test-class sample.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dmlopt.errors import DmloptError


class BadSample(DmloptError):
    """A sample that cannot be read (a corrupt image, say), named by its file."""


class MetricDataset(ABC):
    """Labels are class indices into ``class_names``, which are sorted as the paper sorts them."""

    labels: np.ndarray
    class_names: list[str]

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample as the trunk receives it: ``(C, H, W)`` or ``(d,)``."""

    @abstractmethod
    def read(self, index: int, *, train: bool) -> torch.Tensor:
        """Sample ``index``, with training augmentation when ``train``."""

    def sample_id(self, index: int) -> str:
        """What identifies sample ``index`` wherever the dataset lives, for fingerprints of a
        split (:mod:`dmlopt.data.fingerprint`); adapters name the file or the generator."""
        return str(index)

    def check_samples(self, indices: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Refuse samples that cannot be used, found without decoding (non-finite features,
        say), with a :class:`BadSample` naming them. Images are only checked when read."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def indices_of(self, classes: Sequence[int]) -> np.ndarray:
        """Indices of every sample whose class is in ``classes``."""
        return np.flatnonzero(np.isin(self.labels, np.asarray(classes)))

    def view(self, classes: Sequence[int], *, train: bool) -> Samples:
        """The samples of ``classes`` as a torch dataset, labels renumbered ``0..len(classes)-1``
        in the order given (losses with per-class parameters size them to the fold's classes)."""
        return Samples(self, classes, train=train)


class Samples(Dataset[tuple[torch.Tensor, int]]):
    """A class subset of a :class:`MetricDataset`."""

    def __init__(self, dataset: MetricDataset, classes: Sequence[int], *, train: bool) -> None:
        self.dataset = dataset
        self.train = train
        self.indices = dataset.indices_of(classes)
        dataset.check_samples(self.indices)
        lookup = {int(c): i for i, c in enumerate(classes)}
        self.labels = np.array(
            [lookup[int(c)] for c in dataset.labels[self.indices]], dtype=np.int64
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.dataset.read(int(self.indices[i]), train=self.train), int(self.labels[i])


def encode_labels(classes: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
    """Per-sample class (names or numbers) -> (class indices, class names in sorted order).

    Numbers sort numerically and names as text, as the datasets' official class orders do."""
    ordered = sorted(set(classes))
    index = {c: i for i, c in enumerate(ordered)}
    return np.array([index[c] for c in classes], dtype=np.int64), [str(c) for c in ordered]
