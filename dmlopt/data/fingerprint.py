"""Fingerprints of a split: results computed on different data must never share a table.

A fingerprint hashes the class names of a split with the identities of their samples
(:meth:`~dmlopt.data.base.MetricDataset.sample_id`), so a reproduction on a copy of the data
elsewhere matches, and a changed, added or removed sample does not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from dmlopt.data.base import MetricDataset
from dmlopt.data.splits import Fold

DIGITS = 16  # 64 bits: plenty to tell datasets apart, short enough to read in a table


def _update(digest: Any, dataset: MetricDataset, classes: Sequence[int]) -> None:
    indices = dataset.indices_of(classes)
    # class by class (ids follow the sorted class names), samples in dataset order within each
    indices = indices[np.argsort(dataset.labels[indices], kind="stable")]
    current = None
    for index in indices.tolist():
        label = int(dataset.labels[index])
        if label != current:
            digest.update(f"class {dataset.class_names[label]}\n".encode())
            current = label
        digest.update(f"{dataset.sample_id(index)}\n".encode())


def split_fingerprint(dataset: MetricDataset, classes: Sequence[int]) -> str:
    """The fingerprint of the samples of ``classes`` (in any order)."""
    digest = hashlib.sha256()
    _update(digest, dataset, classes)
    return digest.hexdigest()[:DIGITS]


def folds_fingerprint(dataset: MetricDataset, folds: Sequence[Fold]) -> str:
    """The fingerprint of the train/val folds: each fold's train and val samples, in order."""
    digest = hashlib.sha256()
    for i, (train, val) in enumerate(folds):
        digest.update(f"fold {i} train\n".encode())
        _update(digest, dataset, train)
        digest.update(f"fold {i} val\n".encode())
        _update(digest, dataset, val)
    return digest.hexdigest()[:DIGITS]
