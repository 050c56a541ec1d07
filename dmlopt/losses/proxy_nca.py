"""ProxyNCA (Movshovitz-Attias et al. 2017): one learned proxy per training class."""

from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range

register(
    LossSpec(
        key="proxy_nca",
        loss_class="ProxyNCALoss",
        space={"softmax_scale": Range(0.01, 100.0)},
        needs_num_classes=True,
        needs_embedding_size=True,
        has_parameters=True,
        summary="NCA against one learned proxy per class",
    )
)
