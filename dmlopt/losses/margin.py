"""Margin loss (Wu et al. 2017) with a learned boundary beta: one shared, or one per class.

Beta is a trained parameter without weight decay (decay would pull the boundary to zero).
"""

from dataclasses import replace

from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range

MARGIN = register(
    LossSpec(
        key="margin",
        loss_class="MarginLoss",
        space={"margin": Range(-0.2, 2.0), "beta": Range(-0.2, 2.0)},
        fixed={"nu": 0.0, "learn_beta": True},
        has_parameters=True,
        parameter_weight_decay=0.0,
        summary="distance-weighted pairs around a learned boundary beta (one beta)",
    )
)

register(
    replace(
        MARGIN,
        key="margin_per_class",
        needs_num_classes=True,
        summary="margin loss with one learned beta per training class",
    )
)
