"""CosFace (Wang et al. 2018): additive cosine margin on a normalized classifier."""

from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range

register(
    LossSpec(
        key="cosface",
        loss_class="CosFaceLoss",
        space={"margin": Range(0.0, 1.0), "scale": Range(0.01, 200.0)},
        needs_num_classes=True,
        needs_embedding_size=True,
        has_parameters=True,
        summary="normalized softmax with cos(theta) - margin for the true class",
    )
)
