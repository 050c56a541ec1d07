"""Class splits: the paper's test split and its class-disjoint folds (docs/protocol.md).

The golden sizes and ranges of CUB-200-2011, Cars196 and Stanford Online Products are written out
here by hand from the protocol's table, not recomputed with the package's own arithmetic.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from dmlopt.config import parse_study
from dmlopt.data import open_dataset
from dmlopt.data.splits import class_disjoint_folds, paper_split
from dmlopt.errors import DmloptError
from dmlopt.study.cross_validation import search_folds
from tests.conftest import TINY_STUDY, deep_update


def _span(first: int, last: int) -> list[int]:
    """The classes ``first..last``, both included."""
    return list(range(first, last + 1))


# dataset -> (train/val classes, train per fold, val per fold, val range per fold, never val)
GOLDEN: dict[str, tuple[int, int, int, list[tuple[int, int]], set[int]]] = {
    "cub200": (100, 75, 25, [(75, 99), (0, 24), (25, 49), (50, 74)], set()),
    "cars196": (98, 74, 24, [(74, 97), (0, 23), (25, 48), (49, 72)], {24, 73}),
    "sop": (
        11317,
        8488,
        2829,
        [(8488, 11316), (0, 2828), (2829, 5657), (5658, 8486)],
        {8487},
    ),
}


# --------------------------------------------------------------------------- golden values
@pytest.mark.parametrize("dataset", list(GOLDEN))
def test_golden_fold_sizes(dataset: str) -> None:
    n, n_train, n_val, _, _ = GOLDEN[dataset]
    folds = class_disjoint_folds(list(range(n)), 4)
    assert len(folds) == 4
    assert [len(train) for train, _ in folds] == [n_train] * 4
    assert [len(val) for _, val in folds] == [n_val] * 4


@pytest.mark.parametrize("dataset", list(GOLDEN))
def test_golden_val_ranges(dataset: str) -> None:
    n, _, _, ranges, _ = GOLDEN[dataset]
    folds = class_disjoint_folds(list(range(n)), 4)
    for p, ((first, last), (_, val)) in enumerate(zip(ranges, folds, strict=True)):
        assert val == _span(first, last), f"fold {p}"


@pytest.mark.parametrize("dataset", list(GOLDEN))
def test_golden_never_val(dataset: str) -> None:
    n, _, _, _, never = GOLDEN[dataset]
    folds = class_disjoint_folds(list(range(n)), 4)
    validated = set().union(*(set(val) for _, val in folds))
    assert set(range(n)) - validated == never


@pytest.mark.parametrize("dataset", list(GOLDEN))
def test_golden_train_is_the_wraparound_complement(dataset: str) -> None:
    """Fold p trains on the classes that follow its val range, wrapping around."""
    n, n_train, _, ranges, _ = GOLDEN[dataset]
    folds = class_disjoint_folds(list(range(n)), 4)
    for (_, last), (train, _) in zip(ranges, folds, strict=True):
        assert train == [(last + 1 + i) % n for i in range(n_train)]


def test_cub_fold_1_by_hand() -> None:
    """CUB fold 1 starts at class 25: train 25..99, val 0..24."""
    train, val = class_disjoint_folds(list(range(100)), 4)[1]
    assert train == _span(25, 99)
    assert val == _span(0, 24)


def test_cars_fold_3_by_hand() -> None:
    """Cars fold 3 starts at int(3 * 98 / 4) = 73: train 73..97 then 0..48, val 49..72."""
    train, val = class_disjoint_folds(list(range(98)), 4)[3]
    assert train == _span(73, 97) + _span(0, 48)
    assert val == _span(49, 72)


@pytest.mark.parametrize(
    ("num_classes", "n_trainval"),
    [(200, 100), (196, 98), (22634, 11317)],
)
def test_paper_split_golden(num_classes: int, n_trainval: int) -> None:
    trainval, test = paper_split(num_classes)
    assert trainval == list(range(n_trainval))
    assert test == list(range(n_trainval, num_classes))


@pytest.mark.parametrize(("num_classes", "n_trainval", "n_test"), [(7, 4, 3), (5, 3, 2), (2, 1, 1)])
def test_paper_split_odd_count_keeps_extra_class_in_trainval(
    num_classes: int, n_trainval: int, n_test: int
) -> None:
    trainval, test = paper_split(num_classes)
    assert (len(trainval), len(test)) == (n_trainval, n_test)
    assert trainval + test == list(range(num_classes))


@pytest.mark.parametrize("dataset", list(GOLDEN))
def test_paper_split_then_folds_never_touch_test(dataset: str) -> None:
    num_classes = {"cub200": 200, "cars196": 196, "sop": 22634}[dataset]
    trainval, test = paper_split(num_classes)
    test_set = set(test)
    for train, val in class_disjoint_folds(trainval, 4):
        assert not test_set & set(train)
        assert not test_set & set(val)


# --------------------------------------------------------------------------- invariants
_RNG = random.Random(1234)
INVARIANT_CASES = [(n, k) for n in (2, 3, 7, 10, 16, 33, 98, 100, 101) for k in (2, 3, 4, 5, 7)]
INVARIANT_CASES = [(n, k) for n, k in INVARIANT_CASES if n >= k]
INVARIANT_CASES += [(_RNG.randint(10, 3000), _RNG.randint(2, 9)) for _ in range(12)]


def _check_invariants(classes: list[int], n_folds: int, test_classes: set[int]) -> None:
    folds = class_disjoint_folds(classes, n_folds)
    everything = sorted(classes)
    n = len(everything)
    assert len(folds) == n_folds
    vals = [set(val) for _, val in folds]
    for i in range(n_folds):
        for j in range(i + 1, n_folds):
            assert not vals[i] & vals[j], f"folds {i} and {j} share val classes"
    for p, (train, val) in enumerate(folds):
        assert not set(train) & set(val), f"fold {p}: train and val overlap"
        assert sorted(train + val) == everything, f"fold {p}: train + val is not every class"
        assert len(val) == n // n_folds
        assert len(train) == n - n // n_folds
        assert not (set(train) | set(val)) & test_classes
    # fold p validates the contiguous (wrapping) block of sorted classes just before its start
    for p, (_, val) in enumerate(folds):
        start = int(p * n / n_folds)
        expected = [everything[(start - len(val) + i) % n] for i in range(len(val))]
        assert val == expected, f"fold {p}"


@pytest.mark.parametrize(("n", "n_folds"), INVARIANT_CASES)
def test_invariants_contiguous_ids(n: int, n_folds: int) -> None:
    _check_invariants(list(range(n)), n_folds, test_classes=set(range(n, 2 * n)))


@pytest.mark.parametrize(("n", "n_folds"), INVARIANT_CASES)
def test_invariants_shuffled_sparse_ids(n: int, n_folds: int) -> None:
    rng = random.Random(n * 31 + n_folds)
    ids = rng.sample(range(10 * n + 10), n)  # unsorted, non-contiguous, distinct
    rest = set(range(10 * n + 10)) - set(ids)
    _check_invariants(ids, n_folds, test_classes=rest)


def test_unsorted_sparse_ids_are_mapped_through_the_sorted_input() -> None:
    ids = [10, 3, 7, 42, 1, 99, 5, 20]
    # sorted: 1 3 5 7 10 20 42 99; n = 8, 2 folds: val 4 classes, fold 1 starts at index 4
    folds = class_disjoint_folds(ids, 2)
    assert folds == [
        ([1, 3, 5, 7], [10, 20, 42, 99]),
        ([10, 20, 42, 99], [1, 3, 5, 7]),
    ]


def test_unsorted_ids_match_positions_of_sorted_ids() -> None:
    rng = random.Random(7)
    ids = rng.sample(range(1000, 5000), 37)
    ordered = sorted(ids)
    by_position = class_disjoint_folds(list(range(37)), 4)
    expected = [([ordered[i] for i in t], [ordered[i] for i in v]) for t, v in by_position]
    assert class_disjoint_folds(ids, 4) == expected


def test_input_is_not_mutated() -> None:
    ids = [5, 2, 9, 1, 7, 3]
    class_disjoint_folds(ids, 3)
    assert ids == [5, 2, 9, 1, 7, 3]


def test_default_is_four_folds() -> None:
    assert len(class_disjoint_folds(list(range(100)))) == 4


def test_fold_order_is_deterministic() -> None:
    ids = list(range(57))
    assert class_disjoint_folds(ids, 4) == class_disjoint_folds(list(reversed(ids)), 4)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("n_folds", [1, 0, -3])
def test_too_few_folds(n_folds: int) -> None:
    with pytest.raises(ValueError, match="at least 2 folds"):
        class_disjoint_folds(list(range(10)), n_folds)


@pytest.mark.parametrize(("n", "n_folds"), [(3, 4), (0, 2), (1, 2), (9, 10)])
def test_more_folds_than_classes(n: int, n_folds: int) -> None:
    with pytest.raises(ValueError, match=f"{n_folds} folds"):
        class_disjoint_folds(list(range(n)), n_folds)


def test_as_many_folds_as_classes_is_fine() -> None:
    folds = class_disjoint_folds([4, 8, 6], 3)
    assert [val for _, val in folds] == [[8], [4], [6]]


# --------------------------------------------------------------------------- search_folds
def _study(changes: dict[str, Any]) -> Any:
    return parse_study(deep_update(copy.deepcopy(TINY_STUDY), changes))


def test_search_folds_tiny_study() -> None:
    config = _study({})
    dataset = open_dataset(config.dataset)
    folds = search_folds(config, dataset)
    # 16 classes: 0..7 train/val, 8..15 test; 2 folds of 4 train / 4 val classes
    assert folds == [([0, 1, 2, 3], [4, 5, 6, 7]), ([4, 5, 6, 7], [0, 1, 2, 3])]


def test_search_folds_never_contain_test_classes() -> None:
    config = _study({"dataset": {"classes": 30}, "split": {"folds": 3}})
    dataset = open_dataset(config.dataset)
    folds = search_folds(config, dataset)
    assert len(folds) == 3
    seen = set().union(*(set(t) | set(v) for t, v in folds))
    assert seen == set(range(15))


def test_search_folds_too_many_folds_for_classes() -> None:
    config = _study({"dataset": {"classes": 6}, "split": {"folds": 4}})
    dataset = open_dataset(config.dataset)
    with pytest.raises(DmloptError) as info:
        search_folds(config, dataset)
    message = str(info.value)
    assert "\n" not in message
    assert "4 folds" in message
    assert "3" in message  # the dataset's train/val classes
    assert "6 classes" in message


def test_search_folds_one_val_class_per_fold_is_refused() -> None:
    """8 train/val classes in 5 folds leave one val class each: MAP@R would carry no signal."""
    config = _study({"split": {"folds": 5}})
    dataset = open_dataset(config.dataset)
    with pytest.raises(DmloptError, match="5 folds"):
        search_folds(config, dataset)


def test_search_folds_batch_needs_more_classes_than_a_fold_has() -> None:
    # batch 16 with m_per_class 2 needs 8 classes; a tiny fold trains on 4
    config = _study({"training": {"batch_size": 16, "m_per_class": 2}})
    dataset = open_dataset(config.dataset)
    with pytest.raises(DmloptError) as info:
        search_folds(config, dataset)
    message = str(info.value)
    assert "\n" not in message
    assert "16" in message
    assert "8 training classes" in message
    assert "has 4" in message


def test_search_folds_batch_exactly_fitting_a_fold_is_fine() -> None:
    config = _study({"training": {"batch_size": 8, "m_per_class": 2}})
    folds = search_folds(config, open_dataset(config.dataset))
    assert all(len(train) == 4 for train, _ in folds)
