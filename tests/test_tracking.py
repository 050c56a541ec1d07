"""MLflow tracking (``--mlflow``): a run per trial and per test scoring, in a local store.

MLflow is an optional extra, not installed by ``make test``: these tests skip without it,
except the one that checks the error a user gets when it is missing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from dmlopt.cli import main

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
needs_mlflow = pytest.mark.skipif(
    not HAS_MLFLOW, reason="MLflow is an optional extra: pip install 'dmlopt[mlflow]'"
)


@needs_mlflow
def test_trials_and_test_scores_become_mlflow_runs(
    write_study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    # MLflow 3 keeps the file store only on request; it is what needs no server.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    study = write_study({"search": {"n_trials": 2}, "final": {"runs": 1}})
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--mlflow", uri]) == 0

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"tiny/contrastive trial 0", "tiny/contrastive trial 1",
                         "tiny/contrastive final"}  # fmt: skip
    trial = runs["tiny/contrastive trial 1"]
    assert set(trial.data.params) == {"loss.pos_margin", "loss.neg_margin"}
    folds = client.get_metric_history(trial.info.run_id, "fold_val_map_at_r")
    assert [m.step for m in folds] == [0, 1]
    mean = sum(m.value for m in folds) / 2
    assert trial.data.metrics["val_map_at_r"] == pytest.approx(mean)

    final = json.loads((out / "final.json").read_text())["contrastive"]
    scored = runs["tiny/contrastive final"].data
    concat = final["test"]["concatenated"]["map_at_r"]["mean"]
    assert scored.metrics["test.concatenated.map_at_r"] == pytest.approx(concat)
    assert scored.tags["dmlopt.provenance.torch"] == final["provenance"]["torch"]
    assert scored.tags["dmlopt.fingerprints.test"] == final["fingerprints"]["test"]


@pytest.mark.skipif(HAS_MLFLOW, reason="checks the error when MLflow is not installed")
def test_mlflow_without_the_extra_is_a_one_line_error_storing_nothing(
    write_study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["run", str(write_study()), "--out", str(out), "--mlflow", "file:///x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --mlflow needs MLflow") and err.count("\n") == 1
    assert not out.exists()
