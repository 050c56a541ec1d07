"""Trunks (feature extractors) and the embedding head: plain ``nn.Module``s.

Trunks are registered by import path so that validating a study file does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmlopt.errors import DmloptError
from dmlopt.imports import resolve

if TYPE_CHECKING:
    from torch import nn

    from dmlopt.config import ModelConfig

#: trunk name -> "module:factory"; a factory takes the input shape and returns (module, out_dim).
TRUNKS: dict[str, str] = {
    "small_cnn": "dmlopt.models.small_cnn:small_cnn",
    "mlp": "dmlopt.models.mlp:mlp",
    "bninception": "dmlopt.models.bninception:bninception",
    "resnet50": "dmlopt.models.resnet:resnet50",
}


def trunk_names() -> list[str]:
    return list(TRUNKS)


def build_model(config: ModelConfig, input_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """The trunk (with pretrained weights if given) and a fresh linear embedder."""
    from torch import nn

    from dmlopt.models.pretrained import load_pretrained

    try:
        trunk, out_dim = resolve(TRUNKS[config.trunk])(input_shape)
    except ValueError as e:  # the input does not fit the trunk (channels, size)
        raise DmloptError(f"model: {e}") from None
    if config.pretrained is not None:
        load_pretrained(trunk, config.pretrained)
    return trunk, nn.Linear(out_dim, config.embedding_dim)


__all__ = ["TRUNKS", "build_model", "trunk_names"]
