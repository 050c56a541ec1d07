"""Data pipeline against the model step: images per second of each alone, on one core each.

A generated image folder (JPEG photos of ``--photo`` pixels, smooth random content) is read
with the 64 px preset (``ImageTransform()``: random resized crop to 64, flip, RGB) through the
fold's own training loader (m-per-class sampler, batch 32): decode, augment, normalise, collate.
The model step alone is small_cnn on batches already in memory: forward, loss, backward,
optimizer step. The figure is the pipeline's images/s over the model step's (target >= 1.5),
both with their default levers; each lever is measured on and off in the same run:

* ``cache``: ``dataset.transform.cache``, decoded images kept as uint8 memory-mapped files at
  the resize resolution (measured warm: after one pass has filled it; the filling pass too);
* ``channels_last``: the model's layout (on by default);
* ``compile`` (``--compile``): ``torch.compile`` of the trunk, when it works here;
* pinned memory and non-blocking copies matter on a GPU only (used there automatically).

    python benchmarks/data_pipeline.py [--quick] [--batches 20] [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dmlopt.config import FolderData, ImageTransform, parse_study
from dmlopt.data.datamodule import FoldDataModule
from dmlopt.data.folder import FolderDataset
from dmlopt.data.splits import class_disjoint_folds, paper_split
from dmlopt.lit.module import MetricLearningModule
from dmlopt.models import build_model

CLASSES, PER_CLASS, BATCH = 32, 24, 32


def make_folder(root: Path, photo: int) -> None:
    """CLASSES x PER_CLASS JPEGs, 4:3, smooth colour fields with noise (compress like photos)."""
    rng = np.random.default_rng(0)
    h, w = photo * 3 // 4, photo
    for c in range(CLASSES):
        folder = root / f"{c:03d}.class"
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
            noise = rng.normal(0, 12, (h, w, 3))
            pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)


def loader(root: Path, cache: Path | None) -> Any:
    transform = ImageTransform(cache=cache)  # the 64 px preset
    dataset = FolderDataset(FolderData(name="folder", root=root, transform=transform))
    trainval, _ = paper_split(dataset.num_classes)
    train, val = class_disjoint_folds(trainval, 2)[0]
    config = parse_study(
        {"study": "pipeline", "dataset": {"name": "synthetic"}, "losses": ["contrastive"],
         "training": {"batch_size": BATCH, "m_per_class": 4, "iterations_per_epoch": 1000,
                      "accelerator": "cpu"}}
    ).training  # fmt: skip
    data = FoldDataModule(dataset.view(train, train=True), dataset.view(val, train=False), config)
    return data.train_dataloader()


def pipeline_rate(root: Path, cache: Path | None, batches: int) -> float:
    """Images per CPU second of the loader alone (in this process, no workers)."""
    it = iter(loader(root, cache))
    next(it)
    start = time.process_time()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.process_time() - start)


def model_rate(steps: int, *, channels_last: bool, compile: bool = False) -> float:
    """Images per CPU second of small_cnn's training step alone, on batches in memory."""
    from pytorch_metric_learning.losses import ContrastiveLoss

    from dmlopt.config import OptimizerConfig

    torch.manual_seed(0)
    trunk, embedder = build_model(parse_study(_SMALL).model, (3, 64, 64))
    module = MetricLearningModule(
        trunk, embedder, ContrastiveLoss(), None, OptimizerConfig(), channels_last=channels_last
    )
    optimizer = module.configure_optimizers()
    forward = torch.compile(module) if compile else module
    x = torch.randn(BATCH, 3, 64, 64)
    y = torch.arange(BATCH) // 4

    def step() -> None:
        loss = module.loss_fn(forward(x), y, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.process_time()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.process_time() - start)


_SMALL = {"study": "m", "dataset": {"name": "synthetic"}, "losses": ["contrastive"],
          "model": {"trunk": "small_cnn", "embedding_dim": 64}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--photo", type=int, default=256, help="JPEG width (4:3)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--quick", action="store_true", help="8 batches")
    args = parser.parse_args()
    if args.quick:
        args.batches = 8
    torch.set_num_threads(1)  # one core each: the loader's workers and the step share the cores
    with tempfile.TemporaryDirectory(prefix="dmlopt-pipeline-") as tmp:
        root, cache = Path(tmp) / "images", Path(tmp) / "cache"
        make_folder(root, args.photo)
        no_cache = pipeline_rate(root, None, args.batches)
        samples = loader(root, cache).dataset
        start = time.process_time()
        for i in range(len(samples)):  # fill: every training image decoded once
            samples[i]
        fill_s = time.process_time() - start
        cached = pipeline_rate(root, cache, args.batches)
        cached_files = len(list(cache.glob("*.npy")))
    model_cl = model_rate(args.batches, channels_last=True)
    model_plain = model_rate(args.batches, channels_last=False)
    compiled: float | str = "not measured (--compile)"
    if args.compile:
        try:
            compiled = round(model_rate(args.batches, channels_last=True, compile=True), 1)
        except Exception as e:  # no compiler toolchain here, for instance
            compiled = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    print(
        json.dumps(
            {
                "benchmark": "data_pipeline",
                "figure": "pipeline_images_per_cpu_s",
                "pipeline_images_per_cpu_s": round(cached, 1),
                "baseline": "model_step_images_per_cpu_s",
                "baseline_images_per_cpu_s": round(model_cl, 1),
                "ratio": round(cached / model_cl, 2),
                "target": 1.5,
                "levers": {
                    "cache_off_pipeline": round(no_cache, 1),
                    "cache_on_pipeline": round(cached, 1),
                    "cache_speedup": round(cached / no_cache, 2),
                    "cache_fill_cpu_s_per_image": round(fill_s / cached_files, 5),
                    "cached_files": cached_files,
                    "channels_last_off_model": round(model_plain, 1),
                    "channels_last_on_model": round(model_cl, 1),
                    "channels_last_speedup": round(model_cl / model_plain, 2),
                    "compile_model": compiled,
                    "pinned_memory_non_blocking": "GPU only (used automatically there)",
                },
                "ratio_without_cache": round(no_cache / model_cl, 2),
                "preset": "ImageTransform() 64 px RGB, random resized crop + flip",
                "photo": f"{args.photo}x{args.photo * 3 // 4} JPEG",
                "device": "cpu, 1 thread",
                "load_avg_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
