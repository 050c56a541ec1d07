"""Kept models and embeddings of the final stage, and reloading them without Lightning.

With ``final.keep`` at ``embeddings`` (the default) or ``models``, the final stage writes, for
each loss, under ``<output folder>/kept/<loss>/``::

    labels.npy              the test labels, in the order of the embeddings' rows
    run<r>/fold<i>.npy      that fold model's L2-normalised test embeddings (float32)
    run<r>/fold<i>.pt       that fold model (``models`` only): :func:`load_model`

A model file holds the trunk's and embedder's state dicts (and the loss's own parameters) with
the resolved study config, the loss, its parameters and the provenance; it is a plain
dictionary that ``torch.load(..., weights_only=True)`` reads safely.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dmlopt.config import StudyConfig, parse_study
from dmlopt.errors import DmloptError
from dmlopt.models.layout import channels_last, channels_last_input

if TYPE_CHECKING:
    from dmlopt.lit.module import MetricLearningModule

FORMAT = "dmlopt-model/1"
KEPT_DIR = "kept"


def kept_folder(out: Path, loss: str) -> Path:
    """Where a loss's kept models and embeddings go in the output folder ``out``."""
    return out / KEPT_DIR / loss


def _atomic_save(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with partial.open("wb") as f:
        write(f)
    os.replace(partial, path)


def save_array(path: Path, array: np.ndarray) -> None:
    """``array`` as ``.npy`` at ``path``, written atomically."""
    _atomic_save(path, lambda f: np.save(f, array))


def save_model(
    path: Path,
    module: MetricLearningModule,
    config: StudyConfig,
    *,
    loss: str,
    params: Mapping[str, Any],
    input_shape: tuple[int, ...],
    about: Mapping[str, Any],
) -> None:
    """A trained fold model (a :class:`~dmlopt.lit.module.MetricLearningModule`) at ``path``,
    with what :func:`load_model` needs to rebuild it and ``about`` (run, fold, seed, provenance).
    """

    def state(part: nn.Module | None) -> dict[str, torch.Tensor]:
        return {} if part is None else {k: v.detach().cpu() for k, v in part.state_dict().items()}

    checkpoint = {
        "format": FORMAT,
        "config": config.model_copy(update={"storage": None}).model_dump(mode="json"),
        "loss": loss,
        "params": dict(params),
        "input_shape": list(input_shape),
        "trunk": state(module.trunk),
        "embedder": state(module.embedder),
        "loss_state": state(module.loss_fn),
        **about,
    }
    _atomic_save(path, lambda f: torch.save(checkpoint, f))


class KeptModel(nn.Module):
    """A kept fold model: trunk then linear embedder, plus the config that trained it.

    ``model(x)`` gives raw embeddings; :meth:`embed` the L2-normalised ones that were scored.
    ``checkpoint`` holds the rest of the file (loss, params, run, fold, seed, provenance,
    the loss's own parameters under ``loss_state``)."""

    def __init__(
        self, trunk: nn.Module, embedder: nn.Module, config: StudyConfig, checkpoint: dict[str, Any]
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.embedder = embedder
        self.config = config
        self.checkpoint = checkpoint
        self.input_shape = tuple(checkpoint["input_shape"])
        channels_last(self.trunk)  # the layout the fold model trained and embedded in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedder(self.trunk(channels_last_input(x)))

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings, computed as the final stage computed the kept ones."""
        return F.normalize(self(x).float(), dim=1)


def load_model(path: str | os.PathLike[str]) -> KeptModel:
    """A fold model kept by the final stage (``final.keep: models``), in eval mode on the CPU.

    On a CPU, :func:`embed` with it reproduces the kept test embeddings bit for bit (at
    ``training.precision: 32-true``). A trunk of the user's own is imported again by its
    import path."""
    from dmlopt.models import build_model

    try:
        checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as e:
        raise DmloptError(f"cannot read model {path}: {e}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise DmloptError(f"{path} is not a model kept by dmlopt ({FORMAT})")
    config = parse_study(checkpoint["config"], source=str(path))
    # the weights are in the file: a pretrained file named in the config is not needed
    model_config = config.model.model_copy(update={"pretrained": None})
    trunk, embedder = build_model(model_config, tuple(checkpoint["input_shape"]))
    trunk.load_state_dict(checkpoint["trunk"])
    embedder.load_state_dict(checkpoint["embedder"])
    return KeptModel(trunk, embedder, config, checkpoint).eval()


def embed(
    model: KeptModel, samples: Iterable[torch.Tensor] | torch.utils.data.Dataset, batch_size: int
) -> np.ndarray:
    """L2-normalised embeddings of ``samples`` (a dataset of inputs, or of ``(input, label)``
    pairs) in order, in batches of ``batch_size``, on the CPU."""
    loader = torch.utils.data.DataLoader(samples, batch_size=batch_size)  # type: ignore[arg-type]
    parts = []
    model.eval()
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        parts.append(model.embed(x).cpu())
    if not parts:
        return np.empty((0, model.config.model.embedding_dim), dtype=np.float32)
    return torch.cat(parts).numpy()
