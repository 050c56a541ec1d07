"""Triplet margin loss (Weinberger & Saul 2009; Schroff et al. 2015), all triplets per anchor."""

from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range

register(
    LossSpec(
        key="triplet",
        loss_class="TripletMarginLoss",
        space={"margin": Range(-0.2, 2.0)},
        fixed={"triplets_per_anchor": "all"},
        summary="triplets: d(a, p) + margin < d(a, n), every triplet of the batch",
    )
)
