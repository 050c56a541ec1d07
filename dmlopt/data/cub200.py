"""CUB-200-2011 in its official layout: ``CUB_200_2011/images/<NNN.name>/*.jpg``.

Classes are the folders sorted by name (``001.Black_footed_Albatross`` ..
``200.Common_Yellowthroat``), so the paper's split puts folders 001-100 in train/val and 101-200
in test.
"""

from __future__ import annotations

from dmlopt.config import BenchmarkData, FolderData
from dmlopt.data.folder import FolderDataset, require_dir


class Cub200Dataset(FolderDataset):
    """``root`` is the folder holding ``CUB_200_2011`` or the ``CUB_200_2011`` folder itself."""

    def __init__(self, config: BenchmarkData) -> None:
        images = config.root / "CUB_200_2011" / "images"
        if not images.is_dir() and (config.root / "images").is_dir():
            images = config.root / "images"
        require_dir(images, "CUB-200-2011 images folder")
        super().__init__(FolderData(name="folder", root=images, transform=config.transform))
