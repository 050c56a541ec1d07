"""MAP@R at scale: dmlopt's faiss k-NN path against a dense distance-matrix baseline.

Baseline, measured in the same run: pytorch-metric-learning's AccuracyCalculator with
k="max_bin_count" (its default faiss path). Both must agree; the ratio is time(baseline) /
time(dmlopt). Also runs SOP scale (60k x 128, 11k classes) for dmlopt alone, which must not hold an
n x n matrix (peak memory printed).

    python benchmarks/retrieval_scores.py [--n 20000] [--sop]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from dmlopt.metrics import retrieval_scores


def clustered(n: int, d: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(classes, d))[y] + 0.8 * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--sop", action="store_true", help="also 60k x 128, 11,317 classes")
    args = parser.parse_args()

    x, y = clustered(args.n, 128, args.n // 10)
    calc = AccuracyCalculator(
        include=("mean_average_precision_at_r", "r_precision", "precision_at_1"), k="max_bin_count"
    )
    ours, t_ours = timed(lambda: retrieval_scores(x, y))
    theirs, t_theirs = timed(lambda: calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y)))
    gap = abs(ours["map_at_r"] - theirs["mean_average_precision_at_r"])
    print(
        f"n={args.n}: dmlopt {t_ours:.2f}s, pytorch-metric-learning {t_theirs:.2f}s, "
        f"ratio {t_theirs / t_ours:.2f}x, |MAP@R difference| {gap:.2e}"
    )
    if args.sop:
        x, y = clustered(60000, 128, 11317)
        scores, t = timed(lambda: retrieval_scores(x, y))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        dense_mb = 60000**2 * 4 / 2**20
        print(
            f"SOP scale 60000 x 128: {t:.1f}s, MAP@R {scores['map_at_r']:.4f}, "
            f"peak RSS {peak_mb:.0f} MB (a dense distance matrix alone is {dense_mb:.0f} MB)"
        )


if __name__ == "__main__":
    main()
