"""What a storage holds: per study and loss, trial states, best val MAP@R, how the test set was
scored. Quick to gather (no importances, no dataset), for ``dmlopt studies``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from dmlopt.report.collect import count_trials
from dmlopt.study.runner import CONFIG_ATTR
from dmlopt.study.storage import ScoreBook


@dataclass(frozen=True)
class StudyLine:
    """One ``<study>/<loss>`` of a storage."""

    study: str
    loss: str
    complete: int
    pruned: int
    failed: int
    running: int
    best_val_map_at_r: float | None
    test: str  # "not scored", "first scoring", "rescore (2nd scoring)", "reproduction of ..."

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scoring(book: ScoreBook, name: str) -> str:
    latest = book.latest(name)
    if latest is None:
        return "not scored"
    attempt, entry = latest
    source = entry.get("reproduction_of")
    if source:
        return f"reproduction of {source.get('study')} trial {source.get('trial')}"
    return "first scoring" if attempt == 0 else f"rescore ({attempt + 1} scorings)"


def inventory(storage: optuna.storages.BaseStorage, book: ScoreBook) -> list[StudyLine]:
    """Every dmlopt ``<study>/<loss>`` in the storage (searched or only scored), sorted."""
    summaries = {
        s.study_name: s
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        if CONFIG_ATTR in s.user_attrs and "/" in s.study_name
    }
    lines = []
    for name in sorted(set(summaries) | set(book.study_names())):
        study, _, loss = name.partition("/")
        best: float | None = None
        trials: list[optuna.trial.FrozenTrial] = []
        if name in summaries:
            trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
            values = [t.value for t in trials if t.state == TrialState.COMPLETE]
            best = max((v for v in values if v is not None), default=None)
        counts = count_trials(trials)
        lines.append(
            StudyLine(
                study, loss, counts.complete, counts.pruned, counts.failed, counts.running,
                best, _scoring(book, name),
            )
        )  # fmt: skip
    return lines


def format_inventory(lines: list[StudyLine]) -> str:
    """A plain table, one line per study and loss."""
    header = ["study", "loss", "complete", "pruned", "failed", "running", "best val MAP@R", "test"]
    rows = [
        [x.study, x.loss, str(x.complete), str(x.pruned), str(x.failed), str(x.running),
         "-" if x.best_val_map_at_r is None else f"{x.best_val_map_at_r:.4f}", x.test]
        for x in lines
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, 1, 7) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])
