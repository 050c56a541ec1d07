"""Contrastive loss (Hadsell et al. 2006): pull positives within ``pos_margin``, push negatives
beyond ``neg_margin``."""

from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range

register(
    LossSpec(
        key="contrastive",
        loss_class="ContrastiveLoss",
        space={"pos_margin": Range(-0.2, 2.0), "neg_margin": Range(-0.2, 2.0)},
        summary="pairs: positives within pos_margin, negatives beyond neg_margin",
    )
)
