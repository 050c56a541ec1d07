"""The Optuna objective: mean best val MAP@R over class-disjoint folds, pruned fold by fold."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import optuna

from dmlopt.config import StudyConfig
from dmlopt.data.base import MetricDataset
from dmlopt.data.splits import Fold
from dmlopt.search_space import suggest
from dmlopt.seeding import derive_seed
from dmlopt.study.artifacts import TrialArtifacts
from dmlopt.study.fold import train_fold
from dmlopt.study.progress import Progress

SEARCH_STREAM = 0  # seeds of search trials; the final stage uses another stream


class CrossValidationObjective:
    """Trains the folds of a trial in order and returns the mean of their best val MAP@R.

    After each fold but the last it reports that fold's own score (step = fold index), so a
    pruner can stop a trial whose first folds are already worse than other trials' same folds
    (:mod:`dmlopt.study.pruning`); a trial that trained every fold is never pruned. Fold scores,
    their standard deviation, the epochs trained, the seeds and any diverged folds are kept as
    trial user attributes.
    """

    def __init__(
        self,
        config: StudyConfig,
        loss: str,
        dataset: MetricDataset,
        folds: Sequence[Fold],
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.loss = loss
        self.space = config.loss_space(loss)
        self.dataset = dataset
        self.folds = folds
        self.progress = progress

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(self.space, trial)
        artifacts = TrialArtifacts.start(trial, self.config, params)
        scores: list[float] = []
        epochs: list[int] = []
        best_epochs: list[int] = []
        seeds: list[int] = []
        diverged: list[dict[str, int]] = []
        last = len(self.folds) - 1
        for i, (train_classes, val_classes) in enumerate(self.folds):
            seed = derive_seed(self.config.search.seed, SEARCH_STREAM, trial.number, i)
            if self.progress is not None:
                self.progress.at(f"trial {trial.number} fold {i + 1}/{len(self.folds)}")
            result = train_fold(
                self.config,
                self.loss,
                params,
                self.dataset,
                train_classes,
                val_classes,
                seed=seed,
                listener=artifacts.listener(self.progress.epoch if self.progress else None),
            )
            artifacts.fold_done(i)
            scores.append(result.best_map_at_r)
            epochs.append(result.epochs)
            best_epochs.append(result.best_epoch)
            seeds.append(seed)
            trial.set_user_attr("fold_scores", scores)
            trial.set_user_attr("fold_best_epochs", best_epochs)
            trial.set_user_attr("epochs_trained", epochs)
            trial.set_user_attr("seeds", seeds)
            if result.diverged is not None:
                diverged.append({"fold": i, **result.diverged})
                trial.set_user_attr("diverged", diverged)
            trial.report(result.best_map_at_r, step=i)
            if i < last and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {i + 1}")
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        trial.set_user_attr("val_map_at_r_std", std)
        trial.set_user_attr("val_map_at_r_sem", std / len(scores) ** 0.5)  # the standard error
        return statistics.fmean(scores)
