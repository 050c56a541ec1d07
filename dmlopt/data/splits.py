"""Class splits: the paper's test split and its class-disjoint k-fold cross-validation.

Exactly the arithmetic of the paper's reference implementation (docs/protocol.md): contiguous,
wrap-around ranges of the sorted train/val classes, no shuffle, no seed.
"""

from __future__ import annotations

from collections.abc import Sequence

Fold = tuple[list[int], list[int]]


def paper_split(num_classes: int) -> tuple[list[int], list[int]]:
    """(train/val classes, test classes): the first half of the sorted classes, then the rest.

    The test half has ``int(0.5 * n)`` classes, as the reference code computes it, so an odd
    class count leaves the extra class in train/val.
    """
    n_test = int(0.5 * num_classes)
    cut = num_classes - n_test
    return list(range(cut)), list(range(cut, num_classes))


def class_disjoint_folds(trainval_classes: Sequence[int], n_folds: int = 4) -> list[Fold]:
    """``(train_classes, val_classes)`` per fold, in fold order.

    Over the ``n`` sorted train/val classes, fold ``p`` starts at ``int(p * n / n_folds)``; the
    next ``n - n // n_folds`` classes (wrapping around) train and the following ``n // n_folds``
    validate. Val sets of different folds are pairwise disjoint.
    """
    classes = sorted(int(c) for c in trainval_classes)
    n = len(classes)
    if len(set(classes)) != n:
        raise ValueError("train/val classes must be distinct")
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    n_val = n // n_folds
    if n_val < 1:
        raise ValueError(f"{n_folds} folds need at least {n_folds} train/val classes, got {n}")
    n_train = n - n_val
    folds = []
    for p in range(n_folds):
        start = int(p * n / n_folds)
        order = [classes[(start + i) % n] for i in range(n)]
        folds.append((order[:n_train], order[n_train:]))
    return folds
