"""Embedding regularisers as the paper's code applied them (imports torch: load lazily)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_metric_learning.regularizers import ZeroMeanRegularizer


class NormalizedZeroMeanRegularizer(ZeroMeanRegularizer):
    """``mean_i |sum_j e_ij|`` over L2-normalised embeddings ``e``.

    pytorch-metric-learning 2.x applies embedding regularisers to the raw embeddings; the
    paper's code (its version 0.9) normalised embeddings before the loss and its regulariser.
    On raw embeddings the term grows with the embedding scale, so a searched weight would mean
    something else than in the paper; on normalised ones it does not depend on the scale.
    """

    def compute_loss(self, embeddings: torch.Tensor) -> dict[str, dict[str, object]]:
        return super().compute_loss(F.normalize(embeddings, p=2, dim=1))
