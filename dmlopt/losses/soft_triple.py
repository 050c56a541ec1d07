"""SoftTriple (Qian et al. 2019): several learned centers per class, with their sparsity
regulariser (``reg_weight``, pytorch-metric-learning's ``SparseCentersRegularizer``)."""

from typing import Any

from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range

CENTERS_PER_CLASS = 10


def _sparse_centers_regularizer(kwargs: dict[str, Any]) -> dict[str, Any]:
    from pytorch_metric_learning.regularizers import SparseCentersRegularizer

    weight = kwargs.pop("reg_weight")
    regularizer = SparseCentersRegularizer(kwargs["num_classes"], kwargs["centers_per_class"])
    return {**kwargs, "weight_regularizer": regularizer, "weight_reg_weight": weight}


register(
    LossSpec(
        key="soft_triple",
        loss_class="SoftTripleLoss",
        space={
            "la": Range(0.01, 100.0),
            "gamma": Range(0.01, 100.0),
            "reg_weight": Range(0.0, 1.0),
            "margin": Range(0.0, 1.0),
        },
        fixed={"centers_per_class": CENTERS_PER_CLASS},
        needs_num_classes=True,
        needs_embedding_size=True,
        has_parameters=True,
        to_kwargs=_sparse_centers_regularizer,
        summary="softmax over several learned centers per class",
    )
)
