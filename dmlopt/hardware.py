"""Which device trains and embeds, and whether the study's hardware settings can run here.

Torch only, no Lightning: the check runs before anything is stored, on the quick path."""

from __future__ import annotations

import torch

from dmlopt.config import TrainingConfig
from dmlopt.errors import DmloptError


def device_for(training: TrainingConfig) -> torch.device:
    """The device Lightning trains on for ``accelerator`` (auto: a GPU when there is one)."""
    use_gpu = training.accelerator != "cpu" and torch.cuda.is_available()
    return torch.device("cuda" if use_gpu else "cpu")


def check_hardware(training: TrainingConfig) -> None:
    """Refuse settings this machine cannot run, before a study is opened."""
    if training.accelerator == "gpu" and not torch.cuda.is_available():
        raise DmloptError("training.accelerator is gpu but no GPU is available (use auto or cpu)")
    on_gpu = device_for(training).type == "cuda"
    if training.precision == "bf16-mixed" and on_gpu and not torch.cuda.is_bf16_supported():
        raise DmloptError("training.precision bf16-mixed: this GPU does not support bfloat16")
    if training.deterministic is True and on_gpu:
        # torch raises mid-training on the first op without a deterministic CUDA kernel, and
        # every built-in trunk has one (the backward of adaptive average pooling).
        raise DmloptError(
            "training.deterministic true cannot train on a GPU: the trunks' adaptive average "
            "pooling has no deterministic CUDA kernel (use deterministic: warn)"
        )
