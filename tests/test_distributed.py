"""Distributed studies on PostgreSQL and MariaDB: workers share one trial budget through the
database, the final stage scores the test set once there, and the database enforces it.

Needs the CI servers (``-m services``); every test skips when its server is unreachable. The
URLs can be pointed elsewhere with ``DMLOPT_TEST_POSTGRES`` and ``DMLOPT_TEST_MYSQL``.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
import yaml
from optuna.trial import TrialState

from dmlopt.study.runner import CONFIG_ATTR, OVER_BUDGET_ATTR
from dmlopt.study.storage import AlreadyScored, ScoreBook, test_scores
from tests.conftest import TINY_STUDY

pytestmark = pytest.mark.services

SECRET = "s3cret-pw"  # the servers use trust auth: a password in the URL is accepted, unused
SERVERS = {
    # PostgreSQL's trust authentication ignores the password, so its URL carries one: it must
    # never show up in outputs, files or the stored study.
    "postgresql": os.environ.get(
        "DMLOPT_TEST_POSTGRES", f"postgresql+psycopg2://postgres:{SECRET}@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get("DMLOPT_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
N_TRIALS = 4
WORKERS = 2
TIMEOUT = 600


def _engine(url: str) -> sa.Engine:
    timeout = {"connect_timeout": 5}
    return sa.create_engine(url, connect_args=timeout, poolclass=sa.pool.NullPool)


def _require(url: str) -> None:
    try:
        engine = _engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except (ImportError, sa.exc.SQLAlchemyError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        pytest.skip(f"database server unreachable: {reason}")


@pytest.fixture(params=list(SERVERS), scope="module")
def server(request: pytest.FixtureRequest) -> str:
    url = SERVERS[request.param]
    _require(url)
    return url


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DMLOPT_STORAGE", None)
    env["OMP_NUM_THREADS"] = "1"  # two workers on two cores: one thread each
    return env


def _dmlopt(*argv: object) -> list[str]:
    return [sys.executable, "-m", "dmlopt.cli", *(str(a) for a in argv)]


def _run(cwd: Path, *argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _dmlopt(*argv), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT
    )


def _start_workers(cwd: Path, study: Path, url: str, n: int) -> list[tuple[int, str, str]]:
    """``n`` ``dmlopt worker`` processes started together; ``(status, stdout, stderr)`` each."""
    procs = [
        subprocess.Popen(
            _dmlopt("worker", study, "--storage", url),
            cwd=cwd,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def _score_rows(url: str, study_name: str) -> list[Any]:
    engine = _engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(test_scores)
            .where(test_scores.c.study_name == study_name)
            .order_by(test_scores.c.attempt)
        ).all()
    engine.dispose()
    return list(rows)


def _forget(url: str, prefix: str) -> None:
    """Remove the studies and test scores a test created (the shared tables stay)."""
    for name in optuna.get_all_study_names(storage=url):
        if name.startswith(prefix):
            optuna.delete_study(study_name=name, storage=url)
    engine = _engine(url)
    with engine.begin() as conn:
        conn.execute(test_scores.delete().where(test_scores.c.study_name.startswith(prefix)))
    engine.dispose()


@pytest.fixture(scope="module")
def distributed(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two workers searched one study (n_trials 4) together on ``server``."""
    name = f"dist_{uuid.uuid4().hex[:10]}"
    root = tmp_path_factory.mktemp(name)
    data = copy.deepcopy(TINY_STUDY)
    data.update(study=name, storage=server, search={**data["search"], "n_trials": N_TRIALS})
    study = root / "study.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    # The shared tables are created up front: two workers creating them at once on an empty
    # database is a separate, known race (test_workers_on_an_empty_database below).
    optuna.storages.RDBStorage(server)
    ScoreBook(server).engine.dispose()
    try:
        workers = _start_workers(root, study, server, WORKERS)
        trials = optuna.load_study(study_name=f"{name}/contrastive", storage=server).trials
        yield {
            "url": server,
            "name": name,
            "root": root,
            "study": study,
            "workers": workers,
            "trials": trials,
        }
    finally:
        _forget(server, name)


def _finished(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def _over_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial that lost the race for the last place in the budget and stepped back."""
    return trial.state == TrialState.FAIL and bool(trial.system_attrs.get(OVER_BUDGET_ATTR))


def test_workers_succeed(distributed: dict[str, Any]) -> None:
    for status, _, err in distributed["workers"]:
        assert status == 0, err[-2000:]
        assert "Traceback" not in err
    failed = [t for t in distributed["trials"] if t.state == TrialState.FAIL]
    assert all(_over_budget(t) for t in failed)


def test_budget_is_shared_not_per_process(distributed: dict[str, Any]) -> None:
    """Per-process budgets would give 8 trials; the shared one is met exactly: a trial started
    past it steps back before it trains."""
    finished = _finished(distributed["trials"])
    assert len(finished) == N_TRIALS
    others = [t for t in distributed["trials"] if t not in finished]
    assert all(_over_budget(t) and not t.params for t in others)  # none left running


def test_final_scores_once_in_the_database(distributed: dict[str, Any], tmp_path: Path) -> None:
    url, name, root = distributed["url"], distributed["name"], distributed["root"]
    out = tmp_path / "out"
    result = _run(root, "final", distributed["study"], "--storage", url, "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _score_rows(url, f"{name}/contrastive")
    assert [r.attempt for r in rows] == [0]
    final = json.loads((out / "final.json").read_text())
    assert list(final) == ["contrastive"]
    assert final["contrastive"]["rescored"] is False
    assert json.loads(rows[0].result)["test"] == final["contrastive"]["test"]
    assert not (out / "study.db").exists()  # the server holds the study, not a local SQLite

    again = _run(root, "final", distributed["study"], "--storage", url, "--out", out)
    assert again.returncode == 2
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "already scored" in lines[0]
    assert "Traceback" not in again.stderr
    assert len(_score_rows(url, f"{name}/contrastive")) == 1

    for text in (result.stdout, result.stderr, again.stderr, (out / "final.json").read_text()):
        assert SECRET not in text


def test_no_password_in_outputs_or_stored_study(distributed: dict[str, Any]) -> None:
    url, name = distributed["url"], distributed["name"]
    for _, out, err in distributed["workers"]:
        assert SECRET not in out + err
    study = optuna.load_study(study_name=f"{name}/contrastive", storage=url)
    assert study.user_attrs[CONFIG_ATTR]["storage"] is None
    assert SECRET not in json.dumps(study.user_attrs)
    for trial in study.trials:
        assert SECRET not in json.dumps(trial.user_attrs) + json.dumps(trial.system_attrs)
    exported = _run(distributed["root"], "export", f"{name}/contrastive", "--storage", url)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert SECRET not in exported.stdout + exported.stderr
    assert "storage" not in yaml.safe_load(exported.stdout)


# --------------------------------------------------------------------------- score book
def test_score_book_unique_constraint(server: str) -> None:
    name = f"book_{uuid.uuid4().hex[:10]}/contrastive"
    book = ScoreBook(server)
    try:
        inspector = sa.inspect(book.engine)
        constraints = inspector.get_unique_constraints(test_scores.name)
        unique = {tuple(c["column_names"]) for c in constraints}
        unique |= {
            tuple(i["column_names"]) for i in inspector.get_indexes(test_scores.name) if i["unique"]
        }
        assert ("study_name", "attempt") in unique

        assert book.record(name, {"n": 1}, rescore=False) == 0
        with pytest.raises(AlreadyScored):
            book.record(name, {"n": 2}, rescore=False)
        assert [r.attempt for r in _score_rows(server, name)] == [0]

        row = _score_rows(server, name)[0]
        duplicate = {"study_name": name, "attempt": 0, "created_at": row.created_at, "result": "{}"}
        with pytest.raises(sa.exc.IntegrityError), book.engine.begin() as conn:
            conn.execute(test_scores.insert().values(**duplicate))
        assert len(_score_rows(server, name)) == 1

        assert book.record(name, {"n": 3}, rescore=True) == 1
        assert book.latest(name) == (1, {"n": 3})
    finally:
        with book.engine.begin() as conn:
            conn.execute(test_scores.delete().where(test_scores.c.study_name == name))
        book.engine.dispose()


# --------------------------------------------------------------------------- empty database
@pytest.fixture
def empty_database(server: str) -> Iterator[str]:
    """A new, empty database on ``server``, dropped afterwards."""
    url = sa.make_url(server)
    db = f"dmlopt_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {db}"))
    except sa.exc.SQLAlchemyError as e:
        admin.dispose()
        pytest.skip(f"cannot create a database: {str(getattr(e, 'orig', e)).splitlines()[0]}")
    try:
        yield url.set(database=db).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if url.get_backend_name() == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}{force}"))
        admin.dispose()


def test_workers_on_an_empty_database(empty_database: str, tmp_path: Path) -> None:
    """Workers of a new distributed study are typically launched together."""
    data = copy.deepcopy(TINY_STUDY)
    data.update(study="fresh", search={**data["search"], "n_trials": 1})
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    for status, _, err in _start_workers(tmp_path, study, empty_database, WORKERS):
        assert status == 0, err[-2000:]
