"""Retrieval metrics: MAP@R, R-Precision and P@1.

Three independent references: pytorch-metric-learning's ``AccuracyCalculator``, a brute-force
numpy implementation written here, and small cases computed by hand in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from dmlopt.metrics import retrieval_scores
from dmlopt.metrics.knn import nearest

KEYS = ("map_at_r", "r_precision", "precision_at_1")
PML_KEYS = {
    "map_at_r": "mean_average_precision_at_r",
    "r_precision": "r_precision",
    "precision_at_1": "precision_at_1",
}


def _column(values: list[float]) -> np.ndarray:
    """1-D embeddings: points on a line, shape (n, 1)."""
    return np.asarray(values, dtype=np.float32)[:, None]


def _clustered(
    seed: int, n: int, dim: int, n_classes: int, spread: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes around random centres: mid-range scores, not near 0 or 1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = rng.integers(0, n_classes, n)
    x = centres[labels] + spread * rng.normal(size=(n, dim))
    return x.astype(np.float32), labels


def _untied(seed: int, n: int, n_classes: int, dim: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Clustered integer points whose squared distances are exact in float32 and tie-free.

    Coordinates within +-2000 in 4-D keep every norm and dot product below 2**24, so faiss's
    float32 distances are exact; a draw where any query has two equally distant reference rows
    is rejected, so the ranking is unique and a brute force must agree with it exactly.
    """
    for attempt in range(100):
        rng = np.random.default_rng([seed, attempt])
        centres = rng.integers(-1200, 1201, size=(n_classes, dim))
        labels = rng.integers(0, n_classes, n)
        noise = np.rint(500 * rng.normal(size=(n, dim))).astype(np.int64)
        x = np.clip(centres[labels] + noise, -2000, 2000)
        sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        if not (np.diff(np.sort(sq, axis=1), axis=1) == 0).any():
            return x.astype(np.float32), labels
    raise AssertionError("no tie-free draw found")  # pragma: no cover


def _pml(
    query: np.ndarray,
    query_labels: np.ndarray,
    reference: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
) -> dict[str, float]:
    calculator = AccuracyCalculator(
        include=("mean_average_precision_at_r", "r_precision", "precision_at_1"),
        k="max_bin_count",
    )
    if reference is None:
        result = calculator.get_accuracy(query, query_labels)
    else:
        result = calculator.get_accuracy(query, query_labels, reference, reference_labels)
    return {key: float(result[PML_KEYS[key]]) for key in KEYS}


def _brute_force(
    query: np.ndarray,
    query_labels: np.ndarray,
    reference: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
) -> dict[str, float]:
    """The protocol's definitions, one query at a time, from a full distance matrix."""
    same_set = reference is None
    ref = query if same_set else reference
    ref_labels = query_labels if same_set else reference_labels
    q = query.astype(np.float64)
    r = ref.astype(np.float64)
    dist = ((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)
    per_query: dict[str, list[float]] = {key: [] for key in KEYS}
    for i in range(len(q)):
        order = np.argsort(dist[i], kind="stable")
        if same_set:
            order = order[order != i]
        ranked = ref_labels[order] == query_labels[i]
        big_r = int((ref_labels == query_labels[i]).sum()) - int(same_set)
        if big_r == 0:
            continue
        rel = ranked[:big_r]
        precision_at = np.cumsum(rel) / np.arange(1, big_r + 1)
        per_query["map_at_r"].append(float((precision_at * rel).sum() / big_r))
        per_query["r_precision"].append(float(rel.sum() / big_r))
        per_query["precision_at_1"].append(float(ranked[0]))
    if not per_query["map_at_r"]:
        return dict.fromkeys(KEYS, 0.0)
    return {key: float(np.mean(v)) for key, v in per_query.items()}


def _assert_close(actual: dict[str, float], expected: dict[str, float], tol: float = 1e-6) -> None:
    for key in KEYS:
        assert actual[key] == pytest.approx(expected[key], abs=tol), key


# ------------------------------------------------------------------- pytorch-metric-learning
PML_CASES = [
    # seed, n queries, dim, classes, spread
    (0, 60, 4, 5, 1.0),
    (1, 200, 8, 20, 0.8),
    (2, 300, 16, 40, 1.5),
    (3, 150, 2, 3, 0.5),
    (4, 500, 32, 100, 1.0),
]


@pytest.mark.parametrize(("seed", "n", "dim", "n_classes", "spread"), PML_CASES)
def test_agrees_with_pml_query_is_reference(
    seed: int, n: int, dim: int, n_classes: int, spread: float
) -> None:
    x, y = _clustered(seed, n, dim, n_classes, spread)
    expected = _pml(x, y)
    assert 0.05 < expected["map_at_r"] < 0.95  # a case that can tell implementations apart
    _assert_close(retrieval_scores(x, y), expected)


@pytest.mark.parametrize(("seed", "n", "dim", "n_classes", "spread"), PML_CASES)
def test_agrees_with_pml_separate_reference(
    seed: int, n: int, dim: int, n_classes: int, spread: float
) -> None:
    rng = np.random.default_rng(seed + 100)
    x, y = _clustered(seed, n + n // 2, dim, n_classes, spread)
    cut = rng.permutation(len(x))
    query, ref = cut[: n // 2], cut[n // 2 :]
    # some query classes missing from the reference, some reference classes not queried
    ref = ref[y[ref] != 0]
    query = query[y[query] != n_classes - 1]
    expected = _pml(x[query], y[query], x[ref], y[ref])
    actual = retrieval_scores(x[query], y[query], reference=x[ref], reference_labels=y[ref])
    _assert_close(actual, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_pml_duplicate_embeddings(seed: int) -> None:
    """Many identical rows across different labels: ties everywhere, self excluded by index."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(240, 2)).astype(np.float32)  # only 9 distinct points
    y = rng.integers(0, 6, 240)
    _assert_close(retrieval_scores(x, y), _pml(x, y))
    ref_x = rng.integers(0, 3, size=(100, 2)).astype(np.float32)
    ref_y = rng.integers(0, 6, 100)
    _assert_close(
        retrieval_scores(x, y, reference=ref_x, reference_labels=ref_y),
        _pml(x, y, ref_x, ref_y),
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_pml_with_singleton_classes(seed: int) -> None:
    x, y = _clustered(seed, 120, 8, 10, 1.0)
    y = y.copy()
    y[:30] = np.arange(1000, 1030)  # 30 classes of a single sample each
    expected = _pml(x, y)
    _assert_close(retrieval_scores(x, y), expected)


# --------------------------------------------------------------------------- brute force
BRUTE_CASES = [(0, 40, 3), (1, 80, 6), (2, 120, 10), (3, 60, 30), (4, 100, 2)]


@pytest.mark.parametrize(("seed", "n", "n_classes"), BRUTE_CASES)
def test_agrees_with_brute_force_query_is_reference(seed: int, n: int, n_classes: int) -> None:
    x, y = _untied(seed, n, n_classes)
    _assert_close(retrieval_scores(x, y), _brute_force(x, y), tol=1e-12)


@pytest.mark.parametrize(("seed", "n", "n_classes"), BRUTE_CASES)
def test_agrees_with_brute_force_separate_reference(seed: int, n: int, n_classes: int) -> None:
    x, y = _untied(seed, n, n_classes)
    half = n // 3
    query, query_labels, ref, ref_labels = x[:half], y[:half], x[half:], y[half:]
    actual = retrieval_scores(query, query_labels, reference=ref, reference_labels=ref_labels)
    expected = _brute_force(query, query_labels, ref, ref_labels)
    _assert_close(actual, expected, tol=1e-12)


def test_brute_force_matches_the_hand_computed_line() -> None:
    """The reference implementation itself reproduces the hand-computed case below."""
    x = _column([0, 1, 3, 7, 15])
    y = np.array([0, 0, 1, 0, 1])
    assert _brute_force(x, y) == pytest.approx(
        {"map_at_r": 0.25, "r_precision": 0.3, "precision_at_1": 0.4}
    )


# --------------------------------------------------------------------------- by hand
def test_points_on_a_line() -> None:
    # positions 0, 1, 3, 7, 15 (every pairwise distance differs), labels A A B A B.
    # k = largest class (3) - 1 = 2.
    # q0 (0, A):  R = 2; neighbours 1 (A, d=1), 3 (B, d=3) -> rel 1 0
    #             MAP = (1/2)(1/1) = 0.5, RP = 1/2, P@1 = 1
    # q1 (1, A):  R = 2; neighbours 0 (A, d=1), 3 (B, d=2) -> rel 1 0
    #             MAP = 0.5, RP = 0.5, P@1 = 1
    # q2 (3, B):  R = 1; nearest 1 (A, d=2) -> MAP 0, RP 0, P@1 0
    # q3 (7, A):  R = 2; neighbours 3 (B, d=4), 1 (A, d=6) -> rel 0 1
    #             MAP = (1/2)(P@2 = 1/2) = 0.25, RP = 0.5, P@1 = 0
    # q4 (15, B): R = 1; nearest 7 (A, d=8) -> 0, 0, 0
    # means over 5 queries: MAP = 1.25/5 = 0.25, RP = 1.5/5 = 0.3, P@1 = 2/5 = 0.4
    x = _column([0, 1, 3, 7, 15])
    y = np.array([0, 0, 1, 0, 1])
    scores = retrieval_scores(x, y)
    assert scores["map_at_r"] == pytest.approx(0.25)
    assert scores["r_precision"] == pytest.approx(0.3)
    assert scores["precision_at_1"] == pytest.approx(0.4)


def test_one_relevant_at_rank_1_of_r_5_gives_map_0_2() -> None:
    # The golden MAP@R case. Query at 0 (class A). Reference: A at 1; B at 2, 3, 4, 5;
    # A at 10, 11, 12, 13. R = 5 (the reference's A items), k = largest class = 5.
    # The 5 nearest are A B B B B -> rel 1 0 0 0 0.
    # MAP@R = (1/5) * (P@1 * 1) = 0.2; R-Precision = 1/5 = 0.2; P@1 = 1.
    query = _column([0])
    reference = _column([1, 2, 3, 4, 5, 10, 11, 12, 13])
    ref_labels = np.array([0, 1, 1, 1, 1, 0, 0, 0, 0])
    scores = retrieval_scores(
        query, np.array([0]), reference=reference, reference_labels=ref_labels
    )
    assert scores["map_at_r"] == pytest.approx(0.2)
    assert scores["r_precision"] == pytest.approx(0.2)
    assert scores["precision_at_1"] == pytest.approx(1.0)


def test_one_relevant_at_rank_5_of_r_5() -> None:
    # As above with the relevant item moved to rank 5: B at 1, 2, 3, 4; A at 5; A at 10..13.
    # rel 0 0 0 0 1 -> MAP@R = (1/5) * (P@5 = 1/5) = 0.04; R-Precision 0.2; P@1 0.
    query = _column([0])
    reference = _column([1, 2, 3, 4, 5, 10, 11, 12, 13])
    ref_labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    scores = retrieval_scores(
        query, np.array([0]), reference=reference, reference_labels=ref_labels
    )
    assert scores["map_at_r"] == pytest.approx(0.04)
    assert scores["r_precision"] == pytest.approx(0.2)
    assert scores["precision_at_1"] == pytest.approx(0.0)


def test_map_at_r_rewards_order_within_r() -> None:
    # Query at 0 (A), R = 3. Reference: A at 1, B at 2, A at 3, A at 9, B at 20.
    # top 3: A B A -> rel 1 0 1; MAP = (1/3)(1/1 + 2/3) = 5/9; RP = 2/3; P@1 = 1.
    query = _column([0])
    reference = _column([1, 2, 3, 9, 20])
    ref_labels = np.array([0, 1, 0, 0, 1])
    scores = retrieval_scores(
        query, np.array([0]), reference=reference, reference_labels=ref_labels
    )
    assert scores["map_at_r"] == pytest.approx(5 / 9)
    assert scores["r_precision"] == pytest.approx(2 / 3)
    assert scores["precision_at_1"] == pytest.approx(1.0)


def test_self_excluded_by_index_and_a_duplicate_counts_as_neighbour() -> None:
    # idx: 0 at 0 (A), 1 at 0 (B, an exact duplicate of 0), 2 at 10 (A), 3 at 11 (B), 4 at 13 (A).
    # Class sizes A 3, B 2 -> k = 2.
    # q0 (A): R = 2; itself removed by index, the duplicate 1 (B, d=0) stays: 1 (B), 2 (A)
    #         -> rel 0 1: MAP = (1/2)(1/2) = 0.25, RP 0.5, P@1 0.
    #         (Dropping the duplicate too would give A at rank 1, MAP 0.5 and P@1 1; dropping
    #         "the first hit" could leave q0 itself in its list.)
    # q1 (B): R = 1; nearest is 0 (A, d=0) -> 0, 0, 0.
    # q2 (A): R = 2; 3 (B, d=1), 4 (A, d=3) -> rel 0 1: 0.25, 0.5, 0.
    # q3 (B): R = 1; nearest 2 (A, d=1) -> 0, 0, 0.
    # q4 (A): R = 2; 3 (B, d=2), 2 (A, d=3) -> rel 0 1: 0.25, 0.5, 0.
    # means: MAP = 0.75/5 = 0.15, RP = 1.5/5 = 0.3, P@1 = 0.
    x = _column([0, 0, 10, 11, 13])
    y = np.array([0, 1, 0, 1, 0])
    scores = retrieval_scores(x, y)
    assert scores["map_at_r"] == pytest.approx(0.15)
    assert scores["r_precision"] == pytest.approx(0.3)
    assert scores["precision_at_1"] == pytest.approx(0.0)


def test_same_class_duplicates_retrieve_each_other() -> None:
    # Two identical A rows and two identical B rows far apart: each query's only other
    # class member is its duplicate at distance 0 -> every score 1.
    x = _column([0, 0, 5, 5])
    y = np.array([0, 0, 1, 1])
    assert retrieval_scores(x, y) == pytest.approx(dict.fromkeys(KEYS, 1.0))


def test_singleton_classes_are_excluded_from_the_average() -> None:
    # A at 0 and 1, singletons C at 0.4 and D at 0.6 (they sit between the two A items).
    # k = 2 - 1 = 1. q0 (A): nearest is C at 0.4 -> 0. q1 (A): nearest D at 0.6 -> 0.
    # So the A queries score 0; the singletons score nothing at all and are skipped.
    # Counted as queries they would not change the zeros, so add a perfect class B too:
    # B at 10 and 11 -> each other's nearest: 1 each. Mean over the 4 non-singleton queries
    # = (0 + 0 + 1 + 1) / 4 = 0.5 (with the 2 singletons averaged in: 2/6).
    x = _column([0, 1, 0.4, 0.6, 10, 11])
    y = np.array([0, 0, 7, 8, 1, 1])
    assert retrieval_scores(x, y) == pytest.approx(dict.fromkeys(KEYS, 0.5))


def test_query_class_missing_from_reference_is_skipped() -> None:
    # Query 0 at 0 (A), query 1 at 0.1 (Z, not in the reference).
    # Reference: A at 0.5, B at 1, A at 3 -> k = 2 (class A).
    # q0: R = 2; neighbours A (0.5), B (1) -> rel 1 0: MAP = 1/2, RP = 1/2, P@1 = 1.
    # q1: R = 0 -> skipped (averaged in it would halve every score).
    query = _column([0, 0.1])
    reference = _column([0.5, 1, 3])
    scores = retrieval_scores(
        query,
        np.array([0, 99]),
        reference=reference,
        reference_labels=np.array([0, 1, 0]),
    )
    assert scores == pytest.approx({"map_at_r": 0.5, "r_precision": 0.5, "precision_at_1": 1.0})


def test_all_singletons_give_zeros() -> None:
    x = _column([0, 1, 2, 3])
    assert retrieval_scores(x, np.array([0, 1, 2, 3])) == dict.fromkeys(KEYS, 0.0)


def test_no_shared_class_with_reference_gives_zeros() -> None:
    scores = retrieval_scores(
        _column([0, 1]),
        np.array([0, 0]),
        reference=_column([0, 1, 2]),
        reference_labels=np.array([5, 5, 6]),
    )
    assert scores == dict.fromkeys(KEYS, 0.0)


def test_perfect_separation_scores_one() -> None:
    x = _column([0, 0.1, 0.2, 10, 10.1, 20, 20.3, 20.5, 20.6])
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    assert retrieval_scores(x, y) == pytest.approx(dict.fromkeys(KEYS, 1.0))


@pytest.mark.parametrize("seed", range(6))
def test_scores_lie_in_unit_interval(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    x = rng.normal(size=(n, int(rng.integers(1, 10)))).astype(np.float32)
    y = rng.integers(0, int(rng.integers(1, 30)), n)
    scores = retrieval_scores(x, y)
    assert set(KEYS) <= set(scores)
    for key in KEYS:
        assert isinstance(scores[key], float)
        assert 0.0 <= scores[key] <= 1.0


def test_accepts_torch_tensors() -> None:
    x, y = _clustered(5, 80, 6, 7)
    expected = retrieval_scores(x, y)
    assert retrieval_scores(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(expected)


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="length"):
        retrieval_scores(np.zeros((4, 2)), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="length"):
        retrieval_scores(
            np.zeros((4, 2)),
            np.array([0, 0, 1, 1]),
            reference=np.zeros((3, 2)),
            reference_labels=np.array([0, 1]),
        )


def test_one_dimensional_embeddings_raise() -> None:
    with pytest.raises(ValueError, match="shape"):
        retrieval_scores(np.zeros(4), np.array([0, 0, 1, 1]))


# --------------------------------------------------------------------------- nearest
def test_nearest_excludes_own_index_shape_and_order() -> None:
    x, _ = _untied(11, 50, 4)
    k = 7
    found = nearest(x, x, k, exclude_self=True)
    assert found.shape == (50, k)
    x64 = x.astype(np.float64)
    dist = ((x64[:, None] - x64[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    expected = np.argsort(dist, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(found, expected)


def test_nearest_excludes_own_index_among_duplicates() -> None:
    # 12 identical rows: faiss may return any 4 of them for k = 3 (own index included or not);
    # the own index must never be returned and every row must name 3 distinct others.
    x = np.ones((12, 3), dtype=np.float32)
    found = nearest(x, x, 3, exclude_self=True)
    assert found.shape == (12, 3)
    for i, row in enumerate(found):
        assert i not in row
        assert len(set(row.tolist())) == 3
        assert all(0 <= j < 12 for j in row)


def test_nearest_with_groups_of_duplicates() -> None:
    # rows 0..4 at 0, rows 5..9 at 100: with k = 4 each row's neighbours are exactly the other
    # four rows of its group.
    x = _column([0] * 5 + [100] * 5)
    found = nearest(x, x, 4, exclude_self=True)
    assert found.shape == (10, 4)
    for i, row in enumerate(found):
        group = set(range(5)) if i < 5 else set(range(5, 10))
        assert set(row.tolist()) == group - {i}


def test_nearest_separate_reference_keeps_every_hit() -> None:
    queries = _column([0, 10])
    reference = _column([0, 1, 9, 10, 30])
    found = nearest(queries, reference, 2, exclude_self=False)
    assert found.shape == (2, 2)
    np.testing.assert_array_equal(found, [[0, 1], [3, 2]])


def test_nearest_excludes_own_index_beyond_the_first_query_block() -> None:
    # 17,000 rows (more than one faiss query block of 16,384) as 8,500 pairs of duplicates on a
    # small integer grid (exact float32 distances): row i's single nearest other row is its
    # twin i ^ 1, in every block. Small coordinates keep the distances exact in float32.
    n = 17_000
    pair = np.arange(n) // 2
    x = np.stack([pair % 100, pair // 100], axis=1).astype(np.float32)
    found = nearest(x, x, 1, exclude_self=True)
    assert found.shape == (n, 1)
    np.testing.assert_array_equal(found[:, 0], np.arange(n) ^ 1)


def test_the_worked_example_of_the_protocol_docs() -> None:
    """docs/protocol.md: a query of class A whose neighbours are A, B, A, A (R = 3)."""
    query = np.array([[0.0, 0.0]])
    reference = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    scores = retrieval_scores(
        query, np.array([0]), reference=reference, reference_labels=np.array([0, 1, 0, 0])
    )
    assert scores["precision_at_1"] == 1.0
    assert scores["r_precision"] == pytest.approx(2 / 3)
    assert scores["map_at_r"] == pytest.approx(5 / 9)
