"""MAP@R at scale: dmlopt's faiss k-NN path against a dense distance-matrix baseline.

Baseline, measured in the same run: pytorch-metric-learning's AccuracyCalculator with
k="max_bin_count" (its default faiss path). Both must agree; the ratio is time(baseline) /
time(dmlopt). Also runs SOP scale (60k x 128, 11k classes) for dmlopt alone, which must not hold an
n x n matrix (peak memory printed).

    python benchmarks/retrieval_scores.py [--n 20000] [--sop] [--quick]
"""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--quick", action="store_true", help="n = 5000")
    args = parser.parse_args()
    if args.quick:
        args.n = 5000

    x, y = clustered(args.n, 128, args.n // 10)
    calc = AccuracyCalculator(
        include=("mean_average_precision_at_r", "r_precision", "precision_at_1"), k="max_bin_count"
    )
    ours, t_ours = timed(lambda: retrieval_scores(x, y))
    theirs, t_theirs = timed(lambda: calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y)))
    gap = abs(ours["map_at_r"] - theirs["mean_average_precision_at_r"])
    result = {
        "benchmark": "retrieval_scores",
        "figure": "dmlopt_seconds",
        "dmlopt_seconds": round(t_ours, 2),
        "baseline": "pytorch_metric_learning_AccuracyCalculator_seconds",
        "baseline_seconds": round(t_theirs, 2),
        "ratio": round(t_theirs / t_ours, 2),
        "n": args.n,
        "map_at_r_abs_difference": float(f"{gap:.2e}"),
    }
    if args.sop:
        x, y = clustered(60000, 128, 11317)
        scores, t = timed(lambda: retrieval_scores(x, y))
        result["sop_60000x128_seconds"] = round(t, 1)
        result["sop_map_at_r"] = round(scores["map_at_r"], 4)
        result["sop_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        result["dense_matrix_mb"] = round(60000**2 * 4 / 2**20)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
