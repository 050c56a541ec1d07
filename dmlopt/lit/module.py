"""The LightningModule that trains any registered loss on a trunk + linear embedder."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dmlopt.config import OptimizerConfig
from dmlopt.data.datamodule import to_device
from dmlopt.metrics import retrieval_scores_or_zero
from dmlopt.models.layout import channels_last as channels_last_layout
from dmlopt.models.layout import channels_last_input

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}
_WITH_MOMENTUM = {"rmsprop", "sgd"}


def _read_without_autocast(
    dataloader_iter: Iterator[Any],
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of Lightning's iterator, each read with CPU autocast off.

    Lightning reads a batch before entering a step's autocast; here the reads happen inside
    the (epoch-long) step, and without loader workers a dataset's own tensor work (the built-in
    dataset's sample generation, a user's transforms) would otherwise run in bfloat16 under
    ``bf16-mixed``.
    """
    iterator = iter(dataloader_iter)
    while True:
        with torch.autocast("cpu", enabled=False):
            item = next(iterator, None)
        if item is None:
            return
        yield item[0]  # (batch, batch_idx, dataloader_idx)


class MetricLearningModule(pl.LightningModule):
    """Trunk -> linear embedder -> metric loss (optionally on mined tuples).

    The loss's own parameters (proxies, class weights, betas) train in their own optimizer
    group with their own learning rate. Validation sets :attr:`val_map_at_r`, MAP@R over the
    val classes on L2-normalised embeddings, which model selection and early stopping read
    (:class:`~dmlopt.lit.callbacks.KeepBest`).

    A non-finite loss (or non-finite validation embeddings) means training diverged: the step is
    skipped, training stops, and :attr:`diverged` records where, so that no later checkpoint of
    non-finite weights is kept (:class:`~dmlopt.lit.callbacks.KeepBest` ignores them).
    """

    def __init__(
        self,
        trunk: nn.Module,
        embedder: nn.Module,
        loss: nn.Module,
        miner: nn.Module | None,
        optimizer: OptimizerConfig,
        *,
        loss_lr: float | None = None,
        loss_weight_decay: float | None = None,
        freeze_batchnorm: bool = False,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.embedder = embedder
        self.loss_fn = loss
        self.miner = miner
        self.optimizer_config = optimizer
        self.loss_lr = loss_lr
        self.loss_weight_decay = loss_weight_decay
        self.freeze_batchnorm = freeze_batchnorm
        self._batchnorms = [
            m for m in trunk.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        #: Optimizer steps taken (the raw optimizer below does not count in ``global_step``).
        self.steps_done = 0
        #: ``{"epoch": e, "step": s}`` (1-based epoch, optimizer steps done) once training
        #: diverged, else ``None``.
        self.diverged: dict[str, int] | None = None
        #: MAP@R of the last validation, ``None`` before the first.
        self.val_map_at_r: float | None = None
        # Images in channels-last layout (dmlopt.models.layout says why).
        self.channels_last = channels_last
        if channels_last:
            channels_last_layout(self.trunk)
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        # The step zeroes, backpropagates and steps itself: Lightning's automatic optimisation
        # wraps each step in closures and precision-plugin hooks that cost a small model about
        # 2% of its step, and gradient accumulation or clipping, their purpose, are not used.
        self.automatic_optimization = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) embeddings; losses normalise as their distance requires."""
        if self.channels_last:
            x = channels_last_input(x)
        return self.embedder(self.trunk(x))

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings for retrieval."""
        return F.normalize(self(x).float(), dim=1)

    def compute_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The loss of one batch (mined tuples first, for losses with a miner)."""
        x, y = batch
        embeddings = self(x).float()
        # Losses and miners in float32 even under bf16 autocast: scaled cosine logits (ArcFace,
        # CosFace, NT-Xent) lose too much precision in bfloat16.
        with torch.autocast(device_type=self.device.type, enabled=False):
            tuples = self.miner(embeddings, y) if self.miner is not None else None
            return self.loss_fn(embeddings, y, tuples)

    def training_step(self, dataloader_iter: Iterator[Any]) -> None:
        """One epoch: an optimizer step (:meth:`train_batch`) on each of its batches.

        Lightning calls this once per epoch with its batch iterator rather than once per batch:
        its per-batch hooks, progress counters and fetch bookkeeping cost a small model about
        4% of its step (``benchmarks/train_loop.py``), and dmlopt uses none of them between
        two validations. Validation cadence, callbacks, precision (the autocast Lightning puts
        around this step) and the model's placement stay Lightning's.
        """
        # The paper keeps the trunk's BatchNorm statistics fixed. Lightning sets module modes
        # itself (it never calls ``train()`` during fit, and restores modes after validation),
        # so the layers are put back in eval mode at the start of every epoch.
        if self.freeze_batchnorm:
            for m in self._batchnorms:
                m.eval()
        optimizer = self.optimizers(use_pl_optimizer=False)
        assert isinstance(optimizer, torch.optim.Optimizer)
        for batch in _read_without_autocast(dataloader_iter):
            if self.train_batch(to_device(batch, self.device), optimizer) is None:
                return  # diverged: training stops at once

    def train_batch(
        self, batch: tuple[torch.Tensor, torch.Tensor], optimizer: torch.optim.Optimizer
    ) -> torch.Tensor | None:
        """One optimizer step on ``batch``; its loss, or ``None`` (and no step) when the loss
        is not finite, which marks training diverged and stops it."""
        loss = self.compute_loss(batch)
        if not torch.isfinite(loss):
            self._stop_diverged()
            return None
        optimizer.zero_grad(set_to_none=True)
        # Not manual_backward: its hooks are unused here, and neither precision a study may
        # choose (32-true, bf16-mixed) scales the loss, which is what it would be for.
        loss.backward()
        optimizer.step()
        self.steps_done += 1
        # No self.log of the loss here: nothing reads it (no logger, no progress bar), and
        # Lightning's per-step logging machinery cost about 2% of a small model's step.
        return loss.detach()

    def _stop_diverged(self) -> None:
        if self.diverged is None:
            self.diverged = {"epoch": self.current_epoch + 1, "step": self.steps_done}
        self.trainer.should_stop = True

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self._val_outputs.append((self.embed(x).cpu(), y.cpu()))

    def predict_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        """Embeddings for :func:`dmlopt.study.fold.embed`, made as validation makes them."""
        return self.embed(batch[0]).cpu()

    def on_validation_epoch_end(self) -> None:
        embeddings = torch.cat([e for e, _ in self._val_outputs]).numpy()
        labels = torch.cat([y for _, y in self._val_outputs]).numpy()
        self._val_outputs.clear()
        if not np.isfinite(embeddings).all():  # the last optimizer step made the weights blow up
            self._stop_diverged()
        self.val_map_at_r = retrieval_scores_or_zero(embeddings, labels)["map_at_r"]

    def configure_optimizers(self) -> Any:
        c = self.optimizer_config
        groups: list[dict[str, Any]] = [
            {"params": [*self.trunk.parameters(), *self.embedder.parameters()]}
        ]
        loss_params = list(self.loss_fn.parameters())
        if loss_params:
            groups.append(
                {
                    "params": loss_params,
                    "lr": self.loss_lr if self.loss_lr is not None else c.lr,
                    "weight_decay": (
                        c.weight_decay if self.loss_weight_decay is None else self.loss_weight_decay
                    ),
                }
            )
        kwargs: dict[str, Any] = {"lr": c.lr, "weight_decay": c.weight_decay}
        if c.name in _WITH_MOMENTUM:
            kwargs["momentum"] = c.momentum
        return OPTIMIZERS[c.name](groups, **kwargs)
