"""``dmlopt embed``: a kept model embeds a study's dataset or a folder of images, no Lightning.

A study file's dataset is embedded whole, in dataset order, and its labels are written beside
the embeddings (``<output stem>.labels.npy``). A folder's images (found recursively, sorted by
path) are read with the evaluation transform the model was trained with, and their paths are
listed beside the embeddings (``<output stem>.files.txt``), one per row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dmlopt.config import ImageTransform, load_study
from dmlopt.errors import DmloptError
from dmlopt.kept import KeptModel, embed, load_model, save_array


class _Images(torch.utils.data.Dataset[torch.Tensor]):
    def __init__(self, paths: list[Path], transform: ImageTransform) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from dmlopt.data.transforms import load_image

        return load_image(self.paths[i], self.transform, train=False)


def _check_shape(model: KeptModel, shape: tuple[int, ...], what: str) -> None:
    if tuple(shape) != model.input_shape:
        raise DmloptError(
            f"{what} gives inputs of shape {tuple(shape)}, the model takes {model.input_shape}"
        )


def embed_command(model_path: str, data: str, output: Path) -> None:
    """Embed ``data`` (a study file or a folder of images) with the model at ``model_path``."""
    model = load_model(model_path)
    batch = model.config.training.eval_batch_size
    source = Path(data)
    stem = output.with_suffix("")
    if source.is_dir():
        from dmlopt.data.folder import IMAGE_SUFFIXES

        transform = getattr(model.config.dataset, "transform", None)
        if not isinstance(transform, ImageTransform):
            raise DmloptError(
                f"the model was trained on dataset {model.config.dataset.name!r}, which has no "
                "image transform: pass a study file with --data"
            )
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DmloptError(f"no images in {source}")
        images = _Images(paths, transform)
        _check_shape(model, tuple(images[0].shape), str(source))
        embeddings = embed(model, images, batch)
        _write_text(stem.with_name(stem.name + ".files.txt"), "".join(f"{p}\n" for p in paths))
    elif source.is_file():
        from dmlopt.data import open_dataset

        dataset = open_dataset(load_study(source).dataset)
        _check_shape(model, tuple(dataset.input_shape), f"the dataset of {source}")
        everything = dataset.view(list(range(dataset.num_classes)), train=False)
        embeddings = embed(model, everything, batch)
        save_array(stem.with_name(stem.name + ".labels.npy"), np.asarray(dataset.labels))
    else:
        raise DmloptError(f"--data {data}: no such study file or folder")
    save_array(output, embeddings)
    print(f"embeddings: {output} ({embeddings.shape[0]} x {embeddings.shape[1]})")


def _write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:
        raise DmloptError(f"cannot write {path}: {e.strerror}") from None
