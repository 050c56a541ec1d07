"""Retrieval metrics: MAP@R (the objective), R-Precision, P@1; secondary clustering metrics.

No Lightning here: the final stage and outside checks call these on plain arrays.
"""

from __future__ import annotations

import numpy as np

from dmlopt.metrics.knn import nearest
from dmlopt.metrics.retrieval import NO_SCORES, scores_from_neighbours


def retrieval_scores(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
) -> dict[str, float]:
    """MAP@R, R-Precision and P@1 of ``embeddings`` retrieving from ``reference``.

    With ``reference=None`` the queries are their own reference and each query's own entry is
    excluded by index. k is the largest class size in the reference (minus one when it is the
    query set), as ``AccuracyCalculator(k="max_bin_count")``. Queries with no other item of
    their class in the reference are skipped. Embeddings are compared by L2 distance as given:
    callers L2-normalise first (dmlopt does), which makes the ranking cosine.

    Returns a dict with ``map_at_r``, ``r_precision`` and ``precision_at_1`` in ``[0, 1]``.
    """
    queries = _as_matrix(embeddings)
    query_labels = np.asarray(labels).reshape(-1)
    same_set = reference is None
    if reference is None:
        ref, ref_labels = queries, query_labels
    else:
        ref, ref_labels = _as_matrix(reference), np.asarray(reference_labels).reshape(-1)
    if len(query_labels) != len(queries) or len(ref_labels) != len(ref):
        raise ValueError("embeddings and labels differ in length")
    if not (np.isfinite(queries).all() and np.isfinite(ref).all()):
        raise ValueError("embeddings contain NaN or inf (a diverged model?)")
    if len(queries) == 0 or len(ref) <= int(same_set):
        return scores_from_neighbours(np.empty((0, 0)), np.empty(0), np.empty(0))

    classes, counts = np.unique(ref_labels, return_counts=True)
    k = int(counts.max()) - int(same_set)
    position = np.searchsorted(classes, query_labels)
    position = np.clip(position, 0, len(classes) - 1)
    in_ref = classes[position] == query_labels
    relevant = np.where(in_ref, counts[position], 0) - int(same_set)
    relevant = np.maximum(relevant, 0)
    if k < 1:
        return scores_from_neighbours(np.empty((0, 0)), np.empty(0), np.zeros(len(queries)))
    found = nearest(queries, ref, k, exclude_self=same_set)
    return scores_from_neighbours(ref_labels[found], query_labels, relevant)


def retrieval_scores_or_zero(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """:func:`retrieval_scores` of a model's own embeddings, where a model whose embeddings are
    not finite (training diverged) retrieves nothing: every score 0."""
    if not np.isfinite(embeddings).all():
        return dict(NO_SCORES)
    return retrieval_scores(embeddings, labels)


def _as_matrix(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (n, d), got shape {x.shape}")
    return x


__all__ = ["retrieval_scores", "retrieval_scores_or_zero"]
