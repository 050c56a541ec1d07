"""Images in ``root/<class>/<image>``; classes sorted by folder name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dmlopt.config import FolderData, ImageTransform
from dmlopt.data.base import MetricDataset, encode_labels
from dmlopt.data.transforms import load_image
from dmlopt.errors import DmloptError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class ImageListDataset(MetricDataset):
    """A list of image paths with their class names; the base of every image dataset."""

    def __init__(
        self, paths: list[Path], class_of: Sequence[Any], transform: ImageTransform
    ) -> None:
        self.paths = paths
        self.transform = transform
        self.labels, self.class_names = encode_labels(class_of)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.transform.channels, self.transform.size, self.transform.size)

    def read(self, index: int, *, train: bool) -> torch.Tensor:
        return load_image(self.paths[index], self.transform, train=train)

    def sample_id(self, index: int) -> str:
        """The image's folder and file name: the same data under another root is the same."""
        path = self.paths[index]
        return f"{path.parent.name}/{path.name}"


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DmloptError(f"{what} not found: {path}")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DmloptError(f"{what} not found: {path}")
    return path


class FolderDataset(ImageListDataset):
    def __init__(self, config: FolderData) -> None:
        root = require_dir(config.root, "dataset root")
        paths, classes = [], []
        for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for image in sorted(class_dir.iterdir()):
                if image.suffix.lower() in IMAGE_SUFFIXES:
                    paths.append(image)
                    classes.append(class_dir.name)
        if not paths:
            raise DmloptError(f"no images in {root}: expected root/<class>/<image>")
        super().__init__(paths, classes, config.transform)
