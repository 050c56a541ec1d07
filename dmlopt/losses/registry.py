"""The loss registry: one :class:`LossSpec` per method, looked up by key (timm-style).

A spec names its pytorch-metric-learning class by string (or a user's class by
``"module:Class"`` import path) so that listing the registry (``dmlopt losses``, study
validation) never imports torch. Installed packages add specs under the entry-point group
``dmlopt.losses`` (:mod:`dmlopt.plugins`); a study file's own losses become specs too
(:class:`dmlopt.config.UserLoss`), so everything downstream treats them all alike.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from dmlopt.errors import DmloptError
from dmlopt.plugins import entry_points, is_import_path, load, load_named
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
        loss_class: class name in ``pytorch_metric_learning.losses``, or a user's class as
            ``"module:Class"``.
        space: the loss's searched keyword arguments (docs/protocol.md), by argument name.
        fixed: keyword arguments always passed, never searched.
        needs_num_classes: pass ``num_classes`` (the fold's training classes) to the loss.
        needs_embedding_size: pass ``embedding_size`` to the loss.
        has_parameters: the loss owns trainable tensors, trained by their own optimizer group
            whose learning rate ``loss_optimizer.lr`` is searched (over ``parameter_lr``).
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
    parameter_lr: Param = PARAMETER_LR

    def search_space(self) -> dict[str, Param]:
        """The full default space under dotted Optuna names."""
        space: dict[str, Param] = {f"loss.{k}": v for k, v in self.space.items()}
        space.update({f"miner.{k}": v for k, v in self.miner_space.items()})
        if self.has_parameters:
            space["loss_optimizer.lr"] = self.parameter_lr
        return space

    def constructor_kwargs(
        self, params: Mapping[str, Value], *, num_classes: int, embedding_dim: int
    ) -> dict[str, Any]:
        """The loss class's keyword arguments for one fold, from dotted parameter values."""
        kwargs: dict[str, Any] = dict(self.fixed)
        kwargs.update({k[5:]: v for k, v in params.items() if k.startswith("loss.")})
        if self.needs_num_classes:
            kwargs["num_classes"] = num_classes
        if self.needs_embedding_size:
            kwargs["embedding_size"] = embedding_dim
        if self.to_kwargs is not None:
            kwargs = self.to_kwargs(kwargs)
        return kwargs

    def loss_type(self) -> Any:
        """The loss class (importing it: torch, or the user's module)."""
        if is_import_path(self.loss_class):
            return load(self.loss_class, f"loss {self.key}")
        return getattr(importlib.import_module("pytorch_metric_learning.losses"), self.loss_class)

    def build(
        self, params: Mapping[str, Value], *, num_classes: int, embedding_dim: int
    ) -> tuple[nn.Module, nn.Module | None]:
        """The loss (and miner) for one fold, from dotted parameter values."""
        miners = importlib.import_module("pytorch_metric_learning.miners")
        kwargs = self.constructor_kwargs(
            params, num_classes=num_classes, embedding_dim=embedding_dim
        )
        loss = self.loss_type()(**kwargs)
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
    """The spec registered under ``key``, built in or installed (loading its entry point); an
    unknown key is a user error naming the known ones."""
    if key in _REGISTRY:
        return _REGISTRY[key]
    if key in entry_points("loss"):
        return _installed(key)
    raise DmloptError(f"unknown loss {key!r} (known: {', '.join(names())})")


def _installed(key: str) -> LossSpec:
    """The :class:`LossSpec` an installed package registers as ``key`` (its key set to ``key``)."""
    spec = load_named("loss", key, f"loss {key}")
    if not isinstance(spec, LossSpec):
        path = entry_points("loss")[key].value
        raise DmloptError(
            f"loss {key}: the entry point {path} is a {type(spec).__name__}, not a "
            "dmlopt.losses.LossSpec"
        )
    return spec if spec.key == key else replace(spec, key=key)


def names(pattern: str = "*") -> list[str]:
    """Keys matching a shell-style wildcard: the built-in ones in registration order, then the
    installed ones (entry points of other names than built-in ones) by name."""
    installed = sorted(k for k in entry_points("loss") if k not in _REGISTRY)
    return [k for k in [*_REGISTRY, *installed] if fnmatch.fnmatchcase(k, pattern)]


def is_builtin(key: str) -> bool:
    """Whether ``key`` is one of dmlopt's own losses (not an installed package's)."""
    return key in _REGISTRY
