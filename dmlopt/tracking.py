"""Experiment trackers, optional: MLflow runs for the trials of a search and for test scores.

``--mlflow URI`` (``run``, ``worker``, ``final``) logs each finished trial as an MLflow run (its
parameters, mean val MAP@R, each fold's best val MAP@R at step = fold index, epochs trained, its
state) and each test scoring as one more run (the test metrics, the chosen parameters, the
provenance as tags), in the experiment named after the study. MLflow is an optional extra
(``pip install 'dmlopt[mlflow]'``), imported only here and only when asked for, through its
client API so that dmlopt never changes MLflow's global state (active run, tracking URI).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dmlopt.errors import DmloptError

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def _flat(prefix: str, values: Mapping[str, Any]) -> dict[str, str]:
    """Nested values as MLflow tags (strings, dotted keys)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flat(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


class MlflowTracker:
    """Runs in the MLflow experiment ``experiment`` at ``tracking_uri``."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise DmloptError(
                "--mlflow needs MLflow, an optional extra: pip install 'dmlopt[mlflow]'"
            ) from None
        self.client = MlflowClient(tracking_uri=tracking_uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (
                found.experiment_id if found else self.client.create_experiment(experiment)
            )
        except Exception as e:  # an unreachable server or unusable store: before any work
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DmloptError(f"cannot open MLflow tracking at {tracking_uri}: {reason}") from None

    def _run(
        self,
        name: str,
        params: Mapping[str, Any],
        metrics: list[tuple[str, float, int]],
        tags: Mapping[str, str],
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags))
        now = int(time.time() * 1000)
        self.client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), now, step) for k, v, step in metrics],
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        self.client.set_terminated(run.info.run_id)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """An Optuna callback: one run per finished trial."""
        metrics: list[tuple[str, float, int]] = []
        if trial.value is not None:
            metrics.append(("val_map_at_r", trial.value, 0))
        attrs = trial.user_attrs
        metrics += [("fold_val_map_at_r", s, i) for i, s in enumerate(attrs.get("fold_scores", []))]
        metrics += [("fold_epochs", e, i) for i, e in enumerate(attrs.get("epochs_trained", []))]
        if "val_map_at_r_std" in attrs:
            metrics.append(("val_map_at_r_std", attrs["val_map_at_r_std"], 0))
        tags = {
            "dmlopt.study": study.study_name,
            "dmlopt.trial": str(trial.number),
            "dmlopt.state": trial.state.name,
        }
        self._run(f"{study.study_name} trial {trial.number}", trial.params, metrics, tags)

    def log_final(self, study_name: str, entry: Mapping[str, Any]) -> None:
        """One run for a test scoring (a ``final.json`` entry)."""
        metrics = [
            (f"test.{kind}.{metric}", summary["mean"], 0)
            for kind, scores in entry["test"].items()
            for metric, summary in scores.items()
        ]
        metrics.append(("val_map_at_r", entry["val_map_at_r"], 0))
        tags = {"dmlopt.study": study_name, "dmlopt.stage": "final"}
        tags.update(_flat("dmlopt.provenance", entry.get("provenance") or {}))
        tags.update(_flat("dmlopt.fingerprints", entry.get("fingerprints") or {}))
        self._run(f"{study_name} final", entry.get("params", {}), metrics, tags)
