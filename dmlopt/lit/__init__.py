"""Lightning glue: the module that wraps any loss, and its callbacks. Knows nothing of Optuna."""

from dmlopt.lit.module import MetricLearningModule

__all__ = ["MetricLearningModule"]
