"""The search never reads a test-class sample: not its image, not its features.

Each dataset kind is searched with every read recorded (and, for images, with the test-class
files corrupt, so a read would also crash the search); then the final stage runs and must read
the test classes, which shows the recording would have caught a leak.
"""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

import dmlopt.data.npz as npz_module
from dmlopt.cli import main
from dmlopt.config import NpzData
from dmlopt.data.folder import FolderDataset
from dmlopt.data.npz import NpzDataset
from dmlopt.data.splits import paper_split
from dmlopt.data.synthetic import SyntheticDataset
from dmlopt.errors import DmloptError
from tests.conftest import TINY_STUDY

N_CLASSES = 16
PER_CLASS = 8
TRAINVAL, TEST = paper_split(N_CLASSES)  # classes 0-7 search, 8-15 final only


def write_study(path: Path, dataset: dict[str, Any], **changes: Any) -> Path:
    data = {**copy.deepcopy(TINY_STUDY), "dataset": dataset, **changes}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def dmlopt(*argv: object) -> int:
    return main([str(a) for a in argv])


class Recorder:
    """Wraps a method on a class and records one key per call, by stage."""

    def __init__(self) -> None:
        self.stage = "search"
        self.seen: dict[str, list[Any]] = {"search": [], "final": []}

    def record(self, key: Any) -> None:
        self.seen[self.stage].append(key)


# --------------------------------------------------------------------------- folder of images
def _png(path: Path, rng: np.random.Generator) -> None:
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L").save(path)


def test_folder_search_never_opens_a_test_class_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    class_dirs = [root / f"c{c:02d}" for c in range(N_CLASSES)]  # sorted by name = by number
    test_files: set[Path] = set()
    for c, class_dir in enumerate(class_dirs):
        class_dir.mkdir(parents=True)
        for i in range(PER_CLASS):
            path = class_dir / f"img{i}.png"
            if c in TEST:
                path.write_bytes(rng.bytes(200))  # corrupt: decoding it would fail
                test_files.add(path)
            else:
                _png(path, rng)
    study = write_study(
        tmp_path / "study.yaml",
        {
            "name": "folder",
            "root": str(root),
            "transform": {"size": 16, "channels": 1, "mean": [0.5], "std": [0.25]},
        },
    )
    recorder = Recorder()
    read, image_open = FolderDataset.read, Image.open

    def recording_read(self: FolderDataset, index: int, *, train: bool) -> Any:
        recorder.record(Path(self.paths[index]))
        return read(self, index, train=train)

    def recording_open(fp: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(fp, (str, Path)):
            recorder.record(Path(fp))
        return image_open(fp, *args, **kwargs)

    monkeypatch.setattr(FolderDataset, "read", recording_read)
    monkeypatch.setattr(Image, "open", recording_open)

    out = tmp_path / "out"
    assert dmlopt("run", study, "--no-final", "--out", out) == 0
    searched = set(recorder.seen["search"])
    assert searched, "the search read no image at all: the recording is broken"
    assert not searched & test_files, sorted(searched & test_files)[:5]
    assert {p.parent.name for p in searched} <= {f"c{c:02d}" for c in TRAINVAL}

    for path in test_files:  # the test images become readable for the final stage only
        _png(path, rng)
    recorder.stage = "final"
    assert dmlopt("final", study, "--out", out) == 0
    assert test_files <= set(recorder.seen["final"])  # every test image is embedded
    assert (out / "final.json").is_file()


# --------------------------------------------------------------------------- synthetic
def test_synthetic_search_never_generates_a_test_class_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = write_study(tmp_path / "study.yaml", copy.deepcopy(TINY_STUDY["dataset"]))
    recorder = Recorder()
    read, prototype = SyntheticDataset.read, SyntheticDataset.prototype

    def recording_read(self: SyntheticDataset, index: int, *, train: bool) -> Any:
        recorder.record(("sample", int(self.labels[index])))
        return read(self, index, train=train)

    def recording_prototype(self: SyntheticDataset, label: int) -> Any:
        recorder.record(("prototype", int(label)))
        return prototype(self, label)

    monkeypatch.setattr(SyntheticDataset, "read", recording_read)
    monkeypatch.setattr(SyntheticDataset, "prototype", recording_prototype)

    out = tmp_path / "out"
    assert dmlopt("run", study, "--no-final", "--out", out) == 0
    searched = set(recorder.seen["search"])
    assert {label for kind, label in searched if kind == "sample"} <= set(TRAINVAL)
    assert {label for kind, label in searched if kind == "prototype"} <= set(TRAINVAL)
    assert ("sample", TRAINVAL[0]) in searched  # the recording works

    recorder.stage = "final"
    assert dmlopt("final", study, "--out", out) == 0
    labels = {label for kind, label in recorder.seen["final"] if kind == "sample"}
    assert set(TEST) <= labels


# --------------------------------------------------------------------------- npz features
class RecordingArray:
    """The memory-mapped ``X`` behind a proxy that records every row index it is asked for;
    asking for the whole array (``np.asarray(X)``) is recorded as ``"all"``."""

    def __init__(self, array: np.ndarray, recorder: Recorder) -> None:
        self.array = array
        self.recorder = recorder
        self.shape = array.shape
        self.ndim = array.ndim
        self.dtype = array.dtype

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, key: Any) -> Any:
        rows = np.arange(len(self.array))[key[0] if isinstance(key, tuple) else key]
        for row in np.atleast_1d(rows):
            self.recorder.record(int(row))
        return self.array[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        self.recorder.record("all")
        return np.asarray(self.array, dtype=dtype)


def _features(tmp_path: Path, compressed: bool = False) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    rng.shuffle(y)  # rows of a class need not be contiguous
    centers = rng.normal(size=(N_CLASSES, 8))
    x = (centers[y] + 0.3 * rng.normal(size=(len(y), 8))).astype(np.float32)
    path = tmp_path / "feats.npz"
    (np.savez_compressed if compressed else np.savez)(path, X=x, y=y)
    return path, y


def test_npz_search_never_reads_a_test_class_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, y = _features(tmp_path)
    study = write_study(
        tmp_path / "study.yaml",
        {"name": "npz", "path": str(path)},
        model={"trunk": "mlp", "embedding_dim": 16},
    )
    recorder = Recorder()
    memmap_member = npz_module.memmap_member

    def recording_memmap(file: Path, name: str) -> Any:
        array = memmap_member(file, name)
        return RecordingArray(array, recorder) if name == "X" else array

    monkeypatch.setattr(npz_module, "memmap_member", recording_memmap)

    out = tmp_path / "out"
    assert dmlopt("run", study, "--no-final", "--out", out) == 0
    searched = recorder.seen["search"]
    assert "all" not in searched, "the search materialised the whole feature matrix"
    assert searched, "the search read no row at all: the recording is broken"
    assert {int(y[row]) for row in searched} <= set(TRAINVAL)

    recorder.stage = "final"
    assert dmlopt("final", study, "--out", out) == 0
    test_rows = {row for row in recorder.seen["final"] if row != "all" and y[row] in TEST}
    assert test_rows == set(np.flatnonzero(np.isin(y, TEST)).tolist())


def test_npz_reads_rows_from_the_file_not_a_copy(tmp_path: Path) -> None:
    """``X`` stays a memory map: rows come from the file when read, not loaded up front."""
    path, _ = _features(tmp_path)
    dataset = NpzDataset(NpzData(name="npz", path=path))
    assert isinstance(dataset.features, np.memmap)
    with np.load(path) as data:
        expected = data["X"][5]
    np.testing.assert_array_equal(dataset.read(5, train=True).numpy(), expected)


def test_compressed_npz_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path, _ = _features(tmp_path, compressed=True)
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("X.npy").compress_type == zipfile.ZIP_DEFLATED
    with pytest.raises(DmloptError, match=r"compressed.*savez"):
        NpzDataset(NpzData(name="npz", path=path))

    study = write_study(
        tmp_path / "study.yaml",
        {"name": "npz", "path": str(path)},
        model={"trunk": "mlp", "embedding_dim": 16},
    )
    capsys.readouterr()
    assert dmlopt("run", study, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "compressed" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- a user's dataset
def test_user_dataset_search_never_reads_a_test_class_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example plugin's dataset (examples/own_loss), named by import path: the guarantee
    holds for any dataset that keeps to the protocol (labels listed, samples read on demand)."""
    monkeypatch.syspath_prepend(
        str(Path(__file__).resolve().parent.parent / "examples/own_loss/src")
    )
    from own_loss.data import BlobsDataset

    study = write_study(
        tmp_path / "study.yaml",
        {"name": "own_loss.data:BlobsDataset", "classes": N_CLASSES, "per_class": PER_CLASS},
        model={"trunk": "own_loss.nets:tiny_mlp", "embedding_dim": 16},
    )
    recorder = Recorder()
    read, center = BlobsDataset.read, BlobsDataset.center

    def recording_read(self: BlobsDataset, index: int, *, train: bool) -> Any:
        recorder.record(("sample", int(self.labels[index])))
        return read(self, index, train=train)

    def recording_center(self: BlobsDataset, label: int) -> Any:
        recorder.record(("center", int(label)))
        return center(self, label)

    monkeypatch.setattr(BlobsDataset, "read", recording_read)
    monkeypatch.setattr(BlobsDataset, "center", recording_center)

    out = tmp_path / "out"
    assert dmlopt("run", study, "--no-final", "--out", out) == 0
    searched = set(recorder.seen["search"])
    assert ("sample", TRAINVAL[0]) in searched  # the recording works
    assert {label for _, label in searched} <= set(TRAINVAL)

    recorder.stage = "final"
    assert dmlopt("final", study, "--out", out) == 0
    assert set(TEST) <= {label for kind, label in recorder.seen["final"] if kind == "sample"}
