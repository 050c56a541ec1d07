"""Run the search: one Optuna study per loss, any number of workers on one storage."""

from __future__ import annotations

import logging
from collections.abc import Callable

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from dmlopt.config import StudyConfig
from dmlopt.data.base import MetricDataset
from dmlopt.study.cross_validation import search_folds
from dmlopt.study.progress import Progress

CONFIG_ATTR = "dmlopt_config"  # study user attribute holding the study file, storage removed

SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}
PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    # Compare a trial's running fold mean with other trials' at the same fold, after two trials.
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    "none": optuna.pruners.NopPruner,
}


def open_study(
    config: StudyConfig, loss: str, storage: optuna.storages.BaseStorage, *, seed: int | None
) -> optuna.Study:
    """The Optuna study ``<study>/<loss>``, created on first use, carrying its study file."""
    study = optuna.create_study(
        storage=storage,
        study_name=config.study_name(loss),
        direction="maximize",
        sampler=SAMPLERS[config.search.sampler](seed),
        pruner=PRUNERS[config.search.pruner](),
        load_if_exists=True,
    )
    if CONFIG_ATTR not in study.user_attrs:
        public = config.model_copy(update={"storage": None})
        study.set_user_attr(CONFIG_ATTR, public.model_dump(mode="json"))
    return study


def search(
    config: StudyConfig,
    storage: optuna.storages.BaseStorage,
    dataset: MetricDataset,
    *,
    seed: int | None,
    on_loss_done: Callable[[str, optuna.Study], None] | None = None,
) -> None:
    """Run trials for every loss until each study holds ``search.n_trials`` finished trials.

    Several processes may run this on one storage (distributed workers): the trial budget is
    shared through the database, not counted per process.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    folds = search_folds(config, dataset)
    n_trials = config.search.n_trials
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    for loss in config.losses:
        study = open_study(config, loss, storage, seed=seed)
        done = len(study.get_trials(states=finished))
        progress = Progress(loss, n_trials)
        progress.bar.update(min(done, n_trials))
        if done < n_trials:
            from dmlopt.study.objective import CrossValidationObjective  # imports Lightning

            objective = CrossValidationObjective(config, loss, dataset, folds, progress)
            study.optimize(
                objective,
                n_trials=n_trials - done,
                # Counting other workers' running trials keeps the shared budget from being
                # overrun by workers that each see one trial left.
                callbacks=[
                    MaxTrialsCallback(n_trials, states=(*finished, TrialState.RUNNING)),
                    progress,
                ],
                catch=(),
            )
        progress.close()
        if on_loss_done is not None:
            on_loss_done(loss, study)


def stored_config(study: optuna.Study) -> StudyConfig:
    """The study file a stored study was run with (storage removed)."""
    from dmlopt.config import parse_study

    return parse_study(study.user_attrs[CONFIG_ATTR], source=f"study {study.study_name}")
