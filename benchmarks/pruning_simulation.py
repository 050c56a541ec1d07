"""How much each pruning rule prunes, on simulated k-fold trials (no training: seconds).

Each trial has a quality q ~ N(0, 1); its fold i scores ``0.5 + 0.03 q + offset_i + noise``,
with fold offsets (some folds validate on easier classes) and N(0, 0.02) noise. Two rules:

- ``optuna_median``: Optuna's ``MedianPruner`` fed the running mean of the folds, as dmlopt
  did before its fold-median pruner (n_startup_trials=2, no warm-up);
- ``fold_median``: dmlopt's :class:`~dmlopt.study.pruning.FoldMedianPruner` fed each fold's own
  score, never asked after the last fold.

Prints one JSON line: trials pruned per study (mean and range over seeds) for each rule, the
fold trainings each rule saves against no pruning (the baseline, measured in the same run), and
how often the best trial (by true quality) was pruned. A fair median rule prunes about half.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
import optuna

from dmlopt.study.pruning import FoldMedianPruner

FOLD_OFFSETS = (0.10, -0.05, 0.0, -0.08)


def simulate(rule: str, seed: int, n_trials: int) -> tuple[int, int, bool]:
    """(trials pruned, fold trainings run, best trial pruned) for one simulated study."""
    rng = np.random.default_rng(seed)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
        if rule == "optuna_median"
        else FoldMedianPruner()
    )
    study = optuna.create_study(direction="maximize", pruner=pruner)
    qualities = rng.normal(size=n_trials)
    folds_run, pruned_numbers = 0, set()
    last = len(FOLD_OFFSETS) - 1
    for q in qualities:
        trial = study.ask()
        scores = []
        for i, offset in enumerate(FOLD_OFFSETS):
            scores.append(0.5 + 0.03 * q + offset + rng.normal(scale=0.02))
            folds_run += 1
            reported = statistics.fmean(scores) if rule == "optuna_median" else scores[-1]
            trial.report(reported, step=i)
            asked = rule == "optuna_median" or i < last
            if asked and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned_numbers.add(trial.number)
                break
        else:
            study.tell(trial, statistics.fmean(scores))
    return len(pruned_numbers), folds_run, int(np.argmax(qualities)) in pruned_numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 seeds")
    args = parser.parse_args()
    if args.quick:
        args.seeds = 5
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    baseline = args.trials * len(FOLD_OFFSETS)  # no pruning: every trial trains every fold
    out: dict[str, object] = {
        "benchmark": "pruning_simulation",
        "trials": args.trials,
        "folds": len(FOLD_OFFSETS),
        "baseline_fold_trainings": baseline,
    }
    for rule in ("optuna_median", "fold_median"):
        runs = [simulate(rule, seed, args.trials) for seed in range(args.seeds)]
        pruned = [p for p, _, _ in runs]
        trainings = statistics.fmean(f for _, f, _ in runs)
        out[rule] = {
            "pruned_mean": statistics.fmean(pruned),
            "pruned_range": [min(pruned), max(pruned)],
            "fold_trainings_mean": trainings,
            "ratio_to_no_pruning": round(trainings / baseline, 3),
            "best_trial_pruned": sum(b for _, _, b in runs) / len(runs),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
