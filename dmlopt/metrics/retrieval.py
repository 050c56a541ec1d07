"""MAP@R, R-Precision and P@1 from each query's ranked neighbour labels (docs/protocol.md).

Pure numpy on an ``(n_queries, k)`` label matrix: the k-NN search is :mod:`dmlopt.metrics.knn`.
"""

from __future__ import annotations

import numpy as np

#: The scores of a set with no valid query, or of a model whose embeddings are not finite.
NO_SCORES = {"map_at_r": 0.0, "r_precision": 0.0, "precision_at_1": 0.0}


def scores_from_neighbours(
    neighbour_labels: np.ndarray, query_labels: np.ndarray, relevant_counts: np.ndarray
) -> dict[str, float]:
    """Average per query (not per class) over queries with ``R >= 1`` other relevant items.

    Args:
        neighbour_labels: ``(n, k)`` labels of each query's nearest neighbours, nearest first,
            the query itself already removed; ``k`` is at least every query's ``R``.
        query_labels: ``(n,)``.
        relevant_counts: ``(n,)`` R per query: the reference items of its class, itself excluded.
    """
    keep = relevant_counts > 0
    if not keep.any():
        return dict(NO_SCORES)
    labels = neighbour_labels[keep]
    r = relevant_counts[keep]
    k = labels.shape[1]
    within_r = np.arange(1, k + 1)[None, :] <= r[:, None]
    relevant = (labels == query_labels[keep][:, None]) & within_r
    hits = np.cumsum(relevant, axis=1)
    precision_at_i = hits / np.arange(1, k + 1)[None, :]
    map_at_r = (precision_at_i * relevant).sum(axis=1) / r
    r_precision = relevant.sum(axis=1) / r
    precision_at_1 = labels[:, 0] == query_labels[keep]
    return {
        "map_at_r": float(map_at_r.mean()),
        "r_precision": float(r_precision.mean()),
        "precision_at_1": float(precision_at_1.mean()),
    }
