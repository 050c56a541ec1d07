"""A proxy loss with an additive cosine margin, written from scratch in torch.

dmlopt calls a loss as pytorch-metric-learning calls its losses: ``loss(embeddings, labels,
indices_tuple)`` with raw embeddings and integer labels of the fold's training classes, and it
trains the loss's own parameters (here the proxies) with their own learning rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProxyMarginLoss(nn.Module):
    """One learned proxy per class; cross-entropy over scaled cosine similarities to the
    proxies, with ``margin`` subtracted from the similarity to the sample's own proxy."""

    def __init__(
        self, num_classes: int, embedding_size: int, margin: float = 0.2, scale: float = 16.0
    ) -> None:
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(num_classes, embedding_size) / embedding_size**0.5)
        self.margin = margin
        self.scale = scale

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        indices_tuple: object = None,  # mined tuples: this loss uses every sample
    ) -> torch.Tensor:
        cosine = F.normalize(embeddings, dim=1) @ F.normalize(self.proxies, dim=1).T
        margin = F.one_hot(labels, cosine.shape[1]) * self.margin
        return F.cross_entropy(self.scale * (cosine - margin), labels)
