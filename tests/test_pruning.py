"""Pruning and sampling of the search: fold-by-fold median pruning that compares like with like,
never after the last fold, and integer spaces searched as a grid (each value once)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from dmlopt.config import load_study, parse_study
from dmlopt.data import open_dataset
from dmlopt.study import objective as objective_module
from dmlopt.study.fold import FoldResult
from dmlopt.study.pruning import FoldMedianPruner
from dmlopt.study.runner import search, search_grid, trial_budget
from tests.conftest import TINY_STUDY, deep_update

STUDIES = Path(__file__).resolve().parent.parent / "studies"


def history_study(pruner: optuna.pruners.BasePruner) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", pruner=pruner)


def add_trial(study: optuna.Study, folds: Sequence[float], *, pruned: bool = False) -> None:
    """A finished trial whose folds scored ``folds`` (pruned after the last of them)."""
    state = TrialState.PRUNED if pruned else TrialState.COMPLETE
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=None if pruned else sum(folds) / len(folds),
            intermediate_values=dict(enumerate(folds)),
        )
    )


def decisions(study: optuna.Study, folds: Sequence[float]) -> list[bool]:
    """Whether the pruner would stop a new trial after each of ``folds``."""
    trial = study.ask()
    out = []
    for i, score in enumerate(folds):
        trial.report(score, step=i)
        out.append(trial.should_prune())
    study.tell(trial, state=TrialState.FAIL)
    return out


# --------------------------------------------------------------------------- the pruner
def test_median_prunes_like_with_like() -> None:
    """Fold 0 is easy and fold 1 hard for every trial: a trial is judged by its mean over the
    folds it ran against other trials' means over those same folds."""
    study = history_study(FoldMedianPruner(n_startup_trials=2))
    add_trial(study, [0.90, 0.20, 0.50])
    add_trial(study, [0.80, 0.30, 0.50])
    add_trial(study, [0.70, 0.40, 0.50])
    # fold 0: 0.85 vs median 0.80 -> go on; folds 0-1: mean 0.575 vs means 0.55 -> go on
    assert decisions(study, [0.85, 0.30]) == [False, False]
    # fold 0: 0.75 vs 0.80 -> stop (its later, better fold is not used to excuse it)
    assert decisions(study, [0.75]) == [True]
    # fold 0 fine (0.80, not below the median); folds 0-1: mean 0.50 < 0.55 -> stop
    assert decisions(study, [0.80, 0.20]) == [False, True]


def test_the_bar_is_the_median_of_all_trials_not_of_the_survivors() -> None:
    """Trials pruned after fold 0 count with their score at fold 0 and as below the bar at
    fold 1: comparing with the survivors alone would raise the bar fold after fold."""
    study = history_study(FoldMedianPruner(n_startup_trials=2))
    add_trial(study, [0.50, 0.50])
    add_trial(study, [0.60, 0.60])
    add_trial(study, [0.30], pruned=True)
    # fold 0: median of 0.50, 0.60, 0.30 is 0.50 (survivors alone: 0.55, pruned)
    assert decisions(study, [0.52]) == [False]
    # folds 0-1: means 0.50, 0.60 and the pruned trial below both: median 0.50
    assert decisions(study, [0.52, 0.50]) == [False, False]  # survivors alone: 0.55, pruned
    assert decisions(study, [0.52, 0.40]) == [False, True]


def test_nothing_is_pruned_before_two_other_trials_finished_a_fold() -> None:
    study = history_study(FoldMedianPruner(n_startup_trials=2))
    add_trial(study, [0.90, 0.90])
    assert decisions(study, [0.10, 0.10]) == [False, False]
    add_trial(study, [0.80], pruned=True)
    assert decisions(study, [0.10]) == [True]


def test_about_half_of_the_trials_are_pruned() -> None:
    """Simulated 4-fold trials of random quality: a median rule should prune about half, where
    one comparing with survivors prunes most (benchmarks/pruning_simulation.py measures it)."""
    import numpy as np

    rng = np.random.default_rng(0)
    study = history_study(FoldMedianPruner())
    offsets = (0.10, -0.05, 0.0, -0.08)
    for quality in rng.normal(size=60):
        trial = study.ask()
        for i, offset in enumerate(offsets):
            trial.report(0.5 + 0.03 * quality + offset + rng.normal(scale=0.02), step=i)
            if i < len(offsets) - 1 and trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, 0.5)
    pruned = len(study.get_trials(states=(TrialState.PRUNED,)))
    assert 20 <= pruned <= 40, pruned


# --------------------------------------------------------------------------- the objective
@pytest.fixture
def fake_folds(monkeypatch: pytest.MonkeyPatch) -> Callable[[Sequence[float]], None]:
    """``fake_folds(scores)``: fold trainings score ``scores`` in turn, without training (a
    trial that runs every fold gets them in fold order when there is one score per fold)."""

    def fake(scores: Sequence[float]) -> None:
        turn = itertools.cycle(scores)
        monkeypatch.setattr(
            objective_module,
            "train_fold",
            lambda *a, **k: FoldResult(next(turn), 1, 1, None),  # type: ignore[arg-type]
        )

    return fake


def run_search(changes: dict[str, Any], storage: optuna.storages.BaseStorage) -> optuna.Study:
    config = parse_study(deep_update(TINY_STUDY, changes))
    search(config, storage, open_dataset(config.dataset), seed=0)
    loss = next(iter(config.losses))
    return optuna.load_study(study_name=config.study_name(loss), storage=storage)


def test_each_fold_reports_its_own_score(fake_folds: Callable[[Sequence[float]], None]) -> None:
    fake_folds([0.2, 0.4, 0.9])
    study = run_search(
        {"split": {"folds": 3}, "search": {"n_trials": 1}}, optuna.storages.InMemoryStorage()
    )
    (trial,) = study.trials
    assert trial.intermediate_values == {0: 0.2, 1: 0.4, 2: 0.9}
    assert trial.value == pytest.approx(0.5)


class PruneAtFold(optuna.pruners.BasePruner):
    """Prunes every trial at ``fold`` and later."""

    def __init__(self, fold: int) -> None:
        self.fold = fold

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.last_step is not None and trial.last_step >= self.fold


@pytest.mark.parametrize(("prune_at", "state"), [(1, TrialState.PRUNED), (2, TrialState.COMPLETE)])
def test_a_trial_is_never_pruned_after_its_last_fold(
    prune_at: int,
    state: TrialState,
    fake_folds: Callable[[Sequence[float]], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dmlopt.study import runner

    fake_folds([0.5])
    monkeypatch.setitem(runner.PRUNERS, "median", lambda: PruneAtFold(prune_at))
    study = run_search(
        {"split": {"folds": 3}, "search": {"n_trials": 1, "pruner": "median"}},
        optuna.storages.InMemoryStorage(),
    )
    assert [t.state for t in study.trials] == [state]


@pytest.mark.parametrize("pruner", ["median", "none"])
def test_pruner_setting_decides_whether_weak_trials_stop_early(
    pruner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each fold scores the trial's sampled margin: trials below the median stop after fold 0
    with ``median`` and train every fold with ``none``."""
    folds_trained: list[int] = []

    def train_fold(config: Any, loss: str, params: Any, *a: Any, **k: Any) -> FoldResult:
        folds_trained.append(1)
        return FoldResult(params["loss.pos_margin"], 1, 1, None)  # type: ignore[arg-type]

    monkeypatch.setattr(objective_module, "train_fold", train_fold)
    study = run_search(
        {"search": {"n_trials": 8, "sampler": "random", "pruner": pruner}},
        optuna.storages.InMemoryStorage(),
    )
    states = [t.state for t in study.trials]
    if pruner == "median":
        assert TrialState.PRUNED in states and len(folds_trained) < 2 * 8
    else:
        assert set(states) == {TrialState.COMPLETE} and len(folds_trained) == 2 * 8


def test_pruner_setting_selects_the_fold_median_pruner(tmp_path: Path) -> None:
    from dmlopt.study.runner import open_study

    storage = optuna.storages.InMemoryStorage()
    for pruner, kind in (("median", FoldMedianPruner), ("none", optuna.pruners.NopPruner)):
        config = parse_study(
            deep_update(TINY_STUDY, {"study": pruner, "search": {"pruner": pruner}})
        )
        assert isinstance(open_study(config, "contrastive", storage, seed=0).pruner, kind)


# --------------------------------------------------------------------------- grids
FASTAP = {"losses": {"fastap": {"loss": {"num_bins": {"low": 2, "high": 6}}}}}


def test_one_integer_range_is_searched_as_a_grid_each_value_once(
    fake_folds: Callable[[Sequence[float]], None],
) -> None:
    fake_folds([0.5])
    config = parse_study(deep_update(TINY_STUDY, {**FASTAP, "search": {"n_trials": 8}}))
    assert search_grid(config, "fastap") == {"loss.num_bins": [2, 3, 4, 5, 6]}
    assert trial_budget(config, "fastap") == 5
    study = run_search({**FASTAP, "search": {"n_trials": 8}}, optuna.storages.InMemoryStorage())
    assert sorted(t.params["loss.num_bins"] for t in study.trials) == [2, 3, 4, 5, 6]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_grid_larger_than_the_budget_is_sampled(
    fake_folds: Callable[[Sequence[float]], None],
) -> None:
    fake_folds([0.5])
    changes = {**FASTAP, "search": {"n_trials": 3}}
    config = parse_study(deep_update(TINY_STUDY, changes))
    assert search_grid(config, "fastap") is None and trial_budget(config, "fastap") == 3
    study = run_search(changes, optuna.storages.InMemoryStorage())
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    assert len(study.trials) == 3


def test_spaces_of_several_parameters_are_not_grids() -> None:
    config = parse_study(deep_update(TINY_STUDY, {"search": {"n_trials": 1000}}))
    assert search_grid(config, "contrastive") is None


# --------------------------------------------------------------------------- presets
@pytest.mark.parametrize("path", sorted((STUDIES / "reality_check").glob("*.yaml")), ids=str)
def test_paper_presets_run_the_papers_protocol(path: Path) -> None:
    config = load_study(path)
    assert config.search.pruner == "none"  # 50 fully evaluated trials per method
    assert config.model.freeze_batchnorm
    grid = search_grid(config, "fastap")
    if path.stem == "cub200_bs256":  # searched by Bayesian optimisation over [2, 250]
        assert grid is None
    else:
        assert grid == {"loss.num_bins": list(range(2, 33))}
