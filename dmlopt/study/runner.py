"""Run the search: one Optuna study per loss, any number of workers on one storage."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from dmlopt.config import FinalConfig, StudyConfig, WorkersConfig
from dmlopt.data.base import BadSample, MetricDataset
from dmlopt.data.fingerprint import folds_fingerprint
from dmlopt.data.splits import Fold
from dmlopt.errors import DmloptError
from dmlopt.provenance import record_search
from dmlopt.search_space import Range
from dmlopt.seeding import derive_seed
from dmlopt.study import signals
from dmlopt.study.cross_validation import search_folds
from dmlopt.study.liveness import STALE_ATTR, Liveness, wait_until_idle
from dmlopt.study.notes import name_objective
from dmlopt.study.progress import Progress
from dmlopt.study.pruning import FoldMedianPruner
from dmlopt.user_code import check_same_code

CONFIG_ATTR = "dmlopt_config"  # study user attribute holding the study file, storage removed

SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    # constant_liar: parallel workers treat each other's running trials as poor results rather
    # than all sampling next to the same best trial (it changes nothing for a lone worker,
    # whose own trial is left out).
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}
PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "median": FoldMedianPruner,
    "none": optuna.pruners.NopPruner,
}


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Trials a worker is running. WAITING trials (queued retries) are not counted: they hold a
#: place in no one's budget until a worker picks them up.
IN_FLIGHT = (TrialState.RUNNING,)
WAIT_SECONDS = 1.0  # longest poll while other workers finish their trials (a cheap query)
OVER_BUDGET_ATTR = "dmlopt_over_budget"  # a trial created after the budget was claimed
BAD_DATA_ATTR = "dmlopt_bad_sample"  # a trial failed by a sample that cannot be read
WORKER_ATTR = "dmlopt_worker"  # which process ran a trial, and on which devices
WORKER: dict[str, str | int | None] = {
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
}


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


class GridOnce(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` after the last point: the trial loop
    stops at the budget itself (the grid's size), and ``stop`` only works inside ``optimize``."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        pass


def _sampler(config: StudyConfig, loss: str, seed: int | None) -> optuna.samplers.BaseSampler:
    grid = search_grid(config, loss)
    if grid is not None:
        return GridOnce(grid, seed=seed)
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
            "workers": WorkersConfig(),
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
    show_progress: bool = True,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> None:
    """Run trials for every loss until each study holds its :func:`trial_budget` of finished
    trials.

    Several processes may run this on one storage (distributed workers): the trial budget is
    shared through the database. It counts finished trials and running ones whose worker is
    alive; a worker whose own budget looks spent waits for the others rather than exit, so a
    dead worker's trial, failed by a watcher, is retried by whoever survives. Of trials started
    at the same instant past the budget, the one with the higher number steps back (it is
    failed before it trains, marked ``dmlopt_over_budget``), so the budget is met exactly.
    ``callbacks`` are Optuna's, called after each trial (experiment trackers).
    """
    # dmlopt reports trials, failures and lost storage in its own words, one line each; Optuna's
    # warnings (a failed trial, a query retried the slow way while the database goes away)
    # would repeat them as multi-line noise.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    # Trials trained under other settings cannot be compared: refuse before training any.
    check_same_searches(config, storage)
    folds = search_folds(config, dataset)
    fingerprint = folds_fingerprint(dataset, folds)
    for loss in config.losses:
        study = open_study(config, loss, storage, seed=seed, folds_fingerprint=fingerprint)
        progress = Progress(loss, trial_budget(config, loss), enabled=show_progress)
        try:
            TrialLoop(config, loss, dataset, folds, study, progress, callbacks=callbacks).run()
        finally:
            progress.close()
        if on_loss_done is not None:
            on_loss_done(loss, study)


class TrialLoop:
    """One worker's trial loop on one loss's study (see :func:`search`).

    ``objective`` defaults to cross-validated training; a benchmark passes one of its own."""

    def __init__(
        self,
        config: StudyConfig,
        loss: str,
        dataset: MetricDataset | None,
        folds: Sequence[Fold],
        study: optuna.Study,
        progress: Progress,
        objective: Callable[[optuna.Trial], float] | None = None,
        callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    ) -> None:
        self.config, self.loss, self.dataset, self.folds = config, loss, dataset, folds
        self.study = study
        self.progress = progress
        self.callbacks = callbacks
        self.n_trials = trial_budget(config, loss)
        self.interval = config.workers.heartbeat_seconds
        self.objective = objective
        self.bad_data: list[str] = []  # this run's trials failed by unreadable samples

    def run(self) -> None:
        with Liveness(self.study, self.interval) as live:
            while True:
                signals.check()
                trials = self.study.get_trials(deepcopy=False)
                finished = sum(t.state in FINISHED for t in trials)
                running = sum(t.state in IN_FLIGHT for t in trials)
                self.progress.sync(finished)
                if finished >= self.n_trials:
                    return
                if finished + running >= self.n_trials:
                    # Others hold the rest: watch them (the thread does so only every beat).
                    live.watch.check()
                    time.sleep(min(self.interval, WAIT_SECONDS))
                    continue
                if self.objective is None:
                    assert self.dataset is not None
                    from dmlopt.study.objective import CrossValidationObjective  # Lightning

                    self.objective = CrossValidationObjective(
                        self.config, self.loss, self.dataset, self.folds, self.progress
                    )
                trial = self.study.ask()  # a queued retry first, else a new trial
                with live.beating(trial._trial_id):
                    self._run_trial(trial, self.objective)

    def _over_budget(self, trial: optuna.Trial) -> bool:
        """Whether trials numbered before ``trial`` already fill the budget (a race lost)."""
        before = self.study.get_trials(deepcopy=False, states=(*FINISHED, *IN_FLIGHT))
        return sum(t.number < trial.number for t in before) >= self.n_trials

    def _run_trial(self, trial: optuna.Trial, objective: Callable[[optuna.Trial], float]) -> None:
        try:
            frozen = self._attempt(trial, objective)
        except UpdateFinishedTrialError:
            frozen = self.study._storage.get_trial(trial._trial_id)
        if frozen is None:
            return
        if frozen.state == TrialState.FAIL and frozen.system_attrs.get(STALE_ATTR):
            # Alive but silent for a whole grace period (a paused process, say): another
            # worker failed the trial and queued its retry, so this one moves on.
            print(
                f"warning: trial {trial.number} was failed by another worker that took this "
                "one for dead (no heartbeat); its retry is queued",
                file=sys.stderr,
            )
            return
        self.progress(self.study, frozen)
        for callback in self.callbacks:
            callback(self.study, frozen)

    def _attempt(
        self, trial: optuna.Trial, objective: Callable[[optuna.Trial], float]
    ) -> FrozenTrial | None:
        """Run and tell ``trial``; ``None`` when it is not run (over budget)."""
        storage = self.study._storage
        try:
            storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, WORKER)
            if self._over_budget(trial):
                storage.set_trial_system_attr(trial._trial_id, OVER_BUDGET_ATTR, True)
                self.study.tell(trial, state=TrialState.FAIL)
                return None
            value = objective(trial)
        except optuna.TrialPruned:
            frozen = self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        except BadSample as e:
            # One unreadable file fails this trial, not the study: later trials may never
            # draw it, and `dmlopt check --verify-data` lists every such file.
            storage.set_trial_system_attr(trial._trial_id, BAD_DATA_ATTR, str(e))
            frozen = self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            print(f"warning: trial {trial.number} failed: {e}", file=sys.stderr)
            self.bad_data.append(str(e))
            # Counted per run, not per study: once the files are fixed, a rerun goes on.
            if len(self.bad_data) >= self.n_trials:
                raise DmloptError(
                    f"{len(self.bad_data)} trials of {self.study.study_name} failed on "
                    f"unreadable samples, the last: {e}"
                ) from None
        except UpdateFinishedTrialError:
            raise  # a watcher failed it (see _run_trial)
        except BaseException:
            # Ctrl-C, SIGTERM, a lost database or a bug: never leave the trial RUNNING for
            # the heartbeat to find (best effort: the database may be what failed).
            with contextlib.suppress(Exception):
                self.study.tell(trial, state=TrialState.FAIL)
            raise
        else:
            frozen = self.study.tell(trial, value, skip_if_finished=True)
        return frozen


def wait_for_workers(study: optuna.Study) -> None:
    """Block until no trial of ``study`` is running (other workers' included), failing the
    trials of workers whose heartbeat stopped so that a dead worker cannot block forever."""
    interval = WorkersConfig().heartbeat_seconds
    if CONFIG_ATTR in study.user_attrs:
        interval = stored_config(study).workers.heartbeat_seconds
    wait_until_idle(study, interval)


def stored_config(study: optuna.Study) -> StudyConfig:
    """The study file a stored study was run with (storage removed)."""
    from dmlopt.config import parse_study

    return parse_study(study.user_attrs[CONFIG_ATTR], source=f"study {study.study_name}")
