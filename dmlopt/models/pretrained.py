"""Pretrained weights come from a local file only: dmlopt never downloads anything."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dmlopt.errors import DmloptError


def load_pretrained(trunk: nn.Module, path: Path) -> None:
    """Load a state dict (or a checkpoint holding one under ``state_dict``) into ``trunk``.

    Keys of a classifier head that the trunk does not have (``fc.*``, ``last_linear.*``) are
    ignored; any other mismatch is an error, so a wrong file never loads silently.
    """
    if not path.is_file():
        raise DmloptError(f"pretrained weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: say which
        raise DmloptError(f"cannot read pretrained weights {path}: {e}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DmloptError(f"pretrained weights {path} hold no state dict")
    own = trunk.state_dict()
    state = {
        k: v for k, v in state.items() if k in own or not k.startswith(("fc.", "last_linear."))
    }
    wrong = [
        f"{k} {tuple(getattr(v, 'shape', ()))} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and getattr(v, "shape", None) != own[k].shape
    ]
    if wrong:  # load_state_dict would raise a bare RuntimeError
        raise DmloptError(
            f"pretrained weights {path} do not fit the trunk: "
            f"{len(wrong)} tensors of the wrong shape (e.g. {wrong[:2]})"
        )
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DmloptError(
            f"pretrained weights {path} do not fit the trunk: "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
