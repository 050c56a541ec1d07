"""Open Metric Learning's CSV layout: ``root/<csv>`` with ``label`` and ``path`` columns.

OML's ``split``, ``is_query`` and ``is_gallery`` columns are ignored: dmlopt makes its own class
split (first half of the sorted classes train/val, second half test), so every method is compared
on the same classes. Optional bounding boxes ``x_1, x_2, y_1, y_2`` crop the image before the
transform, as OML does; a row whose box cells are empty is used whole.
"""

from __future__ import annotations

import csv

import torch

from dmlopt.config import OmlCsvData
from dmlopt.data.folder import ImageListDataset, require_file
from dmlopt.data.transforms import load_image
from dmlopt.errors import DmloptError

REQUIRED = ("label", "path")
BOX = ("x_1", "y_1", "x_2", "y_2")  # in PIL's crop order (left, top, right, bottom)

Box = tuple[float, float, float, float]


class OmlCsvDataset(ImageListDataset):
    """Labels are integers when every label parses as one, otherwise strings."""

    def __init__(self, config: OmlCsvData) -> None:
        table = require_file(config.root / config.csv, "OML dataframe")
        with table.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            has_boxes = any(c in columns for c in BOX)
            missing = [c for c in REQUIRED + (BOX if has_boxes else ()) if c not in columns]
            if missing:
                raise DmloptError(f"{table}: missing column(s) {', '.join(missing)}")
            rows = list(reader)
        try:
            self.boxes = [_box(row) if has_boxes else None for row in rows]
        except ValueError as e:
            raise DmloptError(f"{table}: bad bounding box: {e}") from None
        labels = [row["label"] for row in rows]
        try:
            class_of: list[int] | list[str] = [int(label) for label in labels]
        except ValueError:
            class_of = labels
        paths = [config.root / row["path"] for row in rows]  # an absolute path stays as it is
        super().__init__(paths, class_of, config.transform)

    def read(self, index: int, *, train: bool) -> torch.Tensor:
        return load_image(self.paths[index], self.transform, train=train, box=self.boxes[index])


def _box(row: dict[str, str]) -> Box | None:
    """The row's ``(x1, y1, x2, y2)``, or ``None`` when its box cells are empty (or NaN)."""
    cells = [(row[c] or "").strip() for c in BOX]
    if all(cell.lower() in ("", "nan") for cell in cells):
        return None
    x1, y1, x2, y2 = (float(cell) for cell in cells)
    return x1, y1, x2, y2
