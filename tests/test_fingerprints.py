"""Fingerprints of the test split and of the folds: equal for the same data wherever it lives,
different for different data, and scores on different data never share a table."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dmlopt.config import FolderData, ImageTransform, SyntheticData
from dmlopt.data import open_dataset
from dmlopt.data.base import MetricDataset
from dmlopt.data.fingerprint import folds_fingerprint, split_fingerprint
from dmlopt.data.splits import class_disjoint_folds, paper_split
from dmlopt.report.table import format_table
from tests.test_benchmark_datasets import write_image

CLASSES, PER_CLASS = 8, 3


def fingerprints(dataset: MetricDataset) -> dict[str, str]:
    trainval, test = paper_split(dataset.num_classes)
    return {
        "test": split_fingerprint(dataset, test),
        "folds": folds_fingerprint(dataset, class_disjoint_folds(trainval, 2)),
    }


def folder(root: Path) -> MetricDataset:
    return open_dataset(FolderData(name="folder", root=root, transform=ImageTransform(size=16)))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "a" / "images"
    for c in range(CLASSES):
        for k in range(PER_CLASS):
            write_image(root / f"class{c}" / f"{k}.png", (16, 16), seed=c * 10 + k)
    return root


def test_the_same_images_elsewhere_have_the_same_fingerprints(images: Path, tmp_path: Path) -> None:
    copy_root = tmp_path / "b" / "elsewhere"
    shutil.copytree(images, copy_root)
    assert fingerprints(folder(images)) == fingerprints(folder(copy_root))


@pytest.mark.parametrize(
    ("remove", "changed"),
    [("class7/0.png", {"test"}), ("class1/2.png", {"folds"})],
    ids=["a-test-image", "a-train-val-image"],
)
def test_a_removed_image_changes_only_its_splits_fingerprint(
    images: Path, remove: str, changed: set[str]
) -> None:
    before = fingerprints(folder(images))
    (images / remove).unlink()
    after = fingerprints(folder(images))
    assert {k for k in before if before[k] != after[k]} == changed


def test_a_renamed_test_class_changes_the_test_fingerprint(images: Path) -> None:
    before = fingerprints(folder(images))
    (images / "class7").rename(images / "class7b")
    assert fingerprints(folder(images))["test"] != before["test"]


def test_synthetic_fingerprints_follow_the_generator_settings() -> None:
    def synthetic(**changes: Any) -> dict[str, str]:
        base = {"name": "synthetic", "classes": 8, "per_class": 4, "image_size": 16}
        return fingerprints(open_dataset(SyntheticData(**{**base, **changes})))

    assert synthetic() == synthetic()
    for change in ({"seed": 1}, {"image_size": 32}, {"per_class": 5}):
        assert synthetic(**change)["test"] != synthetic()["test"], change


def test_npz_fingerprints_hash_the_feature_rows(tmp_path: Path) -> None:
    from dmlopt.config import NpzData

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 4)), np.repeat(np.arange(8), 3)
    np.savez(tmp_path / "a.npz", X=x, y=y)
    x[-1, 0] += 1.0  # one test row differs
    np.savez(tmp_path / "b.npz", X=x, y=y)
    a, b = (open_dataset(NpzData(name="npz", path=tmp_path / f)) for f in ("a.npz", "b.npz"))
    assert fingerprints(a)["folds"] == fingerprints(b)["folds"]
    assert fingerprints(a)["test"] != fingerprints(b)["test"]


def test_scores_on_different_test_data_get_separate_tables() -> None:
    summary = {"mean": 0.5, "ci95": [0.4, 0.6], "values": [0.45, 0.55]}
    block = {m: summary for m in ("map_at_r", "r_precision", "precision_at_1")}
    entry = {
        "val_map_at_r": 0.5,
        "runs": 2,
        "test": {"separated": block, "concatenated": block},
        "fingerprints": {"test": "aaaa", "folds": "ffff"},
    }
    other = copy.deepcopy(entry)
    other["fingerprints"]["test"] = "bbbb"
    same = format_table({"contrastive": entry, "triplet": entry})
    assert same.count("loss  ") == 1 and "test split fingerprint aaaa" in same
    apart = format_table({"contrastive": entry, "triplet": other})
    assert apart.count("loss  ") == 2
    first, second = apart.split("\n\n")
    assert "aaaa" in first and "contrastive" in first and "triplet" not in first
    assert "bbbb" in second and "triplet" in second and "contrastive" not in second
