"""The benchmark adapters (CUB-200-2011, Cars196, SOP, OML CSV) on miniature generated layouts."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from dmlopt.config import BenchmarkData, DatasetConfig, ImageTransform, OmlCsvData
from dmlopt.data import open_dataset
from dmlopt.data.base import MetricDataset
from dmlopt.data.folder import ImageListDataset
from dmlopt.data.splits import paper_split
from dmlopt.errors import DmloptError

TRANSFORM = ImageTransform(size=16, resize=20)
CUB_CLASSES = ["004.Groove_billed_Ani", "001.Black_footed_Albatross", "010.Red_winged_Blackbird"]
PER_CLASS = 3


def write_image(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    """A small random RGB image at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def open_images(config: DatasetConfig) -> ImageListDataset:
    ds = open_dataset(config)
    assert isinstance(ds, ImageListDataset)
    return ds


def check_reads(ds: MetricDataset) -> None:
    assert ds.input_shape == (3, 16, 16)
    for i in (0, len(ds) - 1):
        for train in (False, True):
            x = ds.read(i, train=train)
            assert isinstance(x, torch.Tensor)
            assert x.shape == (3, 16, 16)
            assert torch.isfinite(x).all()


# --------------------------------------------------------------------------- CUB-200-2011
def make_cub(
    root: Path, classes: list[str], per_class: int = PER_CLASS, size: tuple[int, int] = (40, 30)
) -> Path:
    for c, name in enumerate(classes):
        for k in range(per_class):
            write_image(root / "CUB_200_2011" / "images" / name / f"img_{k}.jpg", size, c * 10 + k)
    return root


def cub(root: Path) -> ImageListDataset:
    return open_images(BenchmarkData(name="cub200", root=root, transform=TRANSFORM))


def test_cub_classes_sorted_by_folder(tmp_path: Path) -> None:
    ds = cub(make_cub(tmp_path, CUB_CLASSES))
    assert len(ds) == len(CUB_CLASSES) * PER_CLASS
    assert ds.class_names == sorted(CUB_CLASSES)
    assert ds.num_classes == 3
    assert [ds.class_names[c] for c in ds.labels] == [p.parent.name for p in ds.paths]
    assert np.bincount(ds.labels).tolist() == [PER_CLASS] * 3
    check_reads(ds)


def test_cub_root_may_be_the_cub_folder(tmp_path: Path) -> None:
    make_cub(tmp_path, CUB_CLASSES)
    ds = cub(tmp_path / "CUB_200_2011")
    assert len(ds) == len(CUB_CLASSES) * PER_CLASS
    assert ds.class_names == sorted(CUB_CLASSES)


def test_cub_missing_images_folder(tmp_path: Path) -> None:
    (tmp_path / "CUB_200_2011").mkdir()
    with pytest.raises(DmloptError, match=re.escape(str(tmp_path / "CUB_200_2011" / "images"))):
        cub(tmp_path)


def test_cub_paper_split_is_folders_001_to_100(tmp_path: Path) -> None:
    names = [f"{i:03d}.Bird_{i}" for i in range(200, 0, -1)]  # created in reverse order
    ds = cub(make_cub(tmp_path, names, per_class=1, size=(8, 8)))
    assert ds.num_classes == 200
    trainval, test = paper_split(ds.num_classes)
    assert trainval == list(range(100))
    assert test == list(range(100, 200))
    assert [ds.class_names[c][:3] for c in trainval] == [f"{i:03d}" for i in range(1, 101)]
    assert [ds.class_names[c][:3] for c in test] == [f"{i:03d}" for i in range(101, 201)]


# --------------------------------------------------------------------------- Cars196
CARS_CLASSES = [10, 2, 1, 196]


def make_cars(root: Path) -> Path:
    """``car_ims/`` and a ``cars_annos.mat`` with the official struct fields."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    dtype = [(f, "O") for f in ["relative_im_path", *fields]]
    annotations = np.zeros((1, len(CARS_CLASSES) * PER_CLASS), dtype=dtype)
    for i, cls in enumerate(c for c in CARS_CLASSES for _ in range(PER_CLASS)):
        rel = f"car_ims/{i + 1:06d}.jpg"
        write_image(root / rel, seed=i)
        values = [1, 2, 38, 28, cls, i % 2]
        annotations[0, i] = (rel, *(np.array([[v]], dtype=np.uint8) for v in values))
    class_names = np.array([f"Make Model {c}" for c in range(1, 197)], dtype=object)
    savemat(root / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    return root


def cars(root: Path) -> ImageListDataset:
    return open_images(BenchmarkData(name="cars196", root=root, transform=TRANSFORM))


def test_cars_numeric_class_order_and_all_images(tmp_path: Path) -> None:
    ds = cars(make_cars(tmp_path))
    assert len(ds) == len(CARS_CLASSES) * PER_CLASS  # the `test` flag is ignored
    assert ds.class_names == ["1", "2", "10", "196"]
    expected = [sorted(CARS_CLASSES).index(c) for c in CARS_CLASSES for _ in range(PER_CLASS)]
    assert ds.labels.tolist() == expected
    assert ds.paths[0] == tmp_path / "car_ims" / "000001.jpg"
    check_reads(ds)


@pytest.mark.parametrize("missing", ["cars_annos.mat", "car_ims"])
def test_cars_missing_file_or_folder(tmp_path: Path, missing: str) -> None:
    make_cars(tmp_path)
    target = tmp_path / missing
    if target.is_dir():
        for image in target.iterdir():
            image.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(DmloptError, match=re.escape(str(target))):
        cars(tmp_path)


# --------------------------------------------------------------------------- SOP
SOP_HEADER = "image_id class_id super_class_id path\n"


def make_sop(root: Path) -> Path:
    """Classes 1, 2 in ``Ebay_train.txt`` and 11, 12 in ``Ebay_test.txt``."""
    image_id = 0
    for name, classes in [("Ebay_train.txt", [2, 1]), ("Ebay_test.txt", [12, 11])]:
        rows = [SOP_HEADER]
        for cls in classes:
            for k in range(PER_CLASS):
                image_id += 1
                rel = f"bicycle_final/{cls}_{k}.JPG"
                write_image(root / rel, seed=image_id)
                rows.append(f"{image_id} {cls} 1 {rel}\n")
        (root / name).write_text("".join(rows))
    return root


def sop(root: Path) -> ImageListDataset:
    return open_images(BenchmarkData(name="sop", root=root, transform=TRANSFORM))


def test_sop_reads_both_lists_with_class_ids(tmp_path: Path) -> None:
    ds = sop(make_sop(tmp_path))
    assert len(ds) == 4 * PER_CLASS
    assert ds.class_names == ["1", "2", "11", "12"]
    assert ds.labels.tolist() == [1] * 3 + [0] * 3 + [3] * 3 + [2] * 3  # train list, then test
    assert ds.paths[0] == tmp_path / "bicycle_final" / "2_0.JPG"
    check_reads(ds)


@pytest.mark.parametrize("missing", ["Ebay_train.txt", "Ebay_test.txt"])
def test_sop_missing_list(tmp_path: Path, missing: str) -> None:
    (make_sop(tmp_path) / missing).unlink()
    with pytest.raises(DmloptError, match=re.escape(str(tmp_path / missing))):
        sop(tmp_path)


# --------------------------------------------------------------------------- OML CSV
def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def oml(root: Path, table: str = "df.csv") -> ImageListDataset:
    return open_images(OmlCsvData(name="oml_csv", root=root, csv=table, transform=TRANSFORM))


def test_oml_ignores_split_columns(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = []
    for i, (label, split) in enumerate([(7, "train"), (3, "validation"), (12, "validation")] * 2):
        rel = f"images/{i}.jpg"
        write_image(tmp_path / rel, seed=i)
        query = split == "validation"
        rows.append(
            {"label": label, "path": rel, "split": split, "is_query": query, "is_gallery": query}
        )
    write_csv(tmp_path / "df.csv", rows)
    ds = oml(tmp_path)
    assert len(ds) == 6
    assert ds.class_names == ["3", "7", "12"]
    assert ds.labels.tolist() == [1, 0, 2] * 2
    check_reads(ds)


def test_oml_string_labels_and_absolute_paths(tmp_path: Path) -> None:
    absolute = write_image(tmp_path / "elsewhere" / "a.png")
    write_image(tmp_path / "data" / "b.png", seed=1)
    write_csv(
        tmp_path / "data" / "my.csv",
        [{"label": "zebra", "path": str(absolute)}, {"label": "10", "path": "b.png"}],
    )
    ds = oml(tmp_path / "data", "my.csv")
    assert ds.class_names == ["10", "zebra"]
    assert ds.labels.tolist() == [1, 0]
    check_reads(ds)


def test_oml_bbox_crops_before_transform(tmp_path: Path) -> None:
    pixels = np.zeros((30, 40, 3), dtype=np.uint8)
    pixels[:, 20:] = 255  # left half black, right half white
    Image.fromarray(pixels).save(tmp_path / "half.png")
    box = {"x_1": 22, "x_2": 38, "y_1": 2, "y_2": 28}
    no_box = {"x_1": "", "x_2": "", "y_1": "", "y_2": ""}
    write_csv(
        tmp_path / "df.csv",
        [{"label": 0, "path": "half.png", **box}, {"label": 1, "path": "half.png", **no_box}],
    )
    ds = oml(tmp_path)
    for train in (False, True):
        cropped = ds.read(0, train=train)
        assert cropped.shape == (3, 16, 16)
        assert torch.allclose(cropped, cropped[:, :1, :1].expand_as(cropped))
    white = [(1 - m) / s for m, s in zip(TRANSFORM.mean, TRANSFORM.std, strict=True)]
    assert cropped[:, 0, 0].tolist() == pytest.approx(white, abs=1e-5)
    whole = ds.read(1, train=False)  # empty box cells: the whole image, both halves
    assert whole.amax() - whole.amin() > 1


def test_oml_missing_columns(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    write_csv(tmp_path / "df.csv", [{"path": "a.jpg", "split": "train"}])
    with pytest.raises(DmloptError, match=re.escape("missing column(s) label")):
        oml(tmp_path)
    write_csv(tmp_path / "df.csv", [{"label": 1}])
    with pytest.raises(DmloptError, match=re.escape("missing column(s) path")):
        oml(tmp_path)


def test_oml_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(DmloptError, match=re.escape(str(tmp_path / "df.csv"))):
        oml(tmp_path)
