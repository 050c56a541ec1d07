"""Study notes for optuna-dashboard: the protocol every method shared and, once the final stage
has run, the test scores of record (first scoring, rescore or reproduction)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import optuna

from dmlopt.config import StudyConfig

METRIC_NAME = "val MAP@R"  # the objective's name in the dashboard
_TEST_METRICS = (("precision_at_1", "P@1"), ("r_precision", "R-Precision"), ("map_at_r", "MAP@R"))


def protocol_note(config: StudyConfig, loss: str, entry: Mapping[str, Any] | None = None) -> str:
    """Markdown: the shared settings of ``config`` and, given a final.json ``entry``, its test
    scores of record."""
    t, m = config.training, config.model
    lines = [
        f"## {config.study_name(loss)}",
        "",
        "The objective is the mean over class-disjoint folds of each fold's best val MAP@R; the "
        "intermediate value at step *i* is fold *i*'s own score. Every method of this study "
        "shares everything below; only the loss and its search space differ.",
        "",
        f"- dataset: `{config.dataset.name}`; class split `{config.split.test}`, "
        f"{config.split.folds} folds",
        f"- model: `{m.trunk}` -> {m.embedding_dim}-d embedding",
        f"- batch {t.batch_size} ({t.batch_size // t.m_per_class} classes x {t.m_per_class}), "
        f"{t.iterations_per_epoch} iterations/epoch, <= {t.max_epochs} epochs, "
        f"patience {t.patience}",
        f"- optimizer {t.optimizer.name} lr {t.optimizer.lr:g}",
        f"- search: {config.search.n_trials} trials, {config.search.sampler} sampler, "
        f"pruner {config.search.pruner}; final: {config.final.runs} reruns",
    ]
    if entry is None:
        lines += ["", "**Test set:** not scored yet."]
        return "\n".join(lines)
    reproduction = entry.get("reproduction_of")
    if reproduction:
        how = f"reproduction of {reproduction.get('study')} trial {reproduction.get('trial')}"
    else:
        how = "rescore" if entry.get("rescored") else "first scoring"
    lines += ["", f"**Test scores of record** ({how}, {entry['runs']} reruns, %, mean "
              "[95% interval]):", "", "| | " + " | ".join(n for _, n in _TEST_METRICS) + " |",
              "|---|" + "---|" * len(_TEST_METRICS)]  # fmt: skip
    for kind in ("concatenated", "separated"):
        cells = []
        for key, _ in _TEST_METRICS:
            s = entry["test"][kind][key]
            cells.append(f"{100 * s['mean']:.2f} [{100 * s['ci95'][0]:.2f}, "
                         f"{100 * s['ci95'][1]:.2f}]")  # fmt: skip
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_note(study: optuna.Study, config: StudyConfig, loss: str,
               entry: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """Name the objective and (re)write the study's note."""
    from optuna_dashboard import save_note

    name_objective(study)
    save_note(study, protocol_note(config, loss, entry))


def name_objective(study: optuna.Study) -> None:
    """Show the objective as ``val MAP@R`` in the dashboard, not "Objective 0"."""
    if study.metric_names != [METRIC_NAME]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAME])


def note_study(
    storage: optuna.storages.BaseStorage, config: StudyConfig, loss: str,
    entry: Mapping[str, Any] | None = None,
) -> None:  # fmt: skip
    """:func:`write_note` on ``<study>/<loss>`` where that Optuna study exists. An exported config
    scored without a search has none, and none is created for it: its scores of record are in
    ``final.json`` and the report."""
    try:
        study = optuna.load_study(study_name=config.study_name(loss), storage=storage)
    except KeyError:
        return
    write_note(study, config, loss, entry)
