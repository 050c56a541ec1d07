"""Training throughput: images per second for one fold of a CUB-sized synthetic study.

CUB-sized: 200 classes (100 train/val, 75 / 25 per fold), batch 32 = 8 x 4, as the paper; the
paper's model is ``--trunk bninception --size 227`` (3-channel synthetic images). The baseline,
measured in the same run, is the same fold in float32; on a GPU the ratio is bf16-mixed over
float32 throughput. Images per second include the fold's validation pass.

On a CPU only float32 runs (the ratio is then null). The paper's GPU figure:
``--trunk bninception --size 227`` (and ``--batch 256``).

    python benchmarks/train_throughput.py [--iterations 50] [--trunk bninception] [--size 227]
                                          [--batch 32] [--quick]
"""

from __future__ import annotations

import argparse
import json
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
            "training": {"batch_size": args.batch, "m_per_class": 4, "max_epochs": 1,
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
    return args.iterations * args.batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--trunk", default="small_cnn")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="10 iterations")
    args = parser.parse_args()
    if args.quick:
        args.iterations = 10
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    # A first, untimed pass pays for start-up (CUDA context, kernel selection), which would
    # otherwise all count against whichever precision is measured first.
    images_per_second(argparse.Namespace(**{**vars(args), "iterations": 2}), "32-true")
    fp32 = images_per_second(args, "32-true")
    bf16 = images_per_second(args, "bf16-mixed") if torch.cuda.is_available() else None
    print(
        json.dumps(
            {
                "benchmark": "train_throughput",
                "figure": "bf16_images_per_s",
                "bf16_images_per_s": None if bf16 is None else round(bf16, 1),
                "baseline": "float32_images_per_s",
                "baseline_images_per_s": round(fp32, 1),
                "ratio": None if bf16 is None else round(bf16 / fp32, 2),
                "device": device,
                "trunk": args.trunk,
                "size": args.size,
                "batch": args.batch,
                "includes": "one fold's training and its validation pass",
            }
        )
    )


if __name__ == "__main__":
    main()
