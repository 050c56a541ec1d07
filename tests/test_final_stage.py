"""The final stage end to end on the tiny study: outputs, final.json, scoring once, rescoring,
export and reproduction without a search, passwords kept out, and the summary statistics."""

from __future__ import annotations

import copy
import json
import math
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import sqlalchemy as sa
import yaml
from scipy import stats

from dmlopt.cli import main
from dmlopt.config import load_study
from dmlopt.search_space import Range
from dmlopt.study.final import summarize
from dmlopt.study.runner import CONFIG_ATTR
from dmlopt.study.storage import AlreadyScored, ScoreBook, redact, test_scores
from tests.conftest import TINY_STUDY

LOSSES = ["contrastive", "multi_similarity"]
METRICS = {"map_at_r", "r_precision", "precision_at_1"}
ENTRY_KEYS = {"val_map_at_r", "runs", "rescored", "test"}  # the final.json contract
#: beyond the contract, written by FinalStage.run (see the report).
EXTRA_ENTRY_KEYS = {
    "untrained",
    "params",
    "val_map_at_r_std",
    "seeds",
    "reproduction_of",
    "fingerprints",
    "diverged",
    "examples",
    "provenance",
    "kept",
}


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def score_rows(db: Path) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(sqlite_url(db))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(test_scores).order_by(test_scores.c.id)).all()
    finally:
        engine.dispose()
    return [tuple(r) for r in rows]


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, contains: str) -> None:
    assert rc == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert contains in lines[0], lines[0]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The tiny study with two losses, searched and scored once by ``dmlopt run --out``."""
    root = tmp_path_factory.mktemp("final")
    data = {**copy.deepcopy(TINY_STUDY), "losses": LOSSES}
    study = root / "study.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    out = root / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DMLOPT_STORAGE", raising=False)
        mp.chdir(root)
        assert main(["run", str(study), "--out", str(out)]) == 0
    yield {"root": root, "study": study, "out": out, "db": out / "study.db"}


# --------------------------------------------------------------------------- dmlopt run
def test_run_writes_database_best_configs_and_final_json(scored: dict[str, Any]) -> None:
    out = scored["out"]
    assert (out / "study.db").is_file()
    assert (out / "final.json").is_file()
    for loss in LOSSES:
        assert load_study(out / "best" / f"{loss}.yaml").exported_from is not None
    storage = sqlite_url(scored["db"])
    assert sorted(optuna.get_all_study_names(storage)) == sorted(f"tiny/{x}" for x in LOSSES)
    for loss in LOSSES:
        trials = optuna.load_study(study_name=f"tiny/{loss}", storage=storage).trials
        assert len(trials) == TINY_STUDY["search"]["n_trials"]


def _check_metric_block(block: Any, runs: int) -> None:
    """M of the final.json contract: at least the three retrieval metrics; secondary metrics
    (Recall@K, NMI, AMI) may sit beside them with the same shape."""
    assert isinstance(block, dict) and set(block) >= METRICS, sorted(block)
    for metric, summary in block.items():
        assert set(summary) == {"mean", "ci95", "values"}, metric
        assert isinstance(summary["mean"], float)
        assert isinstance(summary["ci95"], list) and len(summary["ci95"]) == 2
        low, high = summary["ci95"]
        assert isinstance(low, float) and isinstance(high, float)
        assert low <= summary["mean"] <= high, metric
        values = summary["values"]
        assert isinstance(values, list) and len(values) == runs
        assert all(isinstance(v, float) and math.isfinite(v) for v in values)
        if metric in METRICS:
            assert all(0.0 <= v <= 1.0 for v in values), (metric, values)
        assert summary["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)


def test_final_json_matches_the_contract(scored: dict[str, Any]) -> None:
    final = json.loads((scored["out"] / "final.json").read_text())
    assert set(final) == set(LOSSES)
    runs = TINY_STUDY["final"]["runs"]
    storage = sqlite_url(scored["db"])
    for loss, entry in final.items():
        assert set(entry) >= ENTRY_KEYS, loss
        assert set(entry) - ENTRY_KEYS <= EXTRA_ENTRY_KEYS, set(entry) - ENTRY_KEYS
        assert isinstance(entry["val_map_at_r"], float)
        best = optuna.load_study(study_name=f"tiny/{loss}", storage=storage).best_value
        assert entry["val_map_at_r"] == best
        best_trial = optuna.load_study(study_name=f"tiny/{loss}", storage=storage).best_trial
        assert entry["val_map_at_r_std"] == best_trial.user_attrs["val_map_at_r_std"]
        assert isinstance(entry["runs"], int) and not isinstance(entry["runs"], bool)
        assert entry["runs"] == runs
        folds = TINY_STUDY["split"]["folds"]
        assert len(entry["seeds"]) == runs and all(len(s) == folds for s in entry["seeds"])
        assert len({seed for run in entry["seeds"] for seed in run}) == runs * folds
        assert entry["rescored"] is False
        assert set(entry["test"]) == {"separated", "concatenated"}
        for kind in ("separated", "concatenated"):
            _check_metric_block(entry["test"][kind], runs)
        if "untrained" in entry:
            for kind in ("separated", "concatenated"):
                _check_metric_block(entry["untrained"][kind], runs)


def test_one_score_row_per_loss(scored: dict[str, Any]) -> None:
    rows = score_rows(scored["db"])
    assert sorted((r[1], r[2]) for r in rows) == sorted((f"tiny/{x}", 0) for x in LOSSES)
    final = json.loads((scored["out"] / "final.json").read_text())
    for row in rows:
        stored = json.loads(row[4])
        loss = row[1].split("/", 1)[1]
        assert stored["test"] == final[loss]["test"]


def test_second_final_refuses_and_changes_nothing(
    scored: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    final_json = (scored["out"] / "final.json").read_bytes()
    rows = score_rows(scored["db"])
    rc, _, err = cli(capsys, "final", scored["study"], "--out", scored["out"])
    assert_one_line_error(rc, err, "already scored")
    assert (scored["out"] / "final.json").read_bytes() == final_json
    assert score_rows(scored["db"]) == rows


def test_rescore_adds_attempt_1_and_is_marked(
    scored: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(scored["out"], out)  # leave the module's run for the other tests
    rc, _, err = cli(capsys, "final", scored["study"], "--out", out, "--rescore")
    assert rc == 0, err
    rows = score_rows(out / "study.db")
    assert sorted((r[1], r[2]) for r in rows) == sorted(
        (f"tiny/{x}", a) for x in LOSSES for a in (0, 1)
    )
    final = json.loads((out / "final.json").read_text())
    assert set(final) == set(LOSSES)
    assert all(entry["rescored"] is True for entry in final.values())
    # The same seeds retrain the same models: the rescore reproduces the first scoring.
    first = json.loads((scored["out"] / "final.json").read_text())
    for loss in LOSSES:
        for kind in ("separated", "concatenated"):
            for metric in final[loss]["test"][kind]:
                np.testing.assert_allclose(
                    final[loss]["test"][kind][metric]["values"],
                    first[loss]["test"][kind][metric]["values"],
                    atol=1e-6,
                )
    # A rescore does not open the door for an unmarked third scoring.
    rc, _, err = cli(capsys, "final", scored["study"], "--out", out)
    assert_one_line_error(rc, err, "already scored")
    assert len(score_rows(out / "study.db")) == 2 * len(LOSSES)


def test_unique_constraint_is_in_the_database(scored: dict[str, Any], tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    shutil.copy(scored["db"], db)
    engine = sa.create_engine(sqlite_url(db))
    constraints = sa.inspect(engine).get_unique_constraints("dmlopt_test_scores")
    assert {tuple(c["column_names"]) for c in constraints} == {("study_name", "attempt")}
    rows = score_rows(db)

    book = ScoreBook(sqlite_url(db))
    with pytest.raises(AlreadyScored):
        book.record("tiny/contrastive", {"x": 1}, rescore=False)
    assert score_rows(db) == rows
    # Past dmlopt's own code: a raw duplicate insert is refused by the database itself.
    duplicate = {
        "study_name": "tiny/contrastive",
        "attempt": 0,
        "created_at": rows[0][3],
        "result": "{}",
    }
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(test_scores.insert().values(**duplicate))
    assert score_rows(db) == rows
    # An unscored study is attempt 0, an explicit rescore the next attempt.
    assert book.record("tiny/other", {"x": 1}, rescore=False) == 0
    assert book.record("tiny/contrastive", {"x": 2}, rescore=True) == 1
    assert book.latest("tiny/contrastive") == (1, {"x": 2})
    engine.dispose()
    book.engine.dispose()


# --------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def exported(scored: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "best.yaml"
    assert main(["export", "tiny/contrastive", "--out", str(scored["out"]), "-o", str(path)]) == 0
    return path


def test_export_is_a_runnable_study_file_with_every_parameter_fixed(
    scored: dict[str, Any], exported: Path
) -> None:
    config = load_study(exported)
    raw = yaml.safe_load(exported.read_text())
    assert "storage" not in raw
    assert config.storage is None
    assert list(config.losses) == ["contrastive"]
    space = config.loss_space("contrastive")
    assert set(space) == {"loss.pos_margin", "loss.neg_margin"}
    assert not any(isinstance(v, Range) for v in space.values()), space

    study = optuna.load_study(study_name="tiny/contrastive", storage=sqlite_url(scored["db"]))
    best = study.best_trial
    assert config.exported_from is not None
    assert config.exported_from.study == "tiny/contrastive"
    assert config.exported_from.loss == "contrastive"
    assert config.exported_from.trial == best.number
    assert config.exported_from.val_map_at_r == best.value
    assert space == best.params
    # Everything shared by the comparison is kept as it was.
    original = load_study(scored["study"])
    for section in ("dataset", "split", "model", "training", "search", "final"):
        assert getattr(config, section) == getattr(original, section), section
    # The run wrote the same export beside its results.
    assert load_study(scored["out"] / "best" / "contrastive.yaml") == config


def test_final_on_export_reproduces_without_search(
    scored: dict[str, Any], exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out2"
    rc, table, err = cli(capsys, "final", exported, "--out", out)
    assert rc == 0, err
    storage = sqlite_url(out / "study.db")
    assert optuna.get_all_study_names(storage) == []  # no search, not even an empty study
    final = json.loads((out / "final.json").read_text())
    original = json.loads((scored["out"] / "final.json").read_text())["contrastive"]
    assert list(final) == ["contrastive"]
    entry = final["contrastive"]
    assert entry["val_map_at_r"] == original["val_map_at_r"]
    assert entry["rescored"] is False
    # ... but it is a reproduction, never the scoring of record, wherever it is shown.
    best = optuna.load_study(study_name="tiny/contrastive", storage=sqlite_url(scored["db"]))
    assert entry["reproduction_of"] == {
        "study": "tiny/contrastive",
        "trial": best.best_trial.number,
    }
    assert original["reproduction_of"] is None
    assert "contrastiveR" in table
    assert f"reproduction of tiny/contrastive trial {best.best_trial.number}" in table
    # The same data, so the same fingerprints as the scoring of record.
    assert entry["fingerprints"] == original["fingerprints"]
    for kind in ("separated", "concatenated"):
        assert set(entry["test"][kind]) == set(original["test"][kind])
        for metric in entry["test"][kind]:
            np.testing.assert_allclose(
                entry["test"][kind][metric]["values"],
                original["test"][kind][metric]["values"],
                atol=1e-6,
            )
    rows = score_rows(out / "study.db")
    assert [(r[1], r[2]) for r in rows] == [("tiny-contrastive-best/contrastive", 0)]
    # An exported config is scored once too.
    rc, _, err = cli(capsys, "final", exported, "--out", out)
    assert_one_line_error(rc, err, "already scored")


# --------------------------------------------------------------------------- passwords
def test_redact_masks_passwords() -> None:
    url = "postgresql+psycopg2://alice:hunter2-secret@db.example.org:5432/studies"
    shown = redact(url)
    assert "hunter2-secret" not in shown
    assert shown == "postgresql+psycopg2://alice:***@db.example.org:5432/studies"
    assert redact("sqlite:///runs/x/study.db") == "sqlite:///runs/x/study.db"
    assert "hunter2" not in redact("not a url with hunter2")


def test_stored_config_and_export_carry_no_storage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The study file names its storage; neither the stored study nor its export keeps it.

    SQLite URLs cannot carry a password, so the URL is checked for being absent as a whole.
    """
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "elsewhere" / "studies.db"
    url = sqlite_url(db)
    data = {
        **copy.deepcopy(TINY_STUDY),
        "study": "pw",
        "storage": url,
        "search": {**TINY_STUDY["search"], "n_trials": 1},
        "final": {"runs": 1},
    }
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "run", study, "--out", out)
    assert rc == 0, err
    assert db.is_file() and not (out / "study.db").exists()  # the file's storage was used

    stored = optuna.load_study(study_name="pw/contrastive", storage=url).user_attrs[CONFIG_ATTR]
    assert stored["storage"] is None
    assert str(db) not in json.dumps(stored)

    rc, exported, err = cli(capsys, "export", "pw/contrastive", "--storage", url)
    assert rc == 0, err
    assert "storage" not in yaml.safe_load(exported)
    for path in out.rglob("*"):  # kept embeddings and models included
        if path.is_file():
            assert str(db).encode() not in path.read_bytes(), path

    # One rerun: no spread, so the interval is the mean itself.
    final = json.loads((out / "final.json").read_text())["contrastive"]
    for kind in ("separated", "concatenated"):
        for summary in final["test"][kind].values():
            assert summary["ci95"] == [summary["mean"], summary["mean"]]
            assert summary["values"] == [summary["mean"]]


# --------------------------------------------------------------------------- summarize
@pytest.mark.parametrize(
    "values",
    [[0.1, 0.4, 0.35, 0.2], [0.25, 0.5], [0.61, 0.62, 0.6, 0.64, 0.59, 0.63, 0.6, 0.58, 0.6]],
)
def test_summarize_matches_student_t(values: list[float]) -> None:
    n = len(values)
    mean = float(np.mean(values))
    half = stats.t.ppf(0.975, df=n - 1) * np.std(values, ddof=1) / math.sqrt(n)
    summary = summarize(values)
    assert summary["mean"] == pytest.approx(mean, abs=1e-12)
    assert summary["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-12)
    assert summary["values"] == values


def test_summarize_two_runs_known_value() -> None:
    # t(0.975, 1) = 12.7062...; std of (0, 1) is 1/sqrt(2), so half-width = 12.7062 / 2.
    summary = summarize([0.0, 1.0])
    assert summary["ci95"] == pytest.approx([0.5 - 6.35310, 0.5 + 6.35310], abs=1e-4)


def test_summarize_single_and_constant_values() -> None:
    assert summarize([0.42]) == {"mean": 0.42, "ci95": [0.42, 0.42], "values": [0.42]}
    constant = summarize([0.3, 0.3, 0.3])
    assert constant["mean"] == pytest.approx(0.3)
    assert constant["ci95"] == pytest.approx([0.3, 0.3])
