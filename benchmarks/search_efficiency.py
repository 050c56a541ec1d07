"""Search efficiency: how much training the pruner and early stopping save, and what it costs.

The same quickstart-like study (built-in dataset, small_cnn, contrastive / triplet /
multi-similarity, fixed seeds) runs twice, search and final stage, each into its own folder:

* **baseline** ``search.pruner: none`` and early stopping off (``patience`` = ``max_epochs``):
  every trial trains every fold to the last epoch, as the paper;
* **dmlopt** ``search.pruner: median`` and early stopping on (``patience`` 2).

It prints one JSON line: the fold trainings, epochs and wall time of each search, the share of
training saved (epochs; target >= 40%), and the differences in best val MAP@R (mean over losses;
target <= 0.01 lower) and in the final stage's test MAP@R (concatenated, mean over reruns).

The issue's suggestion is 24 trials per loss; ``--trials`` scales it (the default, 12, keeps a
run under about 15 minutes on 2 shared cores; ``--quick`` is one loss, 6 trials, one rerun).

    python benchmarks/search_efficiency.py [--trials 12] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from dmlopt.cli import main as dmlopt
from dmlopt.study.storage import open_storage

LOSSES = ["contrastive", "triplet", "multi_similarity"]
MAX_EPOCHS = 8
PATIENCE = 2


def study_file(folder: Path, args: argparse.Namespace, *, pruned: bool) -> Path:
    data = {
        "study": "efficiency",
        "dataset": {"name": "synthetic", "classes": 64, "per_class": 24, "image_size": 32,
                    "seed": 0},
        "split": {"test": "paper", "folds": 2},
        "model": {"trunk": "small_cnn", "embedding_dim": 64},
        "losses": args.losses,
        "training": {"batch_size": 32, "m_per_class": 4, "iterations_per_epoch": 25,
                     "max_epochs": MAX_EPOCHS, "eval_every": 1,
                     "patience": PATIENCE if pruned else MAX_EPOCHS,
                     "optimizer": {"name": "adam", "lr": 1.0e-3, "weight_decay": 1.0e-4}},
        "search": {"n_trials": args.trials, "sampler": "tpe",
                   "pruner": "median" if pruned else "none", "seed": 0},
        "final": {"runs": args.runs},
    }  # fmt: skip
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(folder: Path, args: argparse.Namespace, *, pruned: bool) -> dict[str, Any]:
    folder.mkdir(parents=True)
    study = study_file(folder, args, pruned=pruned)
    out = folder / "out"
    start = time.perf_counter()
    assert dmlopt(["run", str(study), "--no-final", "--out", str(out)]) == 0
    search_s = time.perf_counter() - start
    start = time.perf_counter()
    assert dmlopt(["final", str(study), "--out", str(out)]) == 0
    final_s = time.perf_counter() - start
    storage = open_storage(f"sqlite:///{out / 'study.db'}", create=False)
    fold_trainings = epochs = 0
    best: dict[str, float] = {}
    for loss in args.losses:
        s = optuna.load_study(study_name=f"efficiency/{loss}", storage=storage)
        for trial in s.trials:
            trained = trial.user_attrs.get("epochs_trained", [])
            fold_trainings += len(trained)
            epochs += sum(trained)
        best[loss] = s.best_value
    final = json.loads((out / "final.json").read_text())
    test = {loss: final[loss]["test"]["concatenated"]["map_at_r"]["mean"] for loss in args.losses}
    return {
        "fold_trainings": fold_trainings,
        "epochs": epochs,
        "search_wall_s": round(search_s, 1),
        "final_wall_s": round(final_s, 1),
        "best_val_map_at_r": {k: round(v, 4) for k, v in best.items()},
        "test_map_at_r": {k: round(v, 4) for k, v in test.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12, help="trials per loss")
    parser.add_argument("--runs", type=int, default=2, help="final-stage reruns")
    parser.add_argument("--quick", action="store_true", help="one loss, 6 trials, 1 rerun")
    args = parser.parse_args()
    args.losses = LOSSES
    if args.quick:
        args.losses, args.trials, args.runs = LOSSES[:1], 6, 1
    torch.set_num_threads(1)  # one process on shared cores: see the README's performance notes
    with tempfile.TemporaryDirectory(prefix="dmlopt-efficiency-") as tmp:
        baseline = run(Path(tmp) / "baseline", args, pruned=False)
        ours = run(Path(tmp) / "pruned", args, pruned=True)

    def mean_gap(key: str) -> float:
        return statistics.fmean(baseline[key][k] - ours[key][k] for k in args.losses)

    saved = 1 - ours["epochs"] / baseline["epochs"]
    print(
        json.dumps(
            {
                "benchmark": "search_efficiency",
                "figure": "epochs_trained_pruned_early_stopping",
                "epochs": ours["epochs"],
                "baseline": "no_pruner_no_early_stopping",
                "baseline_epochs": baseline["epochs"],
                "ratio": round(ours["epochs"] / baseline["epochs"], 3),
                "training_saved": round(saved, 3),
                "target_training_saved": 0.40,
                "best_val_map_at_r_lower_by": round(mean_gap("best_val_map_at_r"), 4),
                "target_best_val_lower_by_at_most": 0.01,
                "test_map_at_r_lower_by": round(mean_gap("test_map_at_r"), 4),
                "trials_per_loss": args.trials,
                "losses": args.losses,
                "pruned": ours,
                "unpruned": baseline,
                "load_avg_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
