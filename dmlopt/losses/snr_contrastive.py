"""Signal-to-noise-ratio contrastive loss (Yuan et al. 2019) with its zero-mean regulariser.

The reference code's ``regularizer_weight`` is pytorch-metric-learning's
``ZeroMeanRegularizer`` on the embeddings, weighted by it.
"""

from typing import Any

from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range


def _zero_mean_regularizer(kwargs: dict[str, Any]) -> dict[str, Any]:
    from pytorch_metric_learning.regularizers import ZeroMeanRegularizer

    weight = kwargs.pop("regularizer_weight")
    return {
        **kwargs,
        "embedding_regularizer": ZeroMeanRegularizer(),
        "embedding_reg_weight": weight,
    }


register(
    LossSpec(
        key="snr_contrastive",
        loss_class="SignalToNoiseRatioContrastiveLoss",
        space={
            "pos_margin": Range(0.0, 2.0),
            "neg_margin": Range(0.0, 2.0),
            "regularizer_weight": Range(0.0, 1.0),
        },
        to_kwargs=_zero_mean_regularizer,
        summary="contrastive loss on the signal-to-noise-ratio distance",
    )
)
