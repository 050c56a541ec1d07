"""Multi-Similarity loss (Wang et al. 2019), without its miner."""

from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range

# The paper searched alpha and beta on a linear scale (docs/protocol.md).
MS_SPACE = {"alpha": Range(0.01, 100.0), "beta": Range(0.01, 100.0), "base": Range(0.0, 1.0)}

register(
    LossSpec(
        key="multi_similarity",
        loss_class="MultiSimilarityLoss",
        space=MS_SPACE,
        summary="soft weighting of all pairs by self- and relative similarity",
    )
)
