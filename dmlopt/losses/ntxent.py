"""NT-Xent (normalized temperature-scaled cross entropy; Sohn 2016, Chen et al. 2020)."""

from dmlopt.losses.registry import LossSpec, register
from dmlopt.search_space import Range

register(
    LossSpec(
        key="ntxent",
        loss_class="NTXentLoss",
        # Cars/SOP range; the paper used [1e-4, 100] on CUB (studies/reality_check/cub200.yaml).
        space={"temperature": Range(1e-5, 100.0, log=True)},
        summary="InfoNCE over the batch's positive pairs, temperature-scaled",
    )
)
