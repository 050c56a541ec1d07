"""The paper's protocol, each setting shown by its effect on what trains: frozen BatchNorm, the
SNR regulariser on normalised embeddings, divergence, precision and determinism."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from dmlopt import losses
from dmlopt.config import StudyConfig, parse_study
from dmlopt.data import open_dataset
from dmlopt.data.base import MetricDataset
from dmlopt.data.synthetic import SyntheticDataset
from dmlopt.lit.module import MetricLearningModule
from dmlopt.metrics import retrieval_scores
from dmlopt.search_space import Range, Value
from dmlopt.study import fold as fold_module
from dmlopt.study.cross_validation import search_folds
from dmlopt.study.fold import FoldResult, embed, train_fold
from tests.conftest import TINY_STUDY, deep_update

#: Adam moves every weight by about the learning rate at its first step: 1e30 overflows at once.
DIVERGING = {"training": {"optimizer": {"name": "adam", "lr": 1.0e30}}}


def study(changes: dict[str, Any] | None = None) -> StudyConfig:
    return parse_study(deep_update(TINY_STUDY, changes or {}))


def midpoint_params(config: StudyConfig, loss: str) -> dict[str, Value]:
    return {
        name: (p.low + p.high) / 2 if isinstance(p, Range) else p
        for name, p in config.loss_space(loss).items()
    }


def train_first_fold(config: StudyConfig, seed: int = 0) -> tuple[FoldResult, MetricDataset]:
    dataset = open_dataset(config.dataset)
    train, val = search_folds(config, dataset)[0]
    params = midpoint_params(config, "contrastive")
    return train_fold(config, "contrastive", params, dataset, train, val, seed=seed), dataset


def batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[MetricLearningModule, dict[str, Any]]]:
    """Every module train_fold builds, with a copy of its initial state."""
    seen: list[tuple[MetricLearningModule, dict[str, Any]]] = []
    real = fold_module.build_module

    def spy(*args: Any, **kwargs: Any) -> MetricLearningModule:
        module = real(*args, **kwargs)
        seen.append((module, {k: v.clone() for k, v in module.state_dict().items()}))
        return module

    monkeypatch.setattr(fold_module, "build_module", spy)
    return seen


@pytest.fixture
def in_training_step(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """What each training step saw: the trunk's BatchNorm modes and torch's determinism."""
    seen: list[dict[str, Any]] = []
    real = MetricLearningModule.train_batch

    def step(self: MetricLearningModule, batch: Any, optimizer: Any) -> Any:
        seen.append(
            {
                "bn_training": [m.training for m in batchnorms(self.trunk)],
                "deterministic": torch.are_deterministic_algorithms_enabled(),
                "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
                "epoch": self.current_epoch,
                "autocast": torch.is_autocast_enabled("cpu"),
                "autocast_cache": torch.is_autocast_cache_enabled(),
            }
        )
        return real(self, batch, optimizer)

    monkeypatch.setattr(MetricLearningModule, "train_batch", step)
    yield seen
    torch.use_deterministic_algorithms(False)  # Lightning sets it process-wide


# --------------------------------------------------------------------------- BatchNorm
@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_batchnorm_keeps_bn_in_eval_and_stats_fixed(
    freeze: bool, built: list[Any], in_training_step: list[dict[str, Any]]
) -> None:
    config = study({"model": {"freeze_batchnorm": freeze}})
    result, _ = train_first_fold(config)
    _, initial = built[0]
    # Steps before and after the validation of epoch 1 (two epochs of three steps).
    assert {s["epoch"] for s in in_training_step} == {0, 1}
    assert all(s["bn_training"] for s in in_training_step)  # the trunk has BatchNorm layers
    modes = {mode for s in in_training_step for mode in s["bn_training"]}
    stats = [k for k in initial if k.startswith("trunk.") and "running_" in k]
    assert stats
    after = result.module.state_dict()
    unchanged = [torch.equal(initial[k], after[k]) for k in stats]
    if freeze:
        assert modes == {False}
        assert all(unchanged)
    else:
        assert modes == {True}
        assert not any(unchanged)


# --------------------------------------------------------------------------- SNR
def snr(weight: float) -> nn.Module:
    loss, _ = losses.get("snr_contrastive").build(
        {"loss.pos_margin": 0.2, "loss.neg_margin": 0.8, "loss.regularizer_weight": weight},
        num_classes=4,
        embedding_dim=8,
    )
    return loss


def test_snr_regulariser_acts_on_normalised_embeddings() -> None:
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(12, 8, generator=generator) + 0.5  # a mean for the term to act on
    labels = torch.arange(4).repeat(3)
    weight = 0.5
    loss = snr(weight)
    base = loss(embeddings, labels)
    # The whole loss does not depend on the scale of the raw embeddings ...
    for scale in (0.01, 7.0, 1000.0):
        torch.testing.assert_close(loss(scale * embeddings, labels), base)
    # ... and its regulariser is the paper's: weight * mean_i |sum_j e_ij| on normalised e.
    normalised = embeddings / embeddings.norm(dim=1, keepdim=True)
    by_hand = weight * normalised.sum(dim=1).abs().mean()
    torch.testing.assert_close(base - snr(0.0)(embeddings, labels), by_hand)


# --------------------------------------------------------------------------- divergence
def all_finite(module: nn.Module) -> bool:
    return all(t.isfinite().all() for t in module.state_dict().values() if t.is_floating_point())


def test_divergence_stops_training_at_once_and_keeps_no_nonfinite_weights(
    built: list[Any], in_training_step: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights_kept: list[bool] = []  # by each step that saw a non-finite loss
    recording_step = MetricLearningModule.train_batch

    def step(self: MetricLearningModule, batch: Any, optimizer: Any) -> Any:
        before = [p.detach().clone() for p in self.parameters()]
        loss = recording_step(self, batch, optimizer)
        if loss is None:  # bit for bit, NaNs included
            same = [torch.equal(b.view(torch.int32), p.view(torch.int32))
                    for b, p in zip(before, self.parameters(), strict=True)]  # fmt: skip
            weights_kept.append(all(same))
        return loss

    monkeypatch.setattr(MetricLearningModule, "train_batch", step)
    config = study(
        deep_update(DIVERGING, {"training": {"iterations_per_epoch": 10, "max_epochs": 3}})
    )
    result, _ = train_first_fold(config)
    assert result.diverged is not None
    # Stopped at the first non-finite loss without taking its step: no further step or epoch.
    assert len(in_training_step) == result.diverged["step"] + 1 < 10
    assert weights_kept == [True]
    assert result.diverged["epoch"] == 1 and result.epochs == 1
    # It diverged before any validation: the fold keeps its initial weights and scores 0.
    assert all_finite(result.module)
    assert result.best_map_at_r == 0.0 and result.best_epoch == 0
    _, initial = built[0]
    after = result.module.state_dict()
    assert all(torch.equal(initial[k], after[k]) for k in initial)


def test_divergence_after_a_validation_keeps_the_best_finite_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loss turns non-finite in epoch 2: the fold keeps epoch 1's weights and score."""
    real = MetricLearningModule.train_batch

    def step(self: MetricLearningModule, batch: Any, optimizer: Any) -> Any:
        x, y = batch
        return real(self, (x * float("nan") if self.current_epoch == 1 else x, y), optimizer)

    monkeypatch.setattr(MetricLearningModule, "train_batch", step)
    result, _ = train_first_fold(study({"training": {"max_epochs": 3, "patience": 3}}))
    assert result.diverged is not None and result.diverged["epoch"] == 2
    assert result.best_epoch == 1 and result.best_map_at_r > 0
    assert all_finite(result.module)


def test_a_diverged_trial_completes_with_its_folds_marked() -> None:
    import optuna

    from dmlopt.study.runner import search

    config = study(deep_update(DIVERGING, {"search": {"n_trials": 1}}))
    storage = optuna.storages.InMemoryStorage()
    search(config, storage, open_dataset(config.dataset), seed=0)
    (trial,) = optuna.load_study(study_name="tiny/contrastive", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.value == 0.0
    marks = trial.user_attrs["diverged"]
    assert [m["fold"] for m in marks] == [0, 1]
    assert all(m["epoch"] == 1 and m["step"] >= 0 for m in marks)


def test_diverged_reruns_are_recorded_in_final_json_and_the_table(tmp_path: Path) -> None:
    from dmlopt.report.table import format_table
    from dmlopt.study.final import FinalStage
    from dmlopt.study.storage import ScoreBook, open_storage

    config = study(
        deep_update(
            DIVERGING,
            {
                "losses": {"contrastive": {"loss": {"pos_margin": 0.1, "neg_margin": 0.9}}},
                "exported_from": {
                    "study": "tiny/contrastive", "loss": "contrastive", "trial": 0,
                    "val_map_at_r": 0.5,
                },
            },
        )
    )  # fmt: skip
    url = f"sqlite:///{tmp_path / 'study.db'}"
    results = FinalStage(config, open_storage(url), ScoreBook(url)).run()
    entry = results["contrastive"]
    assert sorted((d["run"], d["fold"]) for d in entry["diverged"]) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    # Diverged fold models are their initial weights: finite embeddings, a real (poor) score.
    for kind in ("separated", "concatenated"):
        assert all(np.isfinite(entry["test"][kind]["map_at_r"]["values"]))
    table = format_table(results)
    assert "contrastiveR†" in table
    assert "4 of 4 fold trainings diverged" in table


# --------------------------------------------------------------------------- precision
@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_training_steps_run_under_autocast_but_data_is_read_without(
    precision: str, monkeypatch: pytest.MonkeyPatch, in_training_step: list[dict[str, Any]]
) -> None:
    """bf16 is for the model's step, not for the dataset: the built-in dataset generates its
    samples with float32 ops, which autocast would run in bfloat16 (Lightning runs a whole
    epoch's reads inside the training step here)."""
    reads: list[bool] = []
    read = SyntheticDataset.read

    def recording_read(self: SyntheticDataset, index: int, *, train: bool) -> torch.Tensor:
        reads.append(torch.is_autocast_enabled("cpu"))
        return read(self, index, train=train)

    monkeypatch.setattr(SyntheticDataset, "read", recording_read)
    train_first_fold(study({"training": {"precision": precision, "accelerator": "cpu"}}))
    assert reads and not any(reads)
    assert in_training_step
    assert {s["autocast"] for s in in_training_step} == {precision == "bf16-mixed"}
    if precision == "bf16-mixed":
        # One autocast region spans a whole epoch of optimizer steps: a cache of bf16 weight
        # copies would feed every later step of the epoch the weights of its first.
        assert {s["autocast_cache"] for s in in_training_step} == {False}


def test_bf16_validation_and_test_embeddings_agree() -> None:
    """Under bf16-mixed the model is selected on bf16 validation embeddings; the final stage
    must embed the same way, so re-embedding the val classes reproduces the kept score."""
    config = study({"training": {"precision": "bf16-mixed", "accelerator": "cpu"}})
    result, dataset = train_first_fold(config)
    _, val = search_folds(config, dataset)[0]
    samples = dataset.view(val, train=False)
    embeddings = embed(result.module, samples, config)
    score = retrieval_scores(embeddings, samples.labels)["map_at_r"]
    assert score == pytest.approx(result.best_map_at_r, abs=1e-7)  # logged as float32
    full = embed(result.module, samples, study({"training": {"accelerator": "cpu"}}))
    assert not np.array_equal(full, embeddings)  # bf16 really changes the embeddings


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(False, (False, False)), (True, (True, False)), ("warn", (True, True))],
)
def test_deterministic_flag_reaches_torch(
    setting: bool | str, expected: tuple[bool, bool], in_training_step: list[dict[str, Any]]
) -> None:
    train_first_fold(study({"training": {"deterministic": setting}}))
    assert {(s["deterministic"], s["warn_only"]) for s in in_training_step} == {expected}


def test_a_fold_retrained_with_the_same_seed_is_bit_identical() -> None:
    config = study()
    first, _ = train_first_fold(config, seed=7)
    again, _ = train_first_fold(config, seed=7)
    other, _ = train_first_fold(config, seed=8)
    a, b, c = (r.module.state_dict() for r in (first, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.best_map_at_r == again.best_map_at_r
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_strict_determinism_on_a_gpu_is_refused_before_training(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dmlopt.errors import DmloptError
    from dmlopt.hardware import check_hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(DmloptError, match="deterministic: warn"):
        check_hardware(study({"training": {"deterministic": True}}).training)
    check_hardware(study({"training": {"deterministic": "warn"}}).training)
    check_hardware(study({"training": {"deterministic": True, "accelerator": "cpu"}}).training)
