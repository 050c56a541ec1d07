"""The search's view of a dataset: class-disjoint folds over the train/val classes only."""

from __future__ import annotations

from dmlopt.config import StudyConfig
from dmlopt.data.base import MetricDataset
from dmlopt.data.splits import Fold, class_disjoint_folds, paper_split
from dmlopt.errors import DmloptError

MIN_VAL_CLASSES = 2  # MAP@R over one class is 1.0 whatever the model: no signal


def search_folds(config: StudyConfig, dataset: MetricDataset) -> list[Fold]:
    """The folds of the search; impossible splits are user errors, explained.

    Only the train/val half of the classes appears here: the test classes are reached by
    :mod:`dmlopt.study.final` alone.
    """
    trainval, _ = paper_split(dataset.num_classes)
    k = config.split.folds
    t = config.training
    classes_per_batch = t.batch_size // t.m_per_class
    n = len(trainval)
    if n // k < MIN_VAL_CLASSES:
        raise DmloptError(
            f"split: {k} folds need at least {k * MIN_VAL_CLASSES} train/val classes "
            f"({MIN_VAL_CLASSES} to validate each), the dataset has {n} "
            f"(half of its {dataset.num_classes} classes)"
        )
    folds = class_disjoint_folds(trainval, k)
    if len(folds[0][0]) < classes_per_batch:
        raise DmloptError(
            f"split: a batch of {t.batch_size} with m_per_class {t.m_per_class} needs "
            f"{classes_per_batch} training classes, a fold has {len(folds[0][0])}"
        )
    return folds
