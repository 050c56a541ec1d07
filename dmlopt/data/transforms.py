"""Image decoding and augmentation with Pillow and plain torch (no torchvision).

Training: random resized crop and horizontal flip; evaluation: resize the shorter side and
center-crop, as the paper (docs/protocol.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dmlopt.config import ImageTransform, shorten
from dmlopt.data.base import BadSample


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


def load_image(
    path: Path,
    config: ImageTransform,
    *,
    train: bool,
    box: tuple[float, float, float, float] | None = None,
) -> torch.Tensor:
    """Decode, crop to ``box`` ``(x1, y1, x2, y2)`` if given, augment (if ``train`` and
    ``config.augment``), and normalise one image."""
    try:
        with Image.open(path) as raw:
            image = raw.convert("L" if config.channels == 1 else "RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # PIL reports corrupt and truncated files as OSError or SyntaxError; name the file.
        raise BadSample(
            f"cannot read image {path}: {shorten(str(e) or type(e).__name__)}"
        ) from None
    if box is not None:
        image = image.crop(box)
    size = config.size
    if train and config.augment:
        crop = random_resized_crop_box(*image.size, config.scale, config.ratio)
        image = image.resize((size, size), Image.Resampling.BILINEAR, box=crop)
        if config.hflip and _uniform(0.0, 1.0) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    else:
        resize = config.resize or size
        w, h = image.size
        factor = resize / min(w, h)
        image = image.resize(
            (max(size, round(w * factor)), max(size, round(h * factor))), Image.Resampling.BILINEAR
        )
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
