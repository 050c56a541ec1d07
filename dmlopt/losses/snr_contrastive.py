"""Signal-to-noise-ratio contrastive loss (Yuan et al. 2019) with its zero-mean regulariser.

The paper's ``regularizer_weight`` weights a zero-mean regulariser of the L2-normalised
embeddings, ``mean_i |sum_j e_ij|``
(:class:`~dmlopt.losses.regularizers.NormalizedZeroMeanRegularizer`).
"""

from typing import Any

from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range


def _zero_mean_regularizer(kwargs: dict[str, Any]) -> dict[str, Any]:
    from dmlopt.losses.regularizers import NormalizedZeroMeanRegularizer

    weight = kwargs.pop("regularizer_weight")
    return {
        **kwargs,
        "embedding_regularizer": NormalizedZeroMeanRegularizer(),
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
