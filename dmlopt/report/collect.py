"""Collect a report's data from storage: plain values, no drawing, never a write."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from dmlopt.study.runner import CONFIG_ATTR
from dmlopt.study.storage import ScoreBook


@dataclass(frozen=True)
class LossResult:
    """One loss of one study: its search, and its test score if it was scored."""

    loss: str
    trials: list[tuple[int, float]]  # (trial number, mean val MAP@R) of completed trials
    pruned: int
    best_value: float | None
    best_std: float | None
    test: dict[str, Any] | None = None  # the final.json entry, with "rescored"
    best_params: dict[str, Any] = field(default_factory=dict)


def collect(
    storage: optuna.storages.BaseStorage, book: ScoreBook, study: str | None = None
) -> dict[str, dict[str, LossResult]]:
    """``{study: {loss: LossResult}}`` for every dmlopt study in ``storage`` (or just ``study``)."""
    out: dict[str, dict[str, LossResult]] = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        name = summary.study_name
        if CONFIG_ATTR not in summary.user_attrs or "/" not in name:
            continue  # not a dmlopt study
        study_name, _, loss = name.partition("/")
        if study is not None and study_name != study:
            continue
        out.setdefault(study_name, {})[loss] = _loss_result(storage, book, name, loss)
    return out


def _loss_result(
    storage: optuna.storages.BaseStorage, book: ScoreBook, name: str, loss: str
) -> LossResult:
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(complete, key=lambda t: t.value or 0.0, default=None)
    latest = book.latest(name)
    test = None if latest is None else {**latest[1], "rescored": latest[0] > 0}
    std = None
    if best is not None:
        folds = best.user_attrs.get("fold_scores", [])
        std = statistics.stdev(folds) if len(folds) > 1 else None
    return LossResult(
        loss=loss,
        trials=[(t.number, float(t.value)) for t in complete if t.value is not None],
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        best_value=None if best is None else best.value,
        best_std=std,
        test=test,
        best_params={} if best is None else dict(best.params),
    )
