"""Training throughput: images per second for one fold of a CUB-sized synthetic study.

CUB-sized: 200 classes (100 train/val, 75 / 25 per fold), batch 32 = 8 x 4, as the paper; the
paper's model is ``--trunk bninception --size 227`` (3-channel synthetic images). The baseline,
measured in the same run, is the same fold in float32; on a GPU the ratio is bf16-mixed over
float32 throughput. Images per second include the fold's validation pass.

    python benchmarks/train_throughput.py [--iterations 50] [--trunk bninception] [--size 227]
"""

from __future__ import annotations

import argparse
import time

import torch

from dmlopt.config import parse_study
from dmlopt.data import open_dataset
from dmlopt.study.cross_validation import search_folds
from dmlopt.study.fold import train_fold


def images_per_second(args: argparse.Namespace, precision: str) -> float:
    config = parse_study(
        {
            "study": "throughput",
            "dataset": {"name": "synthetic", "classes": 200, "per_class": 8,
                        "image_size": args.size, "channels": 3, "seed": 0},
            "split": {"folds": 4},
            "model": {"trunk": args.trunk, "embedding_dim": 128},
            "losses": ["contrastive"],
            "training": {"batch_size": 32, "m_per_class": 4, "max_epochs": 1,
                         "iterations_per_epoch": args.iterations, "precision": precision,
                         "num_workers": args.workers},
        }
    )  # fmt: skip
    dataset = open_dataset(config.dataset)
    train, val = search_folds(config, dataset)[0]
    params = {"loss.pos_margin": 0.0, "loss.neg_margin": 1.0}
    start = time.perf_counter()
    train_fold(config, "contrastive", params, dataset, train, val, seed=0)
    elapsed = time.perf_counter() - start
    return args.iterations * 32 / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--trunk", default="small_cnn")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    # A first, untimed pass pays for start-up (CUDA context, kernel selection), which would
    # otherwise all count against whichever precision is measured first.
    images_per_second(argparse.Namespace(**{**vars(args), "iterations": 2}), "32-true")
    fp32 = images_per_second(args, "32-true")
    print(
        f"{device}, {args.trunk} at {args.size}px: float32 {fp32:.0f} images/s (incl. validation)"
    )
    if torch.cuda.is_available():
        bf16 = images_per_second(args, "bf16-mixed")
        print(f"bf16-mixed {bf16:.0f} images/s, ratio {bf16 / fp32:.2f}x over float32")


if __name__ == "__main__":
    main()
