"""Secondary metrics, for comparison with older papers only: never the search objective.

Recall@K (a query counts if any of its K nearest neighbours shares its class) and NMI / AMI of
a k-means clustering with one cluster per class. Both saturate and reward other things than
ranking quality, which is why the paper, and dmlopt, optimise and rank by MAP@R instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from dmlopt.metrics.knn import nearest

RECALL_KS = (1, 2, 4, 8)


def recall_at_k(
    embeddings: np.ndarray, labels: np.ndarray, ks: Sequence[int] = RECALL_KS
) -> dict[str, float]:
    """``recall_at_<k>`` for each k: the query set is its own reference, itself excluded;
    queries whose class has no other sample are skipped."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keep = counts[inverse] > 1
    k_max = min(max(ks), len(x) - 1)
    if not keep.any() or k_max < 1:
        return {f"recall_at_{k}": 0.0 for k in ks}
    hits = labels[nearest(x, x, k_max, exclude_self=True)] == labels[:, None]
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), k_max)[keep]
    return {f"recall_at_{k}": float((first_hit < k).mean()) for k in ks}


def clustering_scores(
    embeddings: np.ndarray, labels: np.ndarray, *, seed: int = 0
) -> dict[str, float]:
    """NMI and AMI of faiss k-means (as many clusters as classes) against the labels."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n_clusters = len(np.unique(labels))
    if n_clusters < 2 or len(x) <= n_clusters:
        return {"nmi": 0.0, "ami": 0.0}
    kmeans = faiss.Kmeans(
        x.shape[1], n_clusters, niter=20, seed=seed, verbose=False, min_points_per_centroid=1
    )
    kmeans.train(x)
    _, assigned = kmeans.index.search(x, 1)
    return {
        "nmi": float(normalized_mutual_info_score(labels, assigned[:, 0])),
        "ami": float(adjusted_mutual_info_score(labels, assigned[:, 0])),
    }


def secondary_scores(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Recall@K, NMI and AMI; all 0 for a model whose embeddings are not finite (diverged)."""
    if not np.isfinite(embeddings).all():
        return {**{f"recall_at_{k}": 0.0 for k in RECALL_KS}, "nmi": 0.0, "ami": 0.0}
    return {**recall_at_k(embeddings, labels), **clustering_scores(embeddings, labels)}
