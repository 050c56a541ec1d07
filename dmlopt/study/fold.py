"""Train one fold model and embed a split: the unit of work of the search and the final stage."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import lightning.pytorch as pl
import numpy as np
import torch

from dmlopt.config import StudyConfig, TrainingConfig
from dmlopt.data.base import MetricDataset, Samples
from dmlopt.data.datamodule import FoldDataModule, eval_loader
from dmlopt.lit.callbacks import EpochListener, KeepBest
from dmlopt.lit.module import MetricLearningModule
from dmlopt.models import build_model
from dmlopt.search_space import Value


@dataclass(frozen=True)
class FoldResult:
    """A trained fold: its best val MAP@R, when it was reached, and the model at that point.

    ``diverged`` is ``{"epoch", "step"}`` where training hit a non-finite loss and stopped; the
    fold then keeps its best finite validation (its initial weights and 0 when none ran).
    """

    best_map_at_r: float
    best_epoch: int
    epochs: int
    module: MetricLearningModule
    diverged: dict[str, int] | None = None


def build_module(
    config: StudyConfig,
    loss: str,
    params: Mapping[str, Value],
    dataset: MetricDataset,
    num_classes: int,
) -> MetricLearningModule:
    """A fresh model for ``loss`` with ``params``; per-class parameters sized to ``num_classes``."""
    spec = config.loss_spec(loss)
    trunk, embedder = build_model(config.model, dataset.input_shape)
    loss_fn, miner = spec.build(
        params, num_classes=num_classes, embedding_dim=config.model.embedding_dim
    )
    lr = params.get("loss_optimizer.lr")
    return MetricLearningModule(
        trunk,
        embedder,
        loss_fn,
        miner,
        config.training.optimizer,
        loss_lr=None if lr is None else float(lr),
        loss_weight_decay=spec.parameter_weight_decay,
        freeze_batchnorm=config.model.freeze_batchnorm,
    )


def train_fold(
    config: StudyConfig,
    loss: str,
    params: Mapping[str, Value],
    dataset: MetricDataset,
    train_classes: Sequence[int],
    val_classes: Sequence[int],
    *,
    seed: int,
    listener: Callable[[int, float], None] | None = None,
) -> FoldResult:
    """Train on ``train_classes`` with early stopping on val MAP@R over ``val_classes``."""
    _quiet_lightning()
    pl.seed_everything(seed, workers=True, verbose=False)
    module = build_module(config, loss, params, dataset, len(train_classes))
    data = FoldDataModule(
        dataset.view(train_classes, train=True),
        dataset.view(val_classes, train=False),
        config.training,
    )
    t = config.training
    keep_best = KeepBest(t.patience)
    callbacks: list[pl.Callback] = [keep_best]
    if listener is not None:
        callbacks.append(EpochListener(listener))
    trainer = _trainer(
        t,
        max_epochs=t.max_epochs,
        check_val_every_n_epoch=t.eval_every,
        callbacks=callbacks,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    assert keep_best.best_state is not None  # the initial weights at least
    module.load_state_dict(keep_best.best_state)
    return FoldResult(
        keep_best.best_score,
        keep_best.best_epoch,
        trainer.current_epoch,
        module,
        module.diverged,
    )


def embed(module: MetricLearningModule, samples: Samples, config: StudyConfig) -> np.ndarray:
    """L2-normalised embeddings of ``samples``, in order, computed exactly as validation computes
    them (a Trainer on the training's device, at its precision), so that the test set is
    embedded the way the model was selected."""
    _quiet_lightning()
    trainer = _trainer(config.training)
    parts = cast(list[torch.Tensor], trainer.predict(module, eval_loader(samples, config.training)))
    return torch.cat(parts).numpy() if parts else np.empty((0, config.model.embedding_dim))


def _trainer(training: TrainingConfig, **kwargs: Any) -> pl.Trainer:
    """A quiet Trainer on the study's accelerator, precision and determinism settings."""
    return pl.Trainer(
        accelerator=training.accelerator,
        devices=1,
        precision=training.precision,
        deterministic=training.deterministic,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _quiet_lightning() -> None:
    """Lightning's banners and hints are noise once per fold; dmlopt shows its own progress."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # MetricLearningModule.training_step runs a whole epoch from Lightning's batch iterator,
    # which Lightning calls experimental; dmlopt's tests pin its behaviour.
    warnings.filterwarnings("ignore", message=".*dataloader_iter.*")
