"""Stanford Online Products in its official layout: ``Ebay_train.txt`` and ``Ebay_test.txt``.

Each list has a header ``image_id class_id super_class_id path`` and one image per row, its path
relative to the root. Both lists are used (dmlopt splits by class: the first 11,317 class ids
train/val, the last 11,317 test).
"""

from __future__ import annotations

from dmlopt.config import BenchmarkData
from dmlopt.data.folder import ImageListDataset, require_file
from dmlopt.errors import DmloptError

LISTS = ("Ebay_train.txt", "Ebay_test.txt")


class SopDataset(ImageListDataset):
    """Classes are the integer ``class_id`` values, sorted numerically (label = class_id - 1)."""

    def __init__(self, config: BenchmarkData) -> None:
        paths, classes = [], []
        for name in LISTS:
            listing = require_file(config.root / name, "SOP image list")
            rows = listing.read_text().splitlines()[1:]
            for line_no, row in enumerate(rows, start=2):
                if not row.strip():
                    continue
                try:
                    _, class_id, _, path = row.split()
                    classes.append(int(class_id))
                except ValueError:
                    raise DmloptError(
                        f"{listing}:{line_no}: expected 'image_id class_id super_class_id path', "
                        f"got {row!r}"
                    ) from None
                paths.append(config.root / path)
        super().__init__(paths, classes, config.transform)
