"""Precomputed features ``X`` (n, d) and labels ``y`` (n,) in a ``.npz`` file.

``X`` is memory-mapped, so only the rows that are read are ever loaded: the search reads
train/val rows, never a test-class row. That needs an uncompressed archive (``numpy.savez``).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch

from dmlopt.config import NpzData
from dmlopt.data.base import BadSample, MetricDataset, encode_labels
from dmlopt.errors import DmloptError

_LOCAL_HEADER_SIZE = 30  # fixed part of a zip local file header
_CHUNK = 65536  # rows checked at a time


def memmap_member(path: Path, name: str) -> np.ndarray:
    """A read-only memory map of the array ``name`` stored uncompressed in ``path``."""
    with zipfile.ZipFile(path) as archive:
        try:
            info = archive.getinfo(f"{name}.npy")
        except KeyError:
            raise DmloptError(f"{path} has no array {name!r}") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise DmloptError(
                f"{path} is compressed: save it with numpy.savez (not savez_compressed) so "
                "features can be read row by row"
            )
    with path.open("rb") as f:
        f.seek(info.header_offset)
        header = f.read(_LOCAL_HEADER_SIZE)
        name_len = int.from_bytes(header[26:28], "little")
        extra_len = int.from_bytes(header[28:30], "little")
        f.seek(info.header_offset + _LOCAL_HEADER_SIZE + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )


class NpzDataset(MetricDataset):
    def __init__(self, config: NpzData) -> None:
        if not config.path.is_file():
            raise DmloptError(f"features file not found: {config.path}")
        try:
            self.features = memmap_member(config.path, "X")
            y = np.asarray(memmap_member(config.path, "y"))
        except (zipfile.BadZipFile, ValueError) as e:
            raise DmloptError(f"cannot read {config.path} as .npz: {e}") from None
        if self.features.ndim != 2 or y.shape != (len(self.features),):
            raise DmloptError(
                f"{config.path}: expected X (n, d) and y (n,), "
                f"got {self.features.shape} and {y.shape}"
            )
        if not np.issubdtype(self.features.dtype, np.number) or np.issubdtype(
            self.features.dtype, np.complexfloating
        ):
            raise DmloptError(
                f"{config.path}: features X must be real numbers, not {self.features.dtype}"
            )
        self.path = config.path
        self.labels, self.class_names = encode_labels(y.tolist())

    def check_samples(self, indices: np.ndarray) -> None:
        """Rows with NaN or infinite features are refused, by row number; only the rows
        asked for are read (the search never reads a test-class row)."""
        bad: list[int] = []
        for start in range(0, len(indices), _CHUNK):
            rows = np.sort(indices[start : start + _CHUNK])
            finite = np.isfinite(np.asarray(self.features[rows], dtype=np.float64)).all(axis=1)
            bad.extend(int(r) for r in rows[~finite])
        if bad:
            shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
            raise BadSample(
                f"{self.path}: {len(bad)} rows of X are not finite (NaN or inf): rows {shown}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.features.shape[1],)

    def sample_id(self, index: int) -> str:
        """A hash of the row's values: only the final stage fingerprints, so reading is fine."""
        return hashlib.sha256(np.ascontiguousarray(self.features[index]).tobytes()).hexdigest()

    def read(self, index: int, *, train: bool) -> torch.Tensor:
        return torch.from_numpy(np.array(self.features[index], dtype=np.float32))
