"""Callbacks: model selection with early stopping on val MAP@R, and epoch reports to a listener.

Both read :attr:`MetricLearningModule.val_map_at_r <dmlopt.lit.module.MetricLearningModule>`
directly rather than through ``self.log``: no logger is attached, and Lightning's logging
machinery costs about a millisecond per value logged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import cast

import lightning.pytorch as pl
import torch

from dmlopt.lit.module import MetricLearningModule


class KeepBest(pl.Callback):
    """The best val MAP@R so far, the epoch (1-based) it was reached, and a copy of those
    weights; training stops once ``patience`` validations in a row have not beaten it.

    Only finite weights are ever kept: validations after the module marked itself diverged are
    ignored. Until a validation is kept, :attr:`best_state` is the initial weights (epoch 0,
    score 0), which is what a fold that diverges before its first validation ends with.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_score = 0.0
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self._without_better = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.best_state = copy.deepcopy(pl_module.state_dict())

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module = cast(MetricLearningModule, pl_module)
        score = module.val_map_at_r
        if score is None or module.diverged is not None:
            return
        if score > self.best_score or self.best_epoch == 0:
            state = module.state_dict()
            if all(t.isfinite().all() for t in state.values() if t.is_floating_point()):
                self.best_score = score
                self.best_epoch = trainer.current_epoch + 1  # 1-based, like the epoch count
                self.best_state = copy.deepcopy(state)
                self._without_better = 0
                return
        self._without_better += 1
        if self._without_better >= self.patience:
            trainer.should_stop = True


class EpochListener(pl.Callback):
    """Calls ``listener(epoch, val_map_at_r)`` after each validation, for progress display."""

    def __init__(self, listener: Callable[[int, float], None]) -> None:
        self.listener = listener

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        score = cast(MetricLearningModule, pl_module).val_map_at_r
        if score is not None:
            self.listener(trainer.current_epoch, score)
