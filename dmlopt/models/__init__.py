"""Trunks (feature extractors) and the embedding head: plain ``nn.Module``s.

Trunks are registered by import path so that validating a study file does not import torch.
A study file may name a factory of its own (``"module:function"``), and installed packages
register theirs under the entry-point group ``dmlopt.trunks`` (:mod:`dmlopt.plugins`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmlopt.errors import DmloptError
from dmlopt.imports import resolve
from dmlopt.plugins import entry_points, is_import_path

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
    """Built-in trunks, then those installed packages register."""
    return [*TRUNKS, *sorted(set(entry_points("trunk")) - set(TRUNKS))]


def trunk_import_path(name: str) -> str:
    """The factory ``name`` stands for, as ``"module:function"``."""
    if name in TRUNKS:
        return TRUNKS[name]
    from dmlopt.plugins import import_path_of

    return import_path_of("trunk", name)


def is_user_trunk(name: str) -> bool:
    """Whether ``name`` is user code (an import path or an installed package's trunk)."""
    return name not in TRUNKS and (is_import_path(name) or name in entry_points("trunk"))


def build_model(config: ModelConfig, input_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """The trunk (with pretrained weights if given) and a fresh linear embedder."""
    from torch import nn

    from dmlopt.models.pretrained import load_pretrained

    if config.trunk in TRUNKS:
        try:
            trunk, out_dim = resolve(TRUNKS[config.trunk])(input_shape)
        except ValueError as e:  # the input does not fit the trunk (channels, size)
            raise DmloptError(f"model: {e}") from None
    else:
        from dmlopt.models.user import build_user_trunk

        trunk, out_dim = build_user_trunk(config.trunk, input_shape)
    if config.pretrained is not None:
        load_pretrained(trunk, config.pretrained)
    return trunk, nn.Linear(out_dim, config.embedding_dim)


__all__ = ["TRUNKS", "build_model", "is_user_trunk", "trunk_import_path", "trunk_names"]
