"""Normalized softmax (Zhai & Wu 2019; Liu et al. 2017): cosine classifier with a temperature."""

from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range

register(
    LossSpec(
        key="normalized_softmax",
        loss_class="NormalizedSoftmaxLoss",
        space={"temperature": Range(0.01, 100.0, log=True)},
        needs_num_classes=True,
        needs_embedding_size=True,
        has_parameters=True,
        summary="softmax over cosine similarities to learned class weights",
    )
)
