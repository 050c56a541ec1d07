"""Pruning that compares like with like: a trial's folds against other trials' same folds.

A trial reports each fold's own best val MAP@R at ``step = fold index``. Folds differ in
difficulty (each validates on other classes), so a fair comparison after fold ``i`` is the mean
of a trial's folds ``0..i`` against the means of other trials over the same folds ``0..i``.
Optuna's ``MedianPruner`` does not do that here: it compares a trial's best step value with the
median of completed trials only (the survivors, which raises the bar), and could judge a trial
on its easiest fold. The objective never asks after the last fold, so a complete score is never
thrown away (:mod:`dmlopt.study.objective`).
"""

from __future__ import annotations

import statistics

import optuna
from optuna.trial import FrozenTrial, TrialState

#: Trials that ran their folds to an end: completed ones, and pruned ones for the folds they ran.
COMPARED = (TrialState.COMPLETE, TrialState.PRUNED)


def folds_mean(trial: FrozenTrial, last_fold: int) -> float | None:
    """Mean of ``trial``'s fold scores ``0..last_fold``, or ``None`` if it lacks one of them."""
    values = trial.intermediate_values
    if any(i not in values for i in range(last_fold + 1)):
        return None
    return statistics.fmean(values[i] for i in range(last_fold + 1))


class FoldMedianPruner(optuna.pruners.BasePruner):
    """Prune a trial whose mean over folds ``0..i`` is below the median of the same mean over
    the other finished (completed or pruned) trials that ran those folds.

    Nothing is pruned until ``n_startup_trials`` such trials exist.
    """

    def __init__(self, n_startup_trials: int = 2) -> None:
        self.n_startup_trials = n_startup_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        fold = trial.last_step
        if fold is None:
            return False
        mine = folds_mean(trial, fold)
        others = [
            m
            for t in study.get_trials(deepcopy=False, states=COMPARED)
            if t.number != trial.number and (m := folds_mean(t, fold)) is not None
        ]
        if mine is None or len(others) < self.n_startup_trials:
            return False
        return mine < statistics.median(others)
