"""Progress on stderr: a bar per loss, with the trial, fold and epoch in flight."""

from __future__ import annotations

import sys

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from dmlopt.study import signals

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Progress:
    """One bar per loss. :meth:`epoch` is the listener fold training calls after validation;
    the object itself is an Optuna callback that advances the bar after each trial."""

    def __init__(self, label: str, total: int, *, enabled: bool = True) -> None:
        self.bar = tqdm(
            total=total,
            desc=label,
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not enabled,
        )
        self.where = ""

    def sync(self, finished: int) -> None:
        """Show ``finished`` trials (all workers'), as the storage counts them."""
        finished = min(finished, self.bar.total)
        if finished != self.bar.n:
            self.bar.n = finished
            self.bar.refresh()

    def at(self, where: str) -> None:
        signals.check()  # between folds: a swallowed Ctrl-C is raised again here
        self.where = where
        self.bar.set_postfix_str(where)

    def epoch(self, epoch: int, score: float) -> None:
        signals.check()
        self.bar.set_postfix_str(f"{self.where} epoch {epoch + 1} val MAP@R {score:.4f}")

    def advance(self, note: str = "") -> None:
        self.bar.update(1)
        if note:
            self.bar.set_postfix_str(note)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.bar.disable:
            return  # the storage queries below are for the display only
        value = f"{trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
        try:
            best = f"best {study.best_value:.4f}"
        except ValueError:  # no completed trial yet
            best = "no trial completed yet"
        self.bar.set_postfix_str(f"trial {trial.number}: {value}, {best}")
        self.sync(len(study.get_trials(deepcopy=False, states=FINISHED)))

    def close(self) -> None:
        self.bar.close()
