"""``dataset.transform.cache``: images decoded once into uint8 memory-mapped files, shared by
every later read, never made for an image that is not read."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dmlopt.cli import main
from dmlopt.config import ImageTransform
from dmlopt.data.splits import paper_split
from dmlopt.data.transforms import load_image
from dmlopt.errors import DmloptError
from tests.conftest import TINY_STUDY


def _photo(path: Path, seed: int, size: tuple[int, int] = (48, 36)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_cached_reads_skip_decoding_and_evaluate_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _photo(tmp_path / "a.png", 0)
    plain = ImageTransform(size=16, resize=20)
    cached = plain.model_copy(update={"cache": tmp_path / "cache"})
    expected = load_image(path, plain, train=False)

    first = load_image(path, cached, train=False)
    files = list((tmp_path / "cache").glob("*.npy"))
    assert len(files) == 1
    stored = np.load(files[0])
    assert stored.dtype == np.uint8 and stored.shape == (20, 27, 3)  # shorter side 36 -> 20
    torch.testing.assert_close(first, expected, rtol=0, atol=0)

    def no_decoding(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cached image was decoded again")

    monkeypatch.setattr(Image, "open", no_decoding)
    torch.testing.assert_close(load_image(path, cached, train=False), expected, rtol=0, atol=0)
    torch.manual_seed(0)
    crop = load_image(path, cached, train=True)  # training crops come from the cached pixels
    assert crop.shape == (3, 16, 16)


def test_a_changed_file_is_decoded_again(tmp_path: Path) -> None:
    path = _photo(tmp_path / "a.png", 0)
    config = ImageTransform(size=16, cache=tmp_path / "cache")
    before = load_image(path, config, train=False)
    _photo(path, 1, size=(40, 40))
    after = load_image(path, config, train=False)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    assert not torch.equal(before, after)


def test_a_partial_cache_file_is_replaced(tmp_path: Path) -> None:
    path = _photo(tmp_path / "a.png", 0)
    config = ImageTransform(size=16, cache=tmp_path / "cache")
    expected = load_image(path, config, train=False)
    (file,) = (tmp_path / "cache").glob("*.npy")
    file.write_bytes(file.read_bytes()[:40])  # a writer killed mid-file (not via os.replace)
    torch.testing.assert_close(load_image(path, config, train=False), expected, rtol=0, atol=0)


def test_search_caches_only_train_val_images(tmp_path: Path) -> None:
    """Test-class files are corrupt: opening one would crash the search; none is cached."""
    classes, per_class = 16, 8
    trainval, test = paper_split(classes)
    root = tmp_path / "images"
    for c in range(classes):
        for i in range(per_class):
            path = root / f"c{c:02d}" / f"{i}.png"
            if c in test:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"not an image")
            else:
                _photo(path, c * 100 + i)
    cache = tmp_path / "cache"
    study = {
        **copy.deepcopy(TINY_STUDY),
        "dataset": {"name": "folder", "root": str(root),
                    "transform": {"size": 16, "cache": str(cache)}},
    }  # fmt: skip
    file = tmp_path / "study.yaml"
    file.write_text(yaml.safe_dump(study))
    assert main(["run", str(file), "--no-final", "--out", str(tmp_path / "out")]) == 0
    cached = list(cache.glob("*.npy"))
    # every train/val image is read by some fold (as a training or a val sample), once decoded
    assert len(cached) == len(trainval) * per_class
    assert not list(cache.glob(".*partial*"))


def test_an_unwritable_cache_is_a_clear_error(tmp_path: Path) -> None:
    path = _photo(tmp_path / "a.png", 0)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DmloptError, match="cannot write the image cache"):
        load_image(path, ImageTransform(size=16, cache=blocker), train=False)
