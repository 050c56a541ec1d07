"""Collect a report's data from storage: plain values, no drawing, never a write.

Everything a report shows is gathered here, so it can be tested without a browser: the search
of each method (trial states, history, the best trial's folds and parameters, parameter
importances), its test score of record, and the protocol every method of a study shared.
Keys that older databases lack (fingerprints, reproductions, divergence marks) are optional.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dmlopt.errors import DmloptError
from dmlopt.study.runner import CONFIG_ATTR
from dmlopt.study.storage import ScoreBook

MIN_TRIALS_FOR_IMPORTANCE = 2  # Optuna's evaluators need at least two completed trials


@dataclass(frozen=True)
class TrialCounts:
    """How the trials of one search ended."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    diverged: int = 0  # trials with at least one fold whose loss turned non-finite

    @property
    def total(self) -> int:
        return self.complete + self.pruned + self.failed + self.running


@dataclass(frozen=True)
class LossResult:
    """One loss of one study: its search, and its test score if it was scored."""

    loss: str
    trials: list[tuple[int, float]]  # (trial number, mean val MAP@R) of completed trials
    pruned: int
    best_value: float | None
    best_std: float | None
    test: dict[str, Any] | None = None  # the final.json entry, with "rescored" and "attempt"
    best_params: dict[str, Any] = field(default_factory=dict)
    counts: TrialCounts = TrialCounts()
    best_trial: int | None = None
    best_fold_scores: list[float] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str = ""  # why there are no importances, when there are none
    searched: bool = True

    @property
    def scoring(self) -> str | None:
        """``first scoring``, ``rescore`` or ``reproduction`` of the test set; None unscored."""
        if self.test is None:
            return None
        if self.test.get("reproduction_of"):
            return "reproduction"
        return "rescore" if self.test.get("rescored") else "first scoring"


@dataclass(frozen=True)
class Protocol:
    """What every method of a study shared, from the stored study file."""

    settings: dict[str, str]  # label -> value, in display order
    splits: dict[str, str]  # split -> "classes, samples"


@dataclass(frozen=True)
class StudyReport:
    """A study's methods and its protocol."""

    name: str
    losses: dict[str, LossResult]
    protocol: Protocol | None


def collect(
    storage: optuna.storages.BaseStorage, book: ScoreBook, study: str | None = None
) -> dict[str, dict[str, LossResult]]:
    """``{study: {loss: LossResult}}`` for every dmlopt study in ``storage`` (or just ``study``):
    the searched ones, and the scored ones without a search (exported best configs)."""
    return {name: s.losses for name, s in collect_studies(storage, book, study).items()}


def collect_studies(
    storage: optuna.storages.BaseStorage, book: ScoreBook, study: str | None = None
) -> dict[str, StudyReport]:
    """:func:`collect`, with each study's protocol."""
    summaries = {
        s.study_name: s
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        if CONFIG_ATTR in s.user_attrs and "/" in s.study_name
    }
    grouped: dict[str, dict[str, LossResult]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for name in sorted(set(summaries) | set(book.study_names())):
        study_name, _, loss = name.partition("/")
        if study is not None and study_name != study:
            continue
        trials = _trials(storage, name) if name in summaries else []
        grouped.setdefault(study_name, {})[loss] = _loss_result(
            book, name, loss, trials, searched=name in summaries
        )
        if name in summaries:
            configs.setdefault(study_name, summaries[name].user_attrs[CONFIG_ATTR])
    return {
        name: StudyReport(name, losses, protocol(configs[name]) if name in configs else None)
        for name, losses in grouped.items()
    }


def _trials(storage: optuna.storages.BaseStorage, name: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def count_trials(trials: list[FrozenTrial]) -> TrialCounts:
    """Trial states of a search, and how many trials had a diverged fold."""
    return TrialCounts(
        complete=sum(t.state == TrialState.COMPLETE for t in trials),
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        failed=sum(t.state == TrialState.FAIL for t in trials),
        running=sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials),
        diverged=sum(bool(t.user_attrs.get("diverged")) for t in trials),
    )


def _loss_result(
    book: ScoreBook, name: str, loss: str, trials: list[FrozenTrial], *, searched: bool = True
) -> LossResult:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(complete, key=lambda t: t.value or 0.0, default=None)
    latest = book.latest(name)
    importances, note = param_importances(complete)
    return LossResult(
        loss=loss,
        trials=[(t.number, float(t.value)) for t in complete if t.value is not None],
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        best_value=None if best is None else best.value,
        best_std=None if best is None else best.user_attrs.get("val_map_at_r_std"),
        test=None
        if latest is None
        else {**latest[1], "rescored": latest[0] > 0, "attempt": latest[0]},
        best_params={} if best is None else dict(best.params),
        counts=count_trials(trials),
        best_trial=None if best is None else best.number,
        best_fold_scores=[] if best is None else list(best.user_attrs.get("fold_scores", [])),
        importances=importances,
        importance_note=note,
        searched=searched,
    )


def param_importances(complete: list[FrozenTrial]) -> tuple[dict[str, float], str]:
    """Optuna's parameter importances over the completed trials, or ``({}, why not)``: they
    need at least two completed trials whose parameters vary."""
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, f"needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials"
    varying = {p for p in complete[0].params if len({repr(t.params.get(p)) for t in complete}) > 1}
    if not varying:
        return {}, "no parameter varied between the completed trials"
    if any(t.params.keys() != complete[0].params.keys() for t in complete):
        return {}, "the completed trials searched different parameters"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")  # in memory: storage stays untouched
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(complete)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            found = optuna.importance.get_param_importances(study, params=sorted(varying))
        except (RuntimeError, ValueError) as e:
            return {}, f"not computable ({e})"
    return {k: float(v) for k, v in found.items()}, ""


def protocol(config: Mapping[str, Any]) -> Protocol:
    """The shared settings of a study, from its stored study file, and its class splits."""
    dataset = dict(config.get("dataset", {}))
    model, training = config.get("model", {}), config.get("training", {})
    search, split, final = (
        config.get("search", {}),
        config.get("split", {}),
        config.get("final", {}),
    )
    optimizer = training.get("optimizer", {})
    described = ", ".join(f"{k} {v}" for k, v in dataset.items() if k not in ("name", "transform"))
    batch = training.get("batch_size")
    m = training.get("m_per_class")
    settings = {
        "dataset": f"{dataset.get('name')} ({described})"
        if described
        else str(dataset.get("name")),
        "class split": f"{split.get('test', 'paper')}: first half of the sorted classes "
        "train/val, second half test",
        "folds": f"{split.get('folds')} class-disjoint folds over the train/val classes",
        "trunk": f"{model.get('trunk')}"
        + (f", weights {model['pretrained']}" if model.get("pretrained") else ""),
        "embedding size": str(model.get("embedding_dim")),
        "batch and sampler": f"{batch} = {batch // m if batch and m else '?'} classes x {m} "
        "samples (m-per-class)",
        "optimizer": f"{optimizer.get('name')} lr {optimizer.get('lr')}, "
        f"weight decay {optimizer.get('weight_decay')}",
        "training": f"{training.get('iterations_per_epoch')} iterations per epoch, at most "
        f"{training.get('max_epochs')} epochs, val every {training.get('eval_every')}, "
        f"patience {training.get('patience')}",
        "search": f"{search.get('n_trials')} trials per method, {search.get('sampler')} "
        f"sampler, pruner {search.get('pruner')}, seed {search.get('seed')}",
        "final reruns": str(final.get("runs")),
        "versions (of this report)": versions(),
    }
    return Protocol(settings=settings, splits=split_sizes(config))


def split_sizes(config: Mapping[str, Any]) -> dict[str, str]:
    """Classes and samples per split; empty when the dataset cannot be opened here. Listing a
    dataset reads labels only, never a sample."""
    from dmlopt.config import parse_study
    from dmlopt.data import open_dataset
    from dmlopt.data.splits import paper_split
    from dmlopt.study.cross_validation import search_folds

    try:
        study = parse_study(dict(config), source="stored study")
        dataset = open_dataset(study.dataset)
        trainval, test = paper_split(dataset.num_classes)
        folds = search_folds(study, dataset)
    except (DmloptError, OSError, ValueError):
        return {}

    def size(classes: list[int] | tuple[int, ...]) -> str:
        return f"{len(classes)} classes, {len(dataset.indices_of(list(classes)))} samples"

    sizes = {"train/val (search)": size(trainval), "test (final only)": size(test)}
    for i, (train, val) in enumerate(folds):
        sizes[f"fold {i}"] = f"train {size(train)}; val {size(val)}"
    return sizes


def versions() -> str:
    """Versions of the packages that shape results, as installed where the report is made."""
    names = ("dmlopt", "torch", "pytorch-metric-learning", "optuna", "faiss-cpu")
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(found)
