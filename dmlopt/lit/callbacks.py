"""Callbacks: keep the best-validation weights in memory, and report epochs to a listener."""

from __future__ import annotations

import copy
from collections.abc import Callable

import lightning.pytorch as pl
import torch

MONITOR = "val/map_at_r"


class KeepBest(pl.Callback):
    """The best ``val/map_at_r`` so far, the epoch (1-based) it was reached, and a copy of
    those weights."""

    def __init__(self) -> None:
        self.best_score = float("-inf")
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        score = trainer.callback_metrics.get(MONITOR)
        if score is not None and float(score) > self.best_score:
            self.best_score = float(score)
            self.best_epoch = trainer.current_epoch + 1  # 1-based, like the epoch count
            self.best_state = copy.deepcopy(pl_module.state_dict())


class EpochListener(pl.Callback):
    """Calls ``listener(epoch, val_map_at_r)`` after each validation, for progress display."""

    def __init__(self, listener: Callable[[int, float], None]) -> None:
        self.listener = listener

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        score = trainer.callback_metrics.get(MONITOR)
        if score is not None:
            self.listener(trainer.current_epoch, float(score))
