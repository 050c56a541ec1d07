"""The final stage: retrain the best config, score the held-out test set once, record it.

This is the only module that asks for the test classes. Every fold model of every rerun embeds
the test set; "separated" averages the metrics of the fold models (each 128-d in the paper),
"concatenated" L2-normalises each fold model's embeddings, concatenates them and normalises
again. Both are summarised over reruns as mean and 95% Student-t interval.

Each scoring records fingerprints of the test split and of the folds, whether it is a
reproduction (a final stage run from an exported config: it never counts as the scoring of
record of the study it came from), and every fold training that diverged. A diverged fold model
is its best finite checkpoint (its initial weights when it diverged before any validation); it
embeds the test set like any other, in the separated mean and in the concatenation.

Each scoring also records its provenance (versions, commit, device, date, and the identity of
any user code: :mod:`dmlopt.provenance`), and keeps the fold models' test embeddings, or the
models too, in the output folder as ``final.keep`` says (:mod:`dmlopt.kept`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from scipy import stats

from dmlopt.config import StudyConfig
from dmlopt.data import open_dataset
from dmlopt.data.base import MetricDataset, Samples
from dmlopt.data.fingerprint import folds_fingerprint, split_fingerprint
from dmlopt.data.splits import Fold, paper_split
from dmlopt.errors import DmloptError
from dmlopt.metrics import retrieval_scores_or_zero
from dmlopt.metrics.secondary import secondary_scores
from dmlopt.provenance import environment
from dmlopt.search_space import Value, fix
from dmlopt.seeding import derive_seed
from dmlopt.study.cross_validation import search_folds
from dmlopt.study.examples import retrieval_examples
from dmlopt.study.export import best_params
from dmlopt.study.progress import Progress
from dmlopt.study.runner import (
    FINISHED,
    IN_FLIGHT,
    check_same_search,
    trial_budget,
    wait_for_workers,
)
from dmlopt.study.storage import AlreadyScored, ScoreBook
from dmlopt.user_code import check_exported_code, identities

FINAL_STREAM = 1  # seeds of final reruns, apart from the search's


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95% Student-t interval over reruns; one rerun has no spread, so its interval is
    the mean itself."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        low = high = mean
    else:
        sem = statistics.stdev(values) / len(values) ** 0.5
        low, high = (
            stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem) if sem else (mean, mean)
        )
    return {"mean": mean, "ci95": [float(low), float(high)], "values": list(values)}


def score_embeddings(
    per_fold: Sequence[np.ndarray], labels: np.ndarray
) -> dict[str, dict[str, float]]:
    """Separated and concatenated scores of one rerun's fold models on the test set: the
    retrieval metrics, plus Recall@K, NMI and AMI for comparison with older papers."""

    def scores(embeddings: np.ndarray) -> dict[str, float]:
        # a diverged retrain counts as a rerun that retrieves nothing
        return {
            **retrieval_scores_or_zero(embeddings, labels),
            **secondary_scores(embeddings, labels),
        }

    separated = [scores(e) for e in per_fold]
    concatenated = np.concatenate(per_fold, axis=1)
    concatenated /= np.linalg.norm(concatenated, axis=1, keepdims=True).clip(min=1e-12)
    return {
        "separated": {m: statistics.fmean(s[m] for s in separated) for m in separated[0]},
        "concatenated": scores(concatenated),
    }


def summarize_runs(runs: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, Any]:
    return {
        kind: {m: summarize([r[kind][m] for r in runs]) for m in runs[0][kind]}
        for kind in ("separated", "concatenated")
    }


@dataclass(frozen=True)
class TestSetup:
    """What every rerun of the final stage shares: the data, the folds, the test samples, and
    the fingerprints of the test split and of the folds."""

    dataset: MetricDataset
    folds: Sequence[Fold]
    test: Samples
    fingerprints: dict[str, str]

    @classmethod
    def open(cls, config: StudyConfig) -> TestSetup:
        dataset = open_dataset(config.dataset)
        _, test_classes = paper_split(dataset.num_classes)
        folds = search_folds(config, dataset)
        fingerprints = {
            "test": split_fingerprint(dataset, test_classes),
            "folds": folds_fingerprint(dataset, folds),
        }
        return cls(dataset, folds, dataset.view(test_classes, train=False), fingerprints)


@dataclass(frozen=True)
class Chosen:
    """A loss's config for the final stage, the validation score that chose it, and the trial
    it reproduces when it comes from an exported config."""

    params: dict[str, Value]
    val_map_at_r: float
    val_map_at_r_std: float | None
    reproduction_of: dict[str, Any] | None = None


@dataclass(frozen=True)
class Rerun:
    """One rerun's test scores, the fold trainings of it that diverged, and (first rerun only)
    a few test queries with their neighbours for the report."""

    scores: dict[str, dict[str, float]]
    diverged: list[dict[str, int]]
    examples: dict[str, Any] | None = None


class FinalStage:
    """Retrains and scores each loss of a study; refuses a second scoring unless ``rescore``.

    ``out`` is the output folder, where ``final.keep`` puts the kept embeddings and models
    (nothing is kept without one)."""

    def __init__(
        self,
        config: StudyConfig,
        storage: optuna.storages.BaseStorage,
        book: ScoreBook,
        *,
        wait_for_workers: bool = False,
        out: Path | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.book = book
        self.wait_for_workers = wait_for_workers
        self.out = out
        #: ``{loss: final.json entry}`` of the scorings this object recorded
        self.recorded: dict[str, dict[str, Any]] = {}

    def losses_to_score(self, rescore: bool) -> list[str]:
        """The losses this final stage scores: all with ``rescore``, else those never scored
        (a final stage that stopped midway can be completed). Nothing left is a refusal, made
        before any work and before the test set is opened."""
        if rescore:
            return list(self.config.losses)
        todo = [
            loss
            for loss in self.config.losses
            if self.book.latest(self.config.study_name(loss)) is None
        ]
        if not todo:
            names = ", ".join(self.config.study_name(loss) for loss in self.config.losses)
            raise AlreadyScored(
                f"the test set of {names} was already scored; "
                "pass --rescore to score it again (it is recorded as a rescore)"
            )
        return todo

    def config_for(self, loss: str) -> Chosen:
        """The parameters to retrain and the val MAP@R (mean, std over folds) that chose them."""
        exported = self.config.exported_from
        if exported is not None:
            check_exported_code(self.config)
            params = fix(self.config.loss_space(loss), {})
            origin = {"study": exported.study, "trial": exported.trial}
            return Chosen(params, exported.val_map_at_r, exported.val_map_at_r_std, origin)
        name = self.config.study_name(loss)
        try:
            study = optuna.load_study(study_name=name, storage=self.storage)
        except KeyError:
            raise DmloptError(f"no study {name} in this storage: run the search first") from None
        check_same_search(self.config, loss, study)
        if self.wait_for_workers:
            wait_for_workers(study)
        finished = len(study.get_trials(deepcopy=False, states=FINISHED))
        running = len(study.get_trials(deepcopy=False, states=IN_FLIGHT))
        budget = trial_budget(self.config, loss)
        if running or finished < budget:
            raise DmloptError(
                f"the search of {name} is not finished ({finished} of {budget} trials, "
                f"{running} running): the test set is scored once, so only after the whole search"
            )
        params, trial = best_params(self.config, loss, study)
        assert trial.value is not None
        return Chosen(params, trial.value, trial.user_attrs.get("val_map_at_r_std"))

    def run(self, *, rescore: bool = False) -> dict[str, Any]:
        # every loss's config first: a missing or unfinished search fails before any training
        chosen = {loss: self.config_for(loss) for loss in self.losses_to_score(rescore)}
        setup = TestSetup.open(self.config)
        reruns = range(self.config.final.runs)
        first_loss, first = next(iter(chosen.items()))
        untrained = summarize_runs(
            [self._untrained_run(first_loss, first.params, setup, r) for r in reruns]
        )
        for loss, choice in chosen.items():
            progress = Progress(f"final {loss}", len(reruns) * len(setup.folds))
            keep = self._keep_folder(loss, setup)
            try:
                runs = [
                    self._trained_run(loss, choice.params, setup, r, progress, keep) for r in reruns
                ]
            finally:
                progress.close()
            entry = {
                "val_map_at_r": choice.val_map_at_r,
                "val_map_at_r_std": choice.val_map_at_r_std,
                "runs": len(runs),
                "test": summarize_runs([run.scores for run in runs]),
                "untrained": untrained,
                "params": choice.params,
                "seeds": [[self._seed(r, i) for i in range(len(setup.folds))] for r in reruns],
                "reproduction_of": choice.reproduction_of,
                "fingerprints": setup.fingerprints,
                "diverged": [d for run in runs for d in run.diverged],
                "examples": runs[0].examples,  # a few test queries, for the report
                "provenance": self._provenance(loss),
                "kept": None if keep is None else f"kept/{loss}",  # in the output folder
            }
            self.book.record(self.config.study_name(loss), entry, rescore=rescore)
            self.recorded[loss] = entry
        return self.results()

    def results(self) -> dict[str, Any]:
        """``final.json``: every loss of the study with a recorded score, newest scoring."""
        out = {}
        for loss in self.config.losses:
            latest = self.book.latest(self.config.study_name(loss))
            if latest is not None:
                attempt, entry = latest
                out[loss] = {**entry, "rescored": attempt > 0}
        return out

    def _provenance(self, loss: str) -> dict[str, Any]:
        return {
            **environment(self.config.training.accelerator),
            "code": identities(self.config, loss),
        }

    def _keep_folder(self, loss: str, setup: TestSetup) -> Path | None:
        """The folder of ``loss``'s kept files, with the test labels written, or ``None``."""
        if self.out is None or self.config.final.keep == "none":
            return None
        from dmlopt.kept import kept_folder, save_array

        folder = kept_folder(self.out, loss)
        save_array(folder / "labels.npy", setup.test.labels)
        return folder

    def _seed(self, run: int, fold: int) -> int:
        return derive_seed(self.config.search.seed, FINAL_STREAM, run, fold)

    def _trained_run(
        self,
        loss: str,
        params: Mapping[str, Value],
        setup: TestSetup,
        run: int,
        progress: Progress,
        keep: Path | None = None,
    ) -> Rerun:
        from dmlopt.study.fold import embed, train_fold

        embeddings = []
        diverged = []
        for i, (train_classes, val_classes) in enumerate(setup.folds):
            progress.at(f"run {run + 1} fold {i + 1}/{len(setup.folds)}")
            result = train_fold(
                self.config, loss, params, setup.dataset, train_classes, val_classes,
                seed=self._seed(run, i), listener=progress.epoch,
            )  # fmt: skip
            if result.diverged is not None:
                diverged.append({"run": run, "fold": i, **result.diverged})
            embeddings.append(embed(result.module, setup.test, self.config))
            if keep is not None:
                self._keep(keep, loss, params, setup, run, i, result.module, embeddings[-1])
            progress.advance()
        # retrieval examples of the first rerun only: they illustrate, they are not scores
        examples = retrieval_examples(embeddings, setup.test) if run == 0 else None
        return Rerun(score_embeddings(embeddings, setup.test.labels), diverged, examples)

    def _keep(
        self,
        folder: Path,
        loss: str,
        params: Mapping[str, Value],
        setup: TestSetup,
        run: int,
        fold: int,
        module: Any,
        embeddings: np.ndarray,
    ) -> None:
        from dmlopt.kept import save_array, save_model

        stem = folder / f"run{run}" / f"fold{fold}"
        save_array(stem.with_suffix(".npy"), embeddings)
        if self.config.final.keep == "models":
            about = {
                "run": run,
                "fold": fold,
                "seed": self._seed(run, fold),
                "provenance": self._provenance(loss),
            }
            save_model(
                stem.with_suffix(".pt"), module, self.config, loss=loss, params=params,
                input_shape=tuple(setup.dataset.input_shape), about=about,
            )  # fmt: skip

    def _untrained_run(
        self, loss: str, params: Mapping[str, Value], setup: TestSetup, run: int
    ) -> dict[str, dict[str, float]]:
        """The fold models before training: same seeds, so the same initial trunk and embedder
        whatever the loss (the loss is built after them and never touches the embeddings)."""
        import lightning.pytorch as pl

        from dmlopt.study.fold import build_module, embed

        embeddings = []
        for i, (train_classes, _) in enumerate(setup.folds):
            pl.seed_everything(self._seed(run, i), verbose=False)
            module = build_module(self.config, loss, params, setup.dataset, len(train_classes))
            embeddings.append(embed(module, setup.test, self.config))
        return score_embeddings(embeddings, setup.test.labels)


__all__ = ["FinalStage", "summarize"]
