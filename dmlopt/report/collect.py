"""Collect a report's data from storage: plain values, no drawing, never a write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

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
    """``{study: {loss: LossResult}}`` for every dmlopt study in ``storage`` (or just ``study``):
    the searched ones, and the scored ones without a search (exported best configs)."""
    searched = [
        s.study_name
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        if CONFIG_ATTR in s.user_attrs and "/" in s.study_name
    ]
    out: dict[str, dict[str, LossResult]] = {}
    for name in sorted(set(searched) | set(book.study_names())):
        study_name, _, loss = name.partition("/")
        if study is None or study_name == study:
            trials = _trials(storage, name) if name in searched else []
            out.setdefault(study_name, {})[loss] = _loss_result(book, name, loss, trials)
    return out


def _trials(storage: optuna.storages.BaseStorage, name: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def _loss_result(book: ScoreBook, name: str, loss: str, trials: list[FrozenTrial]) -> LossResult:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(complete, key=lambda t: t.value or 0.0, default=None)
    latest = book.latest(name)
    return LossResult(
        loss=loss,
        trials=[(t.number, float(t.value)) for t in complete if t.value is not None],
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        best_value=None if best is None else best.value,
        best_std=None if best is None else best.user_attrs.get("val_map_at_r_std"),
        test=None if latest is None else {**latest[1], "rescored": latest[0] > 0},
        best_params={} if best is None else dict(best.params),
    )
