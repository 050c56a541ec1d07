"""Every registered loss, parametrized over the registry: adding a loss adds its tests."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import torch

from dmlopt import losses
from dmlopt.config import dump_study, load_study, nest, parse_study
from dmlopt.search_space import Range, Value, is_fixed
from dmlopt.study.fold import build_module

from .conftest import TINY_STUDY, deep_update

PAPER_KEYS = [
    "contrastive", "triplet", "ntxent", "proxy_nca", "margin", "margin_per_class",
    "normalized_softmax", "cosface", "arcface", "fastap", "snr_contrastive",
    "multi_similarity", "multi_similarity_miner", "soft_triple",
]  # fmt: skip


#: How pytorch-metric-learning stores a searched value internally.
STORED_AS = {
    ("arcface", "margin"): math.radians,  # searched in degrees, as the paper
    ("soft_triple", "gamma"): lambda g: 1.0 / g,
}


def middle(space: dict[str, Range | Value]) -> dict[str, Value]:
    """A value inside every range: the geometric middle on a log scale, else the arithmetic."""
    out: dict[str, Value] = {}
    for name, p in space.items():
        if not isinstance(p, Range):
            out[name] = p
        elif p.integer:
            out[name] = round((p.low + p.high) / 2)
        elif p.log:
            out[name] = math.sqrt(p.low * p.high)
        else:
            out[name] = (p.low + p.high) / 2
    return out


def test_registry_holds_the_papers_fourteen_methods_in_order() -> None:
    assert losses.names() == PAPER_KEYS
    assert losses.names("multi*") == ["multi_similarity", "multi_similarity_miner"]


@pytest.mark.parametrize("key", losses.names())
def test_builds_and_gives_finite_loss_and_gradients(key: str) -> None:
    spec = losses.get(key)
    params = middle(spec.search_space())
    num_classes, m = 4, 4
    loss_fn, miner = spec.build(params, num_classes=num_classes, embedding_dim=8)
    torch.manual_seed(0)
    embeddings = torch.randn(num_classes * m, 8, requires_grad=True)
    labels = torch.arange(num_classes).repeat_interleave(m)
    tuples = miner(embeddings, labels) if miner is not None else None
    loss = loss_fn(embeddings, labels, tuples)
    loss.backward()
    assert torch.isfinite(loss)
    assert embeddings.grad is not None and torch.isfinite(embeddings.grad).all()
    assert embeddings.grad.abs().sum() > 0
    own = list(loss_fn.parameters())
    assert bool(own) == spec.has_parameters
    for p in own:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    if spec.needs_num_classes:  # per-class parameters scale with the fold's class count
        sizes = [
            sum(
                p.numel()
                for p in spec.build(params, num_classes=c, embedding_dim=8)[0].parameters()
            )
            for c in (3, 6)
        ]
        assert sizes[1] == 2 * sizes[0]


@pytest.mark.parametrize("key", losses.names())
def test_searched_values_reach_the_loss(key: str) -> None:
    spec = losses.get(key)
    params = middle(spec.search_space())
    loss_fn, miner = spec.build(params, num_classes=3, embedding_dim=8)
    for name, value in params.items():
        group, _, attr = name.partition(".")
        target = {"loss": loss_fn, "miner": miner}.get(group)
        if target is None or not hasattr(target, attr):
            continue  # lr goes to the optimizer; regulariser weights are checked below
        got = getattr(target, attr)
        value = STORED_AS.get((key, attr), lambda v: v)(value)
        got = got.item() if torch.is_tensor(got) and got.numel() == 1 else got
        if torch.is_tensor(got):  # a learned per-class beta starts at the searched value
            assert torch.allclose(got, torch.full_like(got, float(value)))
        else:
            assert got == pytest.approx(value)


def test_regulariser_weights_are_passed_as_pytorch_metric_learning_expects() -> None:
    snr, _ = losses.get("snr_contrastive").build(
        {"loss.pos_margin": 0.1, "loss.neg_margin": 1.0, "loss.regularizer_weight": 0.3},
        num_classes=3, embedding_dim=8,
    )  # fmt: skip
    assert type(snr.embedding_regularizer).__name__ == "NormalizedZeroMeanRegularizer"
    assert snr.embedding_reg_weight == 0.3
    soft, _ = losses.get("soft_triple").build(
        {"loss.la": 20, "loss.gamma": 0.1, "loss.reg_weight": 0.2, "loss.margin": 0.01,
         "loss_optimizer.lr": 1e-3},
        num_classes=3, embedding_dim=8,
    )  # fmt: skip
    assert type(soft.weight_regularizer).__name__ == "SparseCentersRegularizer"
    assert soft.weight_reg_weight == 0.2


@pytest.mark.parametrize("key", [k for k in losses.names() if losses.get(k).has_parameters])
def test_loss_parameters_get_their_own_optimizer_group(key: str) -> None:
    config = parse_study(deep_update(TINY_STUDY, {"losses": [key]}))
    from dmlopt.data import open_dataset

    dataset = open_dataset(config.dataset)
    params = middle(config.loss_space(key))
    params["loss_optimizer.lr"] = 0.0123
    module = build_module(config, key, params, dataset, num_classes=4)
    optimizer = module.configure_optimizers()
    assert len(optimizer.param_groups) == 2
    loss_group = optimizer.param_groups[1]
    assert loss_group["lr"] == 0.0123
    assert {id(p) for p in loss_group["params"]} == {id(p) for p in module.loss_fn.parameters()}
    expected_decay = losses.get(key).parameter_weight_decay
    if expected_decay is not None:  # margin betas: no weight decay
        assert loss_group["weight_decay"] == expected_decay


@pytest.mark.parametrize("key", losses.names())
def test_parameters_round_trip_through_export(key: str, tmp_path: Path) -> None:
    values = middle(losses.get(key).search_space())
    config = parse_study(deep_update(TINY_STUDY, {"losses": {key: nest(values)}}))
    path = tmp_path / "best.yaml"
    path.write_text(dump_study(config))
    space = load_study(path).loss_space(key)
    assert is_fixed(space)
    assert space == pytest.approx(values)


@pytest.mark.parametrize("key", losses.names())
def test_one_trial_two_fold_study_completes(key: str) -> None:
    from dmlopt.data import open_dataset
    from dmlopt.study.runner import search

    config = parse_study(
        deep_update(
            TINY_STUDY,
            {
                "study": f"registry-{key}",
                "losses": [key],
                "training": {"max_epochs": 1, "iterations_per_epoch": 2},
                "search": {"n_trials": 1},
            },
        )
    )
    storage = optuna.storages.InMemoryStorage()
    search(config, storage, open_dataset(config.dataset), seed=0)
    study = optuna.load_study(study_name=f"registry-{key}/{key}", storage=storage)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert len(trial.user_attrs["fold_scores"]) == 2
    assert 0.0 <= trial.value <= 1.0
    assert set(trial.params) == {
        n for n, p in config.loss_space(key).items() if isinstance(p, Range)
    }
