"""ArcFace (Deng et al. 2019): additive angular margin, in degrees as pytorch-metric-learning."""

from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range

register(
    LossSpec(
        key="arcface",
        loss_class="ArcFaceLoss",
        space={"margin": Range(0.0, 90.0), "scale": Range(0.01, 200.0)},
        needs_num_classes=True,
        needs_embedding_size=True,
        has_parameters=True,
        summary="normalized softmax with cos(theta + margin degrees) for the true class",
    )
)
