"""Exact k-nearest-neighbour search with faiss (L2), excluding each query's own entry by index."""

from __future__ import annotations

import faiss
import numpy as np

_QUERY_BLOCK = 16384  # queries per faiss call: bounds memory to block x k, never n x n


def nearest(
    queries: np.ndarray, reference: np.ndarray, k: int, *, exclude_self: bool
) -> np.ndarray:
    """Indices ``(n_queries, k)`` of each query's ``k`` nearest reference rows, nearest first.

    With ``exclude_self`` the queries are the reference itself: ``k + 1`` neighbours are found
    and the query's own index is removed wherever it ranks (duplicates can outrank it); if it
    is not among them the last neighbour is dropped instead.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    reference = np.ascontiguousarray(reference, dtype=np.float32)
    index = faiss.IndexFlatL2(reference.shape[1])
    index.add(reference)
    extra = int(exclude_self)
    k_search = min(k + extra, len(reference))
    out = []
    for start in range(0, len(queries), _QUERY_BLOCK):
        _, found = index.search(queries[start : start + _QUERY_BLOCK], k_search)
        if exclude_self:
            own = np.arange(start, start + len(found))[:, None]
            is_self = found == own
            is_self[~is_self.any(axis=1), -1] = True
            found = found[~is_self].reshape(len(found), k_search - 1)
        out.append(found)
    return np.concatenate(out) if out else np.empty((0, k), dtype=np.int64)
