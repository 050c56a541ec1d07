"""Pruning that compares like with like: a trial's folds against all other trials' same folds.

A trial reports each fold's own best val MAP@R at ``step = fold index``. Folds differ in
difficulty (each validates on other classes), so a fair comparison after fold ``i`` is the mean
of a trial's folds ``0..i`` against the same mean of the other trials. The bar is the median of
*all* finished trials, not of the survivors: a trial pruned before fold ``i`` was already below
the bar and counts as below it, so the bar does not rise as pruning proceeds and about half of
the trials are pruned. Optuna's ``MedianPruner`` compares with completed trials only (the
survivors), and could judge a trial on its easiest fold. The objective never asks after the
last fold, so a complete score is never thrown away (:mod:`dmlopt.study.objective`).
"""

from __future__ import annotations

import statistics

import optuna
from optuna.trial import FrozenTrial, TrialState

#: Trials that ran their folds to an end: completed ones, and pruned ones for the folds they ran.
COMPARED = (TrialState.COMPLETE, TrialState.PRUNED)
BELOW = float("-inf")  # a trial pruned before a fold: below the bar there too


def folds_mean(trial: FrozenTrial, last_fold: int) -> float | None:
    """Mean of ``trial``'s fold scores ``0..last_fold``, or ``None`` if it lacks one of them."""
    values = trial.intermediate_values
    if any(i not in values for i in range(last_fold + 1)):
        return None
    return statistics.fmean(values[i] for i in range(last_fold + 1))


class FoldMedianPruner(optuna.pruners.BasePruner):
    """Prune a trial whose mean over folds ``0..i`` is below the median of that mean over the
    other finished (completed or pruned) trials, those pruned before fold ``i`` counting as
    below any score.

    Nothing is pruned until ``n_startup_trials`` other trials have finished a fold.
    """

    def __init__(self, n_startup_trials: int = 2) -> None:
        self.n_startup_trials = n_startup_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        fold = trial.last_step
        mine = None if fold is None else folds_mean(trial, fold)
        if fold is None or mine is None:
            return False
        others = [
            BELOW if (m := folds_mean(t, fold)) is None else m
            for t in study.get_trials(deepcopy=False, states=COMPARED)
            if t.number != trial.number and 0 in t.intermediate_values
        ]
        return len(others) >= self.n_startup_trials and mine < statistics.median(others)
