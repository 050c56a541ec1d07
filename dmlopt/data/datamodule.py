"""One fold's loaders: m-per-class training batches, sequential evaluation batches."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from pytorch_metric_learning.samplers import MPerClassSampler
from torch.utils.data import DataLoader

from dmlopt.config import TrainingConfig
from dmlopt.data.base import Samples
from dmlopt.hardware import device_for


class FoldDataModule(pl.LightningDataModule):
    """Training on one fold's train classes, validation on its val classes.

    An "epoch" is ``iterations_per_epoch`` batches of ``batch_size`` samples, ``m_per_class``
    from each of ``batch_size / m_per_class`` classes (the paper: 32 = 8 x 4, 100 iterations).
    """

    def __init__(self, train: Samples, val: Samples, config: TrainingConfig) -> None:
        super().__init__()
        self.train_samples = train
        self.val_samples = val
        self.config = config

    def train_dataloader(self) -> DataLoader:
        c = self.config
        sampler = MPerClassSampler(
            self.train_samples.labels,
            m=c.m_per_class,
            batch_size=c.batch_size,
            length_before_new_iter=c.batch_size * c.iterations_per_epoch,
        )
        return DataLoader(
            self.train_samples,
            batch_size=c.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=c.num_workers,
            persistent_workers=c.num_workers > 0,
            pin_memory=_pin(c),
        )

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.val_samples, self.config)

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` straight to the device, for validation and prediction batches
        (training moves its own: :meth:`MetricLearningModule.training_step
        <dmlopt.lit.module.MetricLearningModule.training_step>`). Lightning's generic version
        walks the batch as a nested collection, a measurable cost for small models."""
        return to_device(batch, device)


def to_device(
    batch: tuple[torch.Tensor, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` on ``device``; from pinned memory the copy is asynchronous."""
    x, y = batch
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def eval_loader(samples: Samples, config: TrainingConfig) -> DataLoader:
    """Sequential batches for embedding a split."""
    return DataLoader(
        samples,
        batch_size=config.eval_batch_size,
        num_workers=config.num_workers,
        pin_memory=_pin(config),
    )


def _pin(config: TrainingConfig) -> bool:
    """Page-locked batches when training on a GPU: their copy to the device is asynchronous
    (``non_blocking``) and overlaps the previous step."""
    return device_for(config).type == "cuda"
