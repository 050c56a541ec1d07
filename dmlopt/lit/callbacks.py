"""Callbacks: keep the best-validation weights in memory, and report epochs to a listener."""

from __future__ import annotations

import copy
from collections.abc import Callable

import lightning.pytorch as pl
import torch

MONITOR = "val/map_at_r"


class KeepBest(pl.Callback):
    """The best ``val/map_at_r`` so far, the epoch (1-based) it was reached, and a copy of
    those weights.

    Only finite weights are ever kept: validations after the module marked itself diverged are
    ignored. Until a validation is kept, :attr:`best_state` is the initial weights (epoch 0,
    score 0), which is what a fold that diverges before its first validation ends with.
    """

    def __init__(self) -> None:
        self.best_score = 0.0
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.best_state = copy.deepcopy(pl_module.state_dict())

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        score = trainer.callback_metrics.get(MONITOR)
        if score is None or getattr(pl_module, "diverged", None) is not None:
            return
        if float(score) > self.best_score or self.best_epoch == 0:
            state = pl_module.state_dict()
            if all(t.isfinite().all() for t in state.values() if t.is_floating_point()):
                self.best_score = float(score)
                self.best_epoch = trainer.current_epoch + 1  # 1-based, like the epoch count
                self.best_state = copy.deepcopy(state)


class EpochListener(pl.Callback):
    """Calls ``listener(epoch, val_map_at_r)`` after each validation, for progress display."""

    def __init__(self, listener: Callable[[int, float], None]) -> None:
        self.listener = listener

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        score = trainer.callback_metrics.get(MONITOR)
        if score is not None:
            self.listener(trainer.current_epoch, float(score))
