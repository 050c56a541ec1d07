"""FastAP (Cakir et al. 2019): a differentiable approximation of average precision.

The paper searched num_bins on a grid 2..32 at batch 32; here it is an integer range.
"""

from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range

register(
    LossSpec(
        key="fastap",
        loss_class="FastAPLoss",
        space={"num_bins": Range(2, 32, integer=True)},
        summary="histogram-binned average precision of each query's ranking",
    )
)
