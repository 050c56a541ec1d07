"""The LightningModule that trains any registered loss on a trunk + linear embedder."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from dmlopt.config import OptimizerConfig
from dmlopt.metrics import retrieval_scores_or_zero

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}
_WITH_MOMENTUM = {"rmsprop", "sgd"}


class MetricLearningModule(pl.LightningModule):
    """Trunk -> linear embedder -> metric loss (optionally on mined tuples).

    The loss's own parameters (proxies, class weights, betas) train in their own optimizer
    group with their own learning rate. Validation logs ``val/map_at_r``, ``val/r_precision`` and
    ``val/precision_at_1`` over the val classes, on L2-normalised embeddings.
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
        # Images in channels-last (NHWC) layout: on a CPU, small_cnn's steps take about 1.5x
        # less time (pooling and BatchNorm vectorise over channels); on a GPU it is the layout
        # tensor cores want. No effect on non-image (2-d) inputs.
        self.channels_last = channels_last
        if channels_last:
            self.trunk.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        # The step zeroes, backpropagates and steps itself: Lightning's automatic optimisation
        # wraps each step in closures and precision-plugin hooks that cost a small model about
        # 2% of its step, and gradient accumulation or clipping, their purpose, are not used.
        self.automatic_optimization = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) embeddings; losses normalise as their distance requires."""
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.embedder(self.trunk(x))

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings for retrieval."""
        return F.normalize(self(x).float(), dim=1)

    def train(self, mode: bool = True) -> MetricLearningModule:
        super().train(mode)
        if mode and self.freeze_batchnorm:  # the paper keeps BatchNorm statistics fixed
            for m in self.trunk.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def compute_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The loss of one batch (mined tuples first, for losses with a miner)."""
        x, y = batch
        embeddings = self(x).float()
        # Losses and miners in float32 even under bf16 autocast: scaled cosine logits (ArcFace,
        # CosFace, NT-Xent) lose too much precision in bfloat16.
        with torch.autocast(device_type=self.device.type, enabled=False):
            tuples = self.miner(embeddings, y) if self.miner is not None else None
            return self.loss_fn(embeddings, y, tuples)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        loss = self.compute_loss(batch)
        optimizer = self.optimizers(use_pl_optimizer=False)
        assert isinstance(optimizer, torch.optim.Optimizer)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        # No self.log of the loss here: nothing reads it (no logger, no progress bar), and
        # Lightning's per-step logging machinery cost about 2% of a small model's step.
        return loss.detach()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self._val_outputs.append((self.embed(x).cpu(), y.cpu()))

    def on_validation_epoch_end(self) -> None:
        embeddings = torch.cat([e for e, _ in self._val_outputs]).numpy()
        labels = torch.cat([y for _, y in self._val_outputs]).numpy()
        self._val_outputs.clear()
        for name, value in retrieval_scores_or_zero(embeddings, labels).items():
            self.log(f"val/{name}", value)

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
