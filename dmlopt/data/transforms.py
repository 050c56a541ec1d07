"""Image decoding and augmentation with Pillow and plain torch (no torchvision).

Training: random resized crop and horizontal flip; evaluation: resize the shorter side and
center-crop, as the paper (PROTOCOL.md section 3).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dmlopt.config import ImageTransform


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: random.Random,
) -> tuple[int, int, int, int]:
    """A crop box covering a random fraction ``scale`` of the area at a random aspect ``ratio``
    (log-uniform), falling back to the largest central crop within ``ratio``, as torchvision."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = rng.randint(0, width - w)
            top = rng.randint(0, height - h)
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
    with Image.open(path) as raw:
        image = raw.convert("L" if config.channels == 1 else "RGB")
    if box is not None:
        image = image.crop(box)
    size = config.size
    if train and config.augment:
        rng = random.Random()  # seeded per worker by Lightning's seed_everything(workers=True)
        box = random_resized_crop_box(*image.size, config.scale, config.ratio, rng)
        image = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
        if config.hflip and rng.random() < 0.5:
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
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).reshape(size, size, config.channels).permute(2, 0, 1)
    mean = torch.tensor(config.mean[: config.channels]).view(-1, 1, 1)
    std = torch.tensor(config.std[: config.channels]).view(-1, 1, 1)
    return (tensor - mean) / std
