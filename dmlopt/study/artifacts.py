"""Per-trial artifacts for optuna-dashboard: each fold's per-epoch validation curve (CSV, which
the dashboard previews as a table) and the trial's resolved config (JSON).

The store is a file-system :mod:`optuna.artifacts` store that every worker and the dashboard
find the same way: ``DMLOPT_ARTIFACTS`` if set, else an ``artifacts`` folder beside a SQLite
database. A server database without ``DMLOPT_ARTIFACTS`` has no artifacts (workers on several
machines would need a shared folder to agree on).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy.engine import make_url

ENV = "DMLOPT_ARTIFACTS"
FOLDER = "artifacts"


def artifact_dir(url: str | None) -> Path | None:
    """Where the artifacts of the storage at ``url`` live, or None."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    if url is None:
        return None
    try:
        parsed = make_url(url)
    except Exception:  # a malformed URL has no artifacts; opening the storage reports it
        return None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).resolve().parent / FOLDER
    return None


def _storage_url(trial: optuna.Trial) -> str | None:
    storage = trial.study._storage
    # Optuna wraps an RDB storage in a cache that keeps the real one as ``_backend``
    url = getattr(storage, "url", None) or getattr(getattr(storage, "_backend", None), "url", None)
    return url if isinstance(url, str) else None


class TrialArtifacts:
    """Collects a trial's per-epoch validation scores fold by fold and uploads them."""

    def __init__(self, trial: optuna.Trial, folder: Path | None) -> None:
        self.trial = trial
        self.store = None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self.store = optuna.artifacts.FileSystemArtifactStore(str(folder))
        self.curve: list[tuple[int, float]] = []

    @classmethod
    def start(cls, trial: optuna.Trial, config: Any, params: Mapping[str, Any]) -> TrialArtifacts:
        """Open the store of ``trial``'s storage and upload the resolved config."""
        artifacts = cls(trial, artifact_dir(_storage_url(trial)))
        public = config.model_copy(update={"storage": None}).model_dump(mode="json")
        artifacts._upload("config.json", json.dumps({"params": dict(params), "study": public},
                                                    indent=2))  # fmt: skip
        return artifacts

    def listener(self, then: Callable[[int, float], None] | None) -> Callable[[int, float], None]:
        """An epoch listener that records ``(epoch, val MAP@R)`` and calls ``then``."""
        self.curve = []

        def listen(epoch: int, score: float) -> None:
            self.curve.append((epoch, score))
            if then is not None:
                then(epoch, score)

        return listen

    def fold_done(self, fold: int) -> None:
        """Upload the curve of ``fold`` as ``fold<i>_val_curve.csv``."""
        rows = [("epoch", "val_map_at_r"), *((e + 1, f"{s:.6f}") for e, s in self.curve)]
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        self._upload(f"fold{fold}_val_curve.csv", text.getvalue())

    def _upload(self, name: str, body: str) -> None:
        if self.store is None:
            return
        # a full disk or a vanished share costs the artifact, never the trial
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / name
                path.write_text(body)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.artifacts.upload_artifact(
                        artifact_store=self.store, file_path=str(path), study_or_trial=self.trial
                    )
        except OSError as e:
            warnings.warn(f"artifact {name} not stored: {e}", stacklevel=2)
