"""Recall@K, NMI and AMI: reported beside MAP@R, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score

from dmlopt.metrics.secondary import clustering_scores, recall_at_k


def brute_force_recall(x: np.ndarray, y: np.ndarray, k: int) -> float:
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    keep = np.array([(y == c).sum() > 1 for c in y])
    return float((y[order] == y[:, None]).any(axis=1)[keep].mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_at_k_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = rng.integers(0, 15, size=120)
    got = recall_at_k(x, y)
    for k in (1, 2, 4, 8):
        assert got[f"recall_at_{k}"] == pytest.approx(brute_force_recall(x, y, k), abs=1e-9)


def test_recall_on_a_line() -> None:
    # positions 0, 1, 10, 11 with classes a, b, a, b. Neighbours in order:
    # 0: 1(b) 10(a) 11(b) | 1: 0(a) 10(a) 11(b) | 10: 11(b) 1(b) 0(a) | 11: 10(a) 1(b) 0(a)
    # first same-class rank: 2, 3, 3, 2 -> recall@1 = 0, recall@2 = 1/2, recall@3 = 1.
    x = np.array([[0.0], [1.0], [10.0], [11.0]], dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    got = recall_at_k(x, y, ks=(1, 2, 3))
    assert got == {"recall_at_1": 0.0, "recall_at_2": 0.5, "recall_at_3": 1.0}


def test_perfect_clusters_give_nmi_and_ami_of_one() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 8)) * 100
    y = np.repeat(np.arange(5), 20)
    x = (centers[y] + rng.normal(size=(100, 8))).astype(np.float32)
    scores = clustering_scores(x, y)
    assert scores["nmi"] == pytest.approx(1.0)
    assert scores["ami"] == pytest.approx(1.0)


def test_random_embeddings_give_ami_near_zero() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    y = rng.integers(0, 8, size=400)
    scores = clustering_scores(x, y)
    assert abs(scores["ami"]) < 0.05
    assert 0.0 <= scores["nmi"] < 0.2
    assert scores["ami"] <= adjusted_mutual_info_score(y, y)


def test_diverged_embeddings_score_zero_instead_of_garbage() -> None:
    import dmlopt.metrics as metrics
    from dmlopt.study.final import score_embeddings

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = np.repeat(np.arange(10), 4)
    x[5] = np.nan  # faiss would return index -1 for it, i.e. some other row's label
    with pytest.raises(ValueError, match="NaN"):
        metrics.retrieval_scores(x, y)
    assert set(metrics.retrieval_scores_or_zero(x, y).values()) == {0.0}
    scored = score_embeddings([x, x], y)
    assert set(scored["separated"].values()) == {0.0}
    assert set(scored["concatenated"].values()) == {0.0}
