"""Training-loop overhead: a fold training as dmlopt runs it against a plain PyTorch loop.

dmlopt's side is :func:`dmlopt.study.fold.train_fold` itself: its Lightning Trainer, its
callback (best-weights copy and early stopping) and validation cadence. The baseline, measured in
the same run, is a plain loop over the same model, loss, optimizer, m-per-class sampler and
batches, validating at the same cadence with the same metric (embed the val classes, MAP@R) and
keeping a copy of the best weights: the work a fold cannot do without. Early stopping is
disabled on both sides (patience = max_epochs) so both train the same number of steps.

Samples are generated once and held in memory, so that data generation (the same for both)
does not hide the loop's own cost. The two sides run ``--repeats`` times in adjacent pairs, in
alternating order, and the ratio is the median of the pairs' ratios, printed with its
quartiles. On this shared machine one fold's CPU time varies by up to 10% from one run to the
next, more than the overhead measured: a pair shares its moment, and a median over many pairs
is what settles the figure to about a percent. Prints one JSON line per accelerator (the CPU,
and the GPU when there is one): dmlopt's steps/s, the baseline's, their ratio (target >= 0.95).
On a CPU rates are steps per CPU second of this process (steadier than wall time on a shared
machine; one torch thread by default) and the wall-clock ratio is printed beside it; on a GPU
they are steps per wall second.

    python benchmarks/train_loop.py [--quick] [--size 32] [--epochs 4] [--iterations 25]
                                    [--accelerator cpu|gpu ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dmlopt.config import StudyConfig, parse_study
from dmlopt.data import open_dataset
from dmlopt.data.base import MetricDataset
from dmlopt.data.datamodule import FoldDataModule, eval_loader
from dmlopt.hardware import device_for
from dmlopt.metrics import retrieval_scores_or_zero
from dmlopt.study.cross_validation import search_folds
from dmlopt.study.fold import build_module, train_fold

PARAMS = {"loss.pos_margin": 0.0, "loss.neg_margin": 1.0}


class InMemory(MetricDataset):
    """The train/val samples of another dataset, generated once (test classes never read)."""

    def __init__(self, source: MetricDataset, classes: Sequence[int]) -> None:
        self.labels = source.labels
        self.class_names = source.class_names
        self._shape = source.input_shape
        self.samples = {int(i): source.read(int(i), train=True) for i in source.indices_of(classes)}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._shape

    def read(self, index: int, *, train: bool) -> torch.Tensor:
        return self.samples[index]


def study(args: argparse.Namespace, accelerator: str) -> StudyConfig:
    """The quickstart's fold (built-in dataset, small_cnn, batch 32 = 8 x 4)."""
    return parse_study(
        {
            "study": "train_loop",
            "dataset": {"name": "synthetic", "classes": 64, "per_class": 24,
                        "image_size": args.size, "seed": 0},
            "split": {"folds": 2},
            "model": {"trunk": "small_cnn", "embedding_dim": 64},
            "losses": ["contrastive"],
            "training": {"batch_size": 32, "m_per_class": 4, "max_epochs": args.epochs,
                         "iterations_per_epoch": args.iterations, "eval_every": 1,
                         "patience": args.epochs, "accelerator": accelerator},
        }
    )  # fmt: skip


def plain_loop(
    config: StudyConfig,
    dataset: MetricDataset,
    train: Sequence[int],
    val: Sequence[int],
) -> int:
    """The baseline: same model, loss, optimizer, sampler and batches; returns the steps run."""
    torch.manual_seed(0)
    device = device_for(config.training)
    module = build_module(config, "contrastive", PARAMS, dataset, len(train)).to(device)
    optimizer = module.configure_optimizers()
    data = FoldDataModule(
        dataset.view(train, train=True), dataset.view(val, train=False), config.training
    )
    loader = data.train_dataloader()
    best, best_state, steps = -1.0, None, 0
    t = config.training
    for epoch in range(t.max_epochs):
        module.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = module.loss_fn(module(x), y, None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        if (epoch + 1) % t.eval_every == 0:
            module.eval()
            with torch.no_grad():
                parts = [
                    (F.normalize(module(x.to(device)), dim=1).cpu(), y)
                    for x, y in eval_loader(data.val_samples, t)
                ]
            embeddings = torch.cat([e for e, _ in parts]).numpy()
            labels = torch.cat([y for _, y in parts]).numpy()
            score = retrieval_scores_or_zero(embeddings, labels)["map_at_r"]
            if score > best:
                best, best_state = score, copy.deepcopy(module.state_dict())
    assert best_state is not None
    return steps


def timed(fn, device: torch.device) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU time is the
    steadier measure of the work done; on a GPU the wall time, once its queue is drained."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(args: argparse.Namespace, accelerator: str) -> dict[str, Any]:
    """The benchmark's JSON record on one accelerator (``cpu`` or ``gpu``)."""
    config = study(args, accelerator)
    device = device_for(config.training)
    source = open_dataset(config.dataset)
    train, val = search_folds(config, source)[0]
    dataset = InMemory(source, [*train, *val])
    steps = args.epochs * args.iterations

    def ours() -> None:
        result = train_fold(config, "contrastive", PARAMS, dataset, train, val, seed=0)
        assert result.module.steps_done == steps, "dmlopt's fold stopped early"

    def baseline() -> None:
        assert plain_loop(config, dataset, train, val) == steps

    ours()  # untimed: imports, first-call allocations and kernel selection
    baseline()
    wall: dict[str, list[float]] = {"ours": [], "baseline": []}
    cpu: dict[str, list[float]] = {"ours": [], "baseline": []}
    sides = [("ours", ours), ("baseline", baseline)]
    for repeat in range(args.repeats):
        for name, fn in sides if repeat % 2 == 0 else sides[::-1]:
            w, c = timed(fn, device)
            wall[name].append(w)
            cpu[name].append(c)

    def pair_ratios(times: dict[str, list[float]]) -> np.ndarray:
        """Ours' rate over the baseline's, pair by pair (each pair run back to back)."""
        return np.array(times["baseline"]) / np.array(times["ours"])

    # On a CPU, steps per CPU second: a process's CPU time hardly changes when other processes
    # share the cores, its wall time does (both are printed). A GPU works while the CPU waits.
    on_gpu = device.type == "cuda"
    clock = wall if on_gpu else cpu
    ratios = pair_ratios(clock)
    rate = {name: steps / float(np.median(t)) for name, t in clock.items()}
    return {
        "benchmark": "train_loop",
        "device": torch.cuda.get_device_name(device) if on_gpu else "cpu",
        "clock": "wall" if on_gpu else "process_cpu",
        "figure": "dmlopt_steps_per_s",
        "dmlopt_steps_per_s": round(rate["ours"], 2),
        "baseline": "plain_pytorch_loop_same_validation",
        "baseline_steps_per_s": round(rate["baseline"], 2),
        "ratio": round(float(np.median(ratios)), 3),
        "ratio_quartiles": [round(float(q), 3) for q in np.percentile(ratios, [25, 75])],
        "target": 0.95,
        "wall_ratio": round(float(np.median(pair_ratios(wall))), 3),
        "steps": steps,
        "image_size": args.size,
        "batch_size": 32,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "cpu_s": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
        "wall_s": {k: [round(x, 3) for x in v] for k, v in wall.items()},
        "val_samples": int(np.isin(source.labels, val).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32, help="image size (the quickstart's: 32)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=25, help="iterations per epoch")
    parser.add_argument("--repeats", type=int, default=21, help="pairs of runs (default 21)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--accelerator", choices=["cpu", "gpu"], action="append",
        help="repeatable (default: cpu, and gpu when there is one)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="2 epochs, 7 pairs")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 2, 7
    torch.set_num_threads(args.threads)
    if "gpu" in (args.accelerator or []) and not torch.cuda.is_available():
        parser.error("--accelerator gpu: no GPU is available here")
    accelerators = args.accelerator or ["cpu", *(["gpu"] if torch.cuda.is_available() else [])]
    for accelerator in accelerators:
        print(json.dumps(measure(args, accelerator)), flush=True)


if __name__ == "__main__":
    main()
