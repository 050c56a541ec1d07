"""The loss registry: one :class:`LossSpec` per method, looked up by key (timm-style).

A spec names its pytorch-metric-learning class by string so that listing the registry
(``dmlopt losses``, study validation) never imports torch.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dmlopt.errors import DmloptError
from dmlopt.search_space import Param, Range, Value

if TYPE_CHECKING:
    from torch import nn

#: The learning rate of a loss's own parameters (proxies, class weights, betas), as the paper.
PARAMETER_LR = Range(1e-6, 1.0, log=True)


@dataclass(frozen=True)
class LossSpec:
    """How to build one metric-learning method and what to search for it.

    Attributes:
        key: registry key, e.g. ``"contrastive"``.
        loss_class: class name in ``pytorch_metric_learning.losses``.
        space: the loss's searched keyword arguments (docs/protocol.md), by argument name.
        fixed: keyword arguments always passed, never searched.
        needs_num_classes: pass ``num_classes`` (the fold's training classes) to the loss.
        needs_embedding_size: pass ``embedding_size`` to the loss.
        has_parameters: the loss owns trainable tensors, trained by their own optimizer group
            whose learning rate ``loss_optimizer.lr`` is searched.
        parameter_weight_decay: weight decay of that group; ``None`` means the training one.
        miner_class: class name in ``pytorch_metric_learning.miners``, if the method mines.
        miner_space: the miner's searched keyword arguments.
        to_kwargs: turns searched values into the class's arguments where they differ
            (e.g. a regulariser weight that pytorch-metric-learning takes as an object).
        summary: one line for ``dmlopt losses``.
    """

    key: str
    loss_class: str
    space: Mapping[str, Param]
    summary: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    needs_num_classes: bool = False
    needs_embedding_size: bool = False
    has_parameters: bool = False
    parameter_weight_decay: float | None = None
    miner_class: str | None = None
    miner_space: Mapping[str, Param] = field(default_factory=dict)
    to_kwargs: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def search_space(self) -> dict[str, Param]:
        """The full default space under dotted Optuna names."""
        space: dict[str, Param] = {f"loss.{k}": v for k, v in self.space.items()}
        space.update({f"miner.{k}": v for k, v in self.miner_space.items()})
        if self.has_parameters:
            space["loss_optimizer.lr"] = PARAMETER_LR
        return space

    def build(
        self, params: Mapping[str, Value], *, num_classes: int, embedding_dim: int
    ) -> tuple[nn.Module, nn.Module | None]:
        """The loss (and miner) for one fold, from dotted parameter values."""
        losses = importlib.import_module("pytorch_metric_learning.losses")
        miners = importlib.import_module("pytorch_metric_learning.miners")
        kwargs: dict[str, Any] = dict(self.fixed)
        kwargs.update({k[5:]: v for k, v in params.items() if k.startswith("loss.")})
        if self.needs_num_classes:
            kwargs["num_classes"] = num_classes
        if self.needs_embedding_size:
            kwargs["embedding_size"] = embedding_dim
        if self.to_kwargs is not None:
            kwargs = self.to_kwargs(kwargs)
        loss = getattr(losses, self.loss_class)(**kwargs)
        miner = None
        if self.miner_class is not None:
            miner_kwargs = {k[6:]: v for k, v in params.items() if k.startswith("miner.")}
            miner = getattr(miners, self.miner_class)(**miner_kwargs)
        return loss, miner


_REGISTRY: dict[str, LossSpec] = {}


def register(spec: LossSpec) -> LossSpec:
    """Add a method to the registry; keys are unique."""
    if spec.key in _REGISTRY:
        raise ValueError(f"loss {spec.key!r} is registered twice")
    _REGISTRY[spec.key] = spec
    return spec


def get(key: str) -> LossSpec:
    """The spec registered under ``key``; an unknown key is a user error naming the known ones."""
    try:
        return _REGISTRY[key]
    except KeyError:
        raise DmloptError(f"unknown loss {key!r} (known: {', '.join(_REGISTRY)})") from None


def names(pattern: str = "*") -> list[str]:
    """Registered keys matching a shell-style wildcard, in registration order."""
    return [k for k in _REGISTRY if fnmatch.fnmatchcase(k, pattern)]
