"""Progress on stderr: a bar per loss, with the trial, fold and epoch in flight."""

from __future__ import annotations

import sys

import optuna
from tqdm.auto import tqdm


class Progress:
    """One bar per loss. :meth:`epoch` is the listener fold training calls after validation;
    the object itself is an Optuna callback that advances the bar after each trial."""

    def __init__(self, label: str, total: int) -> None:
        self.bar = tqdm(total=total, desc=label, unit="step", file=sys.stderr, dynamic_ncols=True)
        self.where = ""

    def at(self, where: str) -> None:
        self.where = where
        self.bar.set_postfix_str(where)

    def epoch(self, epoch: int, score: float) -> None:
        self.bar.set_postfix_str(f"{self.where} epoch {epoch + 1} val MAP@R {score:.4f}")

    def advance(self, note: str = "") -> None:
        self.bar.update(1)
        if note:
            self.bar.set_postfix_str(note)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = f"{trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
        try:
            best = f"best {study.best_value:.4f}"
        except ValueError:  # no completed trial yet
            best = "no trial completed yet"
        self.advance(f"trial {trial.number}: {value}, {best}")

    def close(self) -> None:
        self.bar.close()
