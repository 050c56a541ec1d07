"""What a study costs before it is started: worst-case fold trainings, timed on the real thing.

A few training iterations of the study's own model run on its own data (the first fold's
training classes, through the study's loaders), and a batch of its validation images is
embedded. Multiplied by the worst case the study file allows (every trial trains every fold to
``max_epochs``: no pruning, no early stopping), that is the time a user may have to wait.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import optuna
import torch
from torch.utils.data import DataLoader, Subset

from dmlopt.config import StudyConfig
from dmlopt.data.base import MetricDataset
from dmlopt.data.datamodule import FoldDataModule
from dmlopt.data.splits import Fold
from dmlopt.hardware import device_for
from dmlopt.search_space import suggest
from dmlopt.study.fold import build_module


@dataclass(frozen=True)
class Estimate:
    """Worst-case work of a study and the measured cost of its units."""

    losses: int
    search_fold_trainings: int
    final_fold_trainings: int
    iterations_per_fold: int
    validations_per_fold: int
    val_images: int
    seconds_per_iteration: float
    seconds_per_val_image: float

    @property
    def seconds_per_fold(self) -> float:
        validation = self.validations_per_fold * self.val_images * self.seconds_per_val_image
        return self.iterations_per_fold * self.seconds_per_iteration + validation

    def wall_seconds(self, workers: int) -> float:
        """Search trials spread over ``workers`` processes; the final stage runs in one."""
        return (
            self.search_fold_trainings / workers + self.final_fold_trainings
        ) * self.seconds_per_fold


def worst_case(config: StudyConfig, n_folds: int) -> tuple[int, int, int, int]:
    """(search fold trainings, final fold trainings, iterations and validations per fold)."""
    t = config.training
    losses = len(config.losses)
    return (
        config.search.n_trials * n_folds * losses,
        config.final.runs * n_folds * losses,
        t.max_epochs * t.iterations_per_epoch,
        t.max_epochs // t.eval_every,
    )


def measure(
    config: StudyConfig, dataset: MetricDataset, folds: Sequence[Fold], *, iterations: int = 5
) -> Estimate:
    """Time ``iterations`` training steps (after one untimed warm-up step, which pays for loader
    workers and first-call allocations) and one batch of validation embeddings."""
    loss_name = next(iter(config.losses))
    # any point of the search space costs the same to train; a seeded random one
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = suggest(config.loss_space(loss_name), trial)
    train_classes, val_classes = folds[0]
    module = build_module(config, loss_name, params, dataset, len(train_classes))
    device = device_for(config.training)
    module.to(device).train()
    optimizer = module.configure_optimizers()
    data = FoldDataModule(
        dataset.view(train_classes, train=True),
        dataset.view(val_classes, train=False),
        config.training,
    )
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=config.training.precision == "bf16-mixed"
    )
    batches = _cycle(data.train_dataloader())
    start = 0.0
    for step in range(iterations + 1):
        if step == 1:
            _sync(device)
            start = time.perf_counter()
        x, y = next(batches)
        with autocast:
            loss = module.compute_loss((x.to(device), y.to(device)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    per_iteration = (time.perf_counter() - start) / iterations
    del batches  # stops the loader's workers

    val = data.val_samples
    probe = Subset(val, range(min(len(val), config.training.batch_size)))
    loader = DataLoader(probe, batch_size=len(probe), num_workers=config.training.num_workers)
    module.eval()
    start = time.perf_counter()
    with torch.no_grad(), autocast:
        for x, _ in loader:
            module.embed(x.to(device))
    _sync(device)
    per_val_image = (time.perf_counter() - start) / max(len(probe), 1)

    search, final, iters, validations = worst_case(config, len(folds))
    return Estimate(
        losses=len(config.losses),
        search_fold_trainings=search,
        final_fold_trainings=final,
        iterations_per_fold=iters,
        validations_per_fold=validations,
        val_images=len(val),
        seconds_per_iteration=per_iteration,
        seconds_per_val_image=per_val_image,
    )


def _cycle(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of as many epochs as it takes (an epoch may be shorter than the timing)."""
    while True:
        yield from loader


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``7.2 h`` or ``12.3 days``."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def describe(
    config: StudyConfig, estimate: Estimate, n_folds: int, workers: int, device: str
) -> list[str]:
    """The lines ``dmlopt check --estimate`` prints."""
    e, t = estimate, config.training
    losses = f"{e.losses} loss{'es' if e.losses > 1 else ''}"
    lines = [
        f"# estimate (worst case: no pruning, no early stopping): "
        f"search {e.search_fold_trainings} fold trainings "
        f"({config.search.n_trials} trials x {n_folds} folds x {losses}), "
        f"final {e.final_fold_trainings} ({config.final.runs} runs x {n_folds} folds x {losses})",
        f"# per fold: {e.iterations_per_fold} iterations ({t.max_epochs} epochs x "
        f"{t.iterations_per_epoch}), {e.validations_per_fold} validations of {e.val_images} images",
        f"# measured on {device}: {e.seconds_per_iteration:.3f} s per iteration "
        f"(batch {t.batch_size}, {t.num_workers} loader workers), "
        f"{e.seconds_per_val_image * 1000:.1f} ms per validation image; "
        f"{duration(e.seconds_per_fold)} per fold",
    ]
    counts = sorted({1, workers})
    lines.append(
        "# estimated wall time: "
        + ", ".join(
            f"{n} worker{'s' if n > 1 else ''} {duration(e.wall_seconds(n))}" for n in counts
        )
        + " (search trials shared by the workers; the final stage runs in one process)"
    )
    return lines
