"""Run the search: one Optuna study per loss, any number of workers on one storage."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from dmlopt.config import FinalConfig, StudyConfig
from dmlopt.data.base import MetricDataset
from dmlopt.data.fingerprint import folds_fingerprint
from dmlopt.errors import DmloptError
from dmlopt.provenance import record_search
from dmlopt.search_space import Range
from dmlopt.seeding import derive_seed
from dmlopt.study.cross_validation import search_folds
from dmlopt.study.notes import name_objective
from dmlopt.study.progress import Progress
from dmlopt.study.pruning import FoldMedianPruner
from dmlopt.user_code import check_same_code

CONFIG_ATTR = "dmlopt_config"  # study user attribute holding the study file, storage removed

SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}
PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "median": FoldMedianPruner,
    "none": optuna.pruners.NopPruner,
}


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
IN_FLIGHT = (TrialState.RUNNING, TrialState.WAITING)
WAIT_SECONDS = 10  # polling interval while other workers finish their trials


def search_grid(config: StudyConfig, loss: str) -> dict[str, list[int]] | None:
    """The grid a loss is searched on, or ``None`` for the study's sampler.

    A space that is one integer range (everything else fixed) with no more values than the
    trial budget is searched as a grid, each value once, as the paper searched FastAP's
    ``num_bins``: a sampler would repeat some values and never try others."""
    ranges = {n: p for n, p in config.loss_space(loss).items() if isinstance(p, Range)}
    if len(ranges) != 1:
        return None
    ((name, param),) = ranges.items()
    values = list(range(int(param.low), int(param.high) + 1))
    if not param.integer or len(values) > config.search.n_trials:
        return None
    return {name: values}


def trial_budget(config: StudyConfig, loss: str) -> int:
    """Finished trials a loss's search needs: ``search.n_trials``, or the grid's size."""
    grid = search_grid(config, loss)
    return config.search.n_trials if grid is None else len(next(iter(grid.values())))


def _sampler(config: StudyConfig, loss: str, seed: int | None) -> optuna.samplers.BaseSampler:
    grid = search_grid(config, loss)
    if grid is not None:
        return optuna.samplers.GridSampler(grid, seed=seed)
    return SAMPLERS[config.search.sampler](seed)


def open_study(
    config: StudyConfig,
    loss: str,
    storage: optuna.storages.BaseStorage,
    *,
    seed: int | None,
    folds_fingerprint: str | None = None,
) -> optuna.Study:
    """The Optuna study ``<study>/<loss>``, created on first use, carrying its study file, the
    identity of the user code it runs and its provenance (:func:`record_search`).

    The sampler's seed moves on with the number of trials, so a resumed search does not repeat
    the trials it already ran."""
    name = config.study_name(loss)
    ran = _trial_count(storage, name)
    if seed is not None and ran:
        seed = derive_seed(seed, ran)
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        sampler=_sampler(config, loss, seed),
        pruner=PRUNERS[config.search.pruner](),
        load_if_exists=True,
    )
    if CONFIG_ATTR not in study.user_attrs:
        public = config.model_copy(update={"storage": None})
        study.set_user_attr(CONFIG_ATTR, public.model_dump(mode="json"))
        record_search(config, loss, study, folds_fingerprint=folds_fingerprint)
    name_objective(study)  # "val MAP@R" in the dashboard, not "Objective 0"
    return study


def _trial_count(storage: optuna.storages.BaseStorage, name: str) -> int | None:
    """Trials the study ``name`` holds, or ``None`` when there is no such study."""
    try:
        return storage.get_n_trials(storage.get_study_id_from_name(name))
    except KeyError:
        return None


def _searched_settings(config: StudyConfig, loss: str) -> dict[str, object]:
    """What must not change between the trials of one study: all but the loss's siblings, the
    budget, the final stage and the storage."""
    return config.model_copy(
        update={
            "losses": {loss: config.losses[loss]},
            "search": config.search.model_copy(update={"n_trials": 1}),
            "final": FinalConfig(),
            "storage": None,
        }
    ).model_dump(mode="json")


def check_same_searches(config: StudyConfig, storage: optuna.storages.BaseStorage) -> None:
    """:func:`check_same_search` for every loss of ``config`` that was searched before."""
    for loss in config.losses:
        name = config.study_name(loss)
        if _trial_count(storage, name) is not None:
            check_same_search(config, loss, optuna.load_study(study_name=name, storage=storage))


def check_same_search(config: StudyConfig, loss: str, study: optuna.Study) -> None:
    """Refuse a study file that differs from the one ``study`` was searched with."""
    if CONFIG_ATTR not in study.user_attrs:
        return
    stored, current = (
        _searched_settings(stored_config(study), loss),
        _searched_settings(config, loss),
    )
    changed = [key for key in current if current[key] != stored.get(key)]
    if changed:
        raise DmloptError(
            f"the study file differs from the one {study.study_name} was searched with "
            f"(in {', '.join(changed)}): restore it or use a new study name"
        )
    check_same_code(config, loss, study)


def search(
    config: StudyConfig,
    storage: optuna.storages.BaseStorage,
    dataset: MetricDataset,
    *,
    seed: int | None,
    on_loss_done: Callable[[str, optuna.Study], None] | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> None:
    """Run trials for every loss until each study holds its :func:`trial_budget` of finished
    trials.

    Several processes may run this on one storage (distributed workers): the trial budget is
    shared through the database, not counted per process. Other workers' running trials count
    against it, so workers that each see one trial left do not all start one; workers finishing
    at the same instant can still overrun it by at most one trial each. ``callbacks`` are
    Optuna's, called after each trial (experiment trackers).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    # Trials trained under other settings cannot be compared: refuse before training any.
    check_same_searches(config, storage)
    folds = search_folds(config, dataset)
    fingerprint = folds_fingerprint(dataset, folds)
    counted = (*FINISHED, *IN_FLIGHT)
    for loss in config.losses:
        n_trials = trial_budget(config, loss)
        study = open_study(config, loss, storage, seed=seed, folds_fingerprint=fingerprint)
        done = len(study.get_trials(states=counted))
        progress = Progress(loss, n_trials)
        progress.bar.update(min(len(study.get_trials(states=FINISHED)), n_trials))
        try:
            if done < n_trials:
                from dmlopt.study.objective import CrossValidationObjective  # imports Lightning

                objective = CrossValidationObjective(config, loss, dataset, folds, progress)
                study.optimize(
                    objective,
                    n_trials=n_trials - done,
                    callbacks=[MaxTrialsCallback(n_trials, states=counted), progress, *callbacks],
                    catch=(),
                )
        finally:
            progress.close()
        if on_loss_done is not None:
            on_loss_done(loss, study)


def wait_for_workers(study: optuna.Study) -> None:
    """Block until no trial of ``study`` is running (other workers' included), failing the
    trials of workers whose heartbeat stopped so that a dead worker cannot block forever."""
    while study.get_trials(deepcopy=False, states=IN_FLIGHT):
        optuna.storages.fail_stale_trials(study)
        time.sleep(WAIT_SECONDS)


def stored_config(study: optuna.Study) -> StudyConfig:
    """The study file a stored study was run with (storage removed)."""
    from dmlopt.config import parse_study

    return parse_study(study.user_attrs[CONFIG_ATTR], source=f"study {study.study_name}")
