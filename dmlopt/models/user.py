"""Trunks of the user's own: a factory called with the input shape.

The factory returns ``(module, features)`` as the built-in ones do, or just the module, whose
number of output features is then measured on one zero input (in eval mode, so BatchNorm
statistics stay untouched).
"""

from __future__ import annotations

import torch
from torch import nn

from dmlopt.errors import DmloptError
from dmlopt.plugins import check_call, import_path_of, load


def build_user_trunk(name: str, input_shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    """The trunk the factory ``name`` (import path or installed name) builds for
    ``input_shape``, and its number of output features."""
    path = import_path_of("trunk", name)
    what = f"model.trunk {path}"
    factory = load(path, what)
    if not callable(factory):
        raise DmloptError(f"{what}: not callable (expected a function of the input shape)")
    check_call(factory, (input_shape,), {}, what)
    try:
        made = factory(input_shape)
    except ValueError as e:  # the input does not fit the trunk, as the built-in ones say
        raise DmloptError(f"model: {e}") from None
    module, features = made if isinstance(made, tuple) else (made, None)
    if not isinstance(module, nn.Module):
        raise DmloptError(
            f"{what}: returned a {type(module).__name__}, expected a torch.nn.Module "
            "(or a (module, features) pair)"
        )
    if features is None:
        features = _output_features(module, input_shape, what)
    return module, int(features)


def _output_features(module: nn.Module, input_shape: tuple[int, ...], what: str) -> int:
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, *input_shape))
    except Exception as e:  # the user's module does not take this input
        raise DmloptError(
            f"{what}: cannot run on input of shape {tuple(input_shape)} ({type(e).__name__}: {e})"
        ) from None
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DmloptError(f"{what}: expected (batch, features) outputs, got {shape}")
    return int(out.shape[1])
