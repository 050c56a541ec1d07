"""What the package registers with dmlopt (entry point ``dmlopt.losses``): the loss by import
path with its search space. This module imports no torch, so ``dmlopt losses`` stays quick."""

from dmlopt.losses import LossSpec
from dmlopt.search_space import Range

PROXY_MARGIN = LossSpec(
    key="proxy_margin",
    loss_class="own_loss.losses:ProxyMarginLoss",
    space={"margin": Range(0.0, 0.5), "scale": Range(4.0, 64.0, log=True)},
    needs_num_classes=True,
    needs_embedding_size=True,
    has_parameters=True,
    summary="proxies with an additive cosine margin (example plugin)",
)
