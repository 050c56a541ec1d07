"""Multi-Similarity loss with the Multi-Similarity miner (Wang et al. 2019) and its epsilon."""

from dmlopt.losses.multi_similarity import MS_SPACE
from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range

register(
    LossSpec(
        key="multi_similarity_miner",
        loss_class="MultiSimilarityLoss",
        space=MS_SPACE,
        miner_class="MultiSimilarityMiner",
        miner_space={"epsilon": Range(0.0, 1.0)},
        summary="multi-similarity loss on the pairs its miner keeps",
    )
)
