"""Image decoding and augmentation with Pillow and plain torch (no torchvision).

Training: random resized crop and horizontal flip; evaluation: resize the shorter side and
center-crop, as the paper (docs/protocol.md).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dmlopt.config import ImageTransform, shorten
from dmlopt.data.base import BadSample
from dmlopt.errors import DmloptError


def _uniform(low: float, high: float) -> float:
    # torch's generator: seeded by seed_everything and reseeded per DataLoader worker
    return float(torch.empty(()).uniform_(low, high))


def _randint(low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, ()))


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """A crop box covering a random fraction ``scale`` of the area at a random aspect ``ratio``
    (log-uniform), falling back to the largest central crop within ``ratio``, as torchvision."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(*scale)
        aspect = math.exp(_uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = _randint(0, width - w)
            top = _randint(0, height - h)
            return left, top, left + w, top + h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


Box = tuple[float, float, float, float]


def _decode(path: Path, config: ImageTransform, box: Box | None) -> Image.Image:
    try:
        with Image.open(path) as raw:
            image = raw.convert("L" if config.channels == 1 else "RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # PIL reports corrupt and truncated files as OSError or SyntaxError; name the file.
        raise BadSample(
            f"cannot read image {path}: {shorten(str(e) or type(e).__name__)}"
        ) from None
    return image if box is None else image.crop(box)


def _shorter_side_to(image: Image.Image, side: int, size: int) -> Image.Image:
    """Resized so that its shorter side is ``side`` (and neither side below ``size``)."""
    w, h = image.size
    factor = side / min(w, h)
    return image.resize(
        (max(size, round(w * factor)), max(size, round(h * factor))), Image.Resampling.BILINEAR
    )


def decoded(path: Path, config: ImageTransform, box: Box | None = None) -> Image.Image:
    """The image at ``path``, cropped to ``box``, converted to the study's channels.

    With ``config.cache`` set it is decoded once, shrunk to the evaluation resize resolution
    (its shorter side ``resize``, or ``size``) and kept there as a uint8 ``.npy`` file, which
    later reads memory-map instead of decoding the original: every loader worker, trial and
    study on the machine shares it. Only images that are read are cached, so the search
    never caches (or opens) a test-class image. Keys hold the file's path, size and
    modification time and the settings that shape the cached pixels.
    """
    if config.cache is None:
        return _decode(path, config, box)
    side = config.resize or config.size
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{side}|{config.channels}|{box}"
    file = config.cache / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"
    try:
        return Image.fromarray(np.load(file, mmap_mode="r"))
    except (OSError, ValueError):  # not cached yet, or a partial file from a killed process
        pass
    image = _decode(path, config, box)
    if min(image.size) > side:  # never enlarge: the transform does that from the original
        image = _shorter_side_to(image, side, config.size)
    partial = file.with_name(f".{file.stem}.{os.getpid()}.partial.npy")
    try:
        config.cache.mkdir(parents=True, exist_ok=True)
        np.save(partial, np.asarray(image))
        os.replace(partial, file)  # atomic: a concurrent reader sees all of it or nothing
    except OSError as e:
        raise DmloptError(f"cannot write the image cache {config.cache}: {e.strerror}") from None
    return image


def load_image(
    path: Path,
    config: ImageTransform,
    *,
    train: bool,
    box: Box | None = None,
) -> torch.Tensor:
    """Decode (or read from the cache), crop to ``box`` ``(x1, y1, x2, y2)`` if given, augment
    (if ``train`` and ``config.augment``), and normalise one image."""
    image = decoded(path, config, box)
    size = config.size
    if train and config.augment:
        crop = random_resized_crop_box(*image.size, config.scale, config.ratio)
        image = image.resize((size, size), Image.Resampling.BILINEAR, box=crop)
        if config.hflip and _uniform(0.0, 1.0) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    else:
        image = _shorter_side_to(image, config.resize or size, size)
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.float32) * (config.value_scale / 255.0)
    tensor = torch.from_numpy(array).reshape(size, size, config.channels).permute(2, 0, 1)
    if config.bgr:
        tensor = tensor.flip(0)
    mean = torch.tensor(config.mean[: config.channels]).view(-1, 1, 1)
    std = torch.tensor(config.std[: config.channels]).view(-1, 1, 1)
    return (tensor - mean) / std
