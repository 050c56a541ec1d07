"""Datasets of the user's own: a :class:`~dmlopt.data.base.MetricDataset` subclass, built with
the study file's dataset keys as keyword arguments, and checked before anything runs."""

from __future__ import annotations

import inspect

import numpy as np

from dmlopt.config import UserData
from dmlopt.data.base import MetricDataset
from dmlopt.errors import DmloptError
from dmlopt.plugins import check_call, import_path_of, load


def user_dataset_class(config: UserData) -> type[MetricDataset]:
    """The class ``config.name`` names, checked to be a MetricDataset taking its options."""
    path = import_path_of("dataset", config.name)
    what = f"dataset {path}"
    cls = load(path, what)
    if not (inspect.isclass(cls) and issubclass(cls, MetricDataset)):
        raise DmloptError(f"{what}: not a subclass of dmlopt.data.base.MetricDataset")
    check_call(cls, (), config.options, what)
    return cls


def open_user_dataset(config: UserData) -> MetricDataset:
    """The user's dataset, its labels checked as dmlopt needs them."""
    cls = user_dataset_class(config)
    what = f"dataset {config.name}"
    dataset = cls(**config.options)
    labels = np.asarray(getattr(dataset, "labels", None))
    names = getattr(dataset, "class_names", None)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DmloptError(f"{what}: labels must be a 1-d integer array, got {labels!r:.80}")
    if not isinstance(names, list) or not names:
        raise DmloptError(f"{what}: class_names must be a non-empty list of class names")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise DmloptError(f"{what}: labels must be class indices in 0..{len(names) - 1}")
    return dataset
