"""Failures a cluster sees daily, with real processes: a worker killed mid-trial, Ctrl-C and
SIGTERM, the database restarting under running workers. After each, the survivors (or the
next command) finish exactly ``search.n_trials`` trials and the final stage runs.

The kill and restart tests need PostgreSQL: the shared server (``DMLOPT_TEST_POSTGRES``) and a
private cluster of their own (``initdb`` in a temporary folder, on a free port), which they stop
and start; they skip where neither exists.
"""

from __future__ import annotations

import datetime
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
import yaml
from optuna.trial import TrialState

from dmlopt.study.liveness import STALE_ATTR
from dmlopt.study.runner import WORKER_ATTR
from tests.conftest import TINY_STUDY, deep_update
from tests.test_distributed import SERVERS, _forget, _require

TIMEOUT = 300
HEARTBEAT = 0.5  # seconds: a dead worker's trial is failed after 1.5 s
#: Trials of about four seconds on an idle core (900 steps of the tiny model), so that a signal
#: or a kill sent half a second into one lands in the middle of it. Shorter trials made these
#: tests flaky once the training loop got faster.
SLOW_TRIALS = {
    "training": {"iterations_per_epoch": 150, "max_epochs": 3, "patience": 3},
    "workers": {"heartbeat_seconds": HEARTBEAT},
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DMLOPT_STORAGE", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _dmlopt(*argv: object) -> list[str]:
    return [sys.executable, "-m", "dmlopt.cli", *(str(a) for a in argv)]


def _popen(cwd: Path, *argv: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _dmlopt(*argv),
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _write(path: Path, name: str, n_trials: int, changes: dict[str, Any] | None = None) -> Path:
    data = deep_update(TINY_STUDY, {**SLOW_TRIALS, "study": name})
    data = deep_update(data, {"search": {"n_trials": n_trials}, **(changes or {})})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _wait_for(what: str, condition: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except (KeyError, sa.exc.SQLAlchemyError):
            found = None
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _running_in(url: str, name: str, pids: set[int]) -> optuna.trial.FrozenTrial | None:
    """A trial running in one of ``pids`` for over a second: beating, its parameters all
    suggested, training under way. (A worker beats before the objective suggests; a kill in
    between leaves a trial with part of its parameters, whose retry rightly samples the rest.)"""
    for t in _trials(url, name):
        worker = t.system_attrs.get(WORKER_ATTR, {})
        beating = t.system_attrs.get("dmlopt_heartbeat")
        started = t.datetime_start or datetime.datetime.now()
        under_way = (datetime.datetime.now() - started).total_seconds() > 1.0
        if t.state == TrialState.RUNNING and worker.get("pid") in pids and beating and under_way:
            return t
    return None


def _states(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.strip().splitlines() if line.strip()]


# --------------------------------------------------------------------------- a killed worker
@pytest.fixture
def postgres() -> Iterator[str]:
    url = SERVERS["postgresql"]
    _require(url)
    prefixes: list[str] = []
    yield url
    for prefix in prefixes:
        _forget(url, prefix)


@pytest.mark.services
@pytest.mark.slow
def test_killed_worker_is_retried_by_survivors_and_final_runs(
    postgres: str, tmp_path: Path
) -> None:
    """Three workers, budget 6, one ``kill -9``ed mid-trial: the survivors fail its trial
    within the grace period, run its retry, finish exactly 6 trials, and the final stage runs."""
    name = f"kill_{uuid.uuid4().hex[:8]}"
    study = _write(tmp_path / "study.yaml", name, 6)
    loss = f"{name}/contrastive"
    try:
        procs = [
            _popen(tmp_path, "worker", study, "--storage", postgres, "--quiet") for _ in range(3)
        ]
        victim = _wait_for("a running trial", lambda: _running_in(postgres, loss, {procs[0].pid}))
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        for proc in procs[1:]:
            status, _, err = _finish(proc)
            assert status == 0, err[-3000:]
            assert "Traceback" not in err
        trials = _trials(postgres, loss)
        states = _states(trials)
        assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 6, states
        assert states.get("RUNNING", 0) == 0 and states.get("WAITING", 0) == 0, states
        dead = next(t for t in trials if t.number == victim.number)
        assert dead.state == TrialState.FAIL and dead.system_attrs.get(STALE_ATTR)
        retry = [t for t in trials if victim.number in t.system_attrs.get("retry_history", [])]
        assert [t.state for t in retry] == [TrialState.COMPLETE]
        assert retry[0].params == dead.params  # the same parameters, run again

        final = subprocess.run(
            _dmlopt("final", study, "--storage", postgres, "--out", tmp_path / "out"),
            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert final.returncode == 0, final.stderr[-3000:]
        assert (tmp_path / "out" / "final.json").is_file()
    finally:
        _forget(postgres, name)


@pytest.mark.services
@pytest.mark.slow
def test_a_paused_worker_taken_for_dead_moves_on(postgres: str, tmp_path: Path) -> None:
    """A worker stopped (SIGSTOP) mid-trial past the grace period: the other fails its trial and
    runs the retry; resumed (SIGCONT), the paused one says so in one line, goes on with the next
    trial and exits 0, and the study holds exactly its budget."""
    name = f"pause_{uuid.uuid4().hex[:8]}"
    study = _write(tmp_path / "study.yaml", name, 4)
    loss = f"{name}/contrastive"
    try:
        procs = [
            _popen(tmp_path, "worker", study, "--storage", postgres, "--quiet") for _ in range(2)
        ]
        victim = _wait_for("a running trial", lambda: _running_in(postgres, loss, {procs[0].pid}))
        os.kill(procs[0].pid, signal.SIGSTOP)
        try:
            _wait_for(
                "the paused worker's trial failed",
                lambda: _trials(postgres, loss)[victim.number].state == TrialState.FAIL,
            )
        finally:
            os.kill(procs[0].pid, signal.SIGCONT)
        outcomes = [_finish(proc) for proc in procs]
        for status, _, err in outcomes:
            assert status == 0 and "Traceback" not in err, err[-3000:]
        assert (
            f"warning: trial {victim.number} was failed by another worker that took this one "
            "for dead (no heartbeat); its retry is queued"
        ) in outcomes[0][2].splitlines()
        states = _states(_trials(postgres, loss))
        assert states.get("COMPLETE", 0) == 4 and states.get("RUNNING", 0) == 0, states
    finally:
        _forget(postgres, name)


@pytest.mark.services
@pytest.mark.slow
def test_the_next_command_finishes_a_study_whose_only_worker_died(
    postgres: str, tmp_path: Path
) -> None:
    name = f"next_{uuid.uuid4().hex[:8]}"
    study = _write(tmp_path / "study.yaml", name, 3)
    loss = f"{name}/contrastive"
    try:
        proc = _popen(tmp_path, "worker", study, "--storage", postgres, "--quiet")
        _wait_for("a running trial", lambda: _running_in(postgres, loss, {proc.pid}))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        run = subprocess.run(
            _dmlopt("run", study, "--storage", postgres, "--out", tmp_path / "out"),
            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        states = _states(_trials(postgres, loss))
        assert states.get("COMPLETE", 0) == 3 and states.get("FAIL") == 1, states
        assert (tmp_path / "out" / "final.json").is_file()
    finally:
        _forget(postgres, name)


# --------------------------------------------------------------------------- signals
@pytest.mark.slow
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_fails_the_trial_at_once_and_the_same_command_resumes(
    tmp_path: Path, signum: int, status: int
) -> None:
    study = _write(tmp_path / "study.yaml", "sig", 2)
    url = f"sqlite:///{tmp_path / 'runs' / 'sig' / 'study.db'}"
    loss = "sig/contrastive"
    proc = _popen(tmp_path, "worker", study, "--quiet")
    victim = _wait_for("a running trial", lambda: _running_in(url, loss, {proc.pid}))
    time.sleep(0.5)  # inside Lightning's training loop, which intercepts signals
    proc.send_signal(signum)
    code, _, err = _finish(proc)
    assert code == status, err[-3000:]
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: stopped by"), err[-3000:]
    # marked at once, not left RUNNING for a heartbeat to find
    stopped = next(t for t in _trials(url, loss) if t.number == victim.number)
    assert stopped.state == TrialState.FAIL

    again = subprocess.run(
        _dmlopt("worker", study, "--quiet"),
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    states = _states(_trials(url, loss))
    assert states.get("COMPLETE", 0) == 2 and states.get("RUNNING", 0) == 0, states


@pytest.mark.slow
def test_second_ctrl_c_exits_at_once(tmp_path: Path) -> None:
    study = _write(tmp_path / "study.yaml", "sig2", 2)
    url = f"sqlite:///{tmp_path / 'runs' / 'sig2' / 'study.db'}"
    proc = _popen(tmp_path, "worker", study, "--quiet")
    _wait_for("a running trial", lambda: _running_in(url, "sig2/contrastive", {proc.pid}))
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    code, _, err = _finish(proc)
    assert code == 130, err[-3000:]
    assert "Traceback" not in err


# --------------------------------------------------------------------------- the database
def _postgres_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """A PostgreSQL cluster of this test's own, which it may stop and start at will."""

    def __init__(self, root: Path) -> None:
        initdb, self.pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
        if initdb is None or self.pg_ctl is None:
            pytest.skip("PostgreSQL server binaries not found")
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        # initdb refuses to run as root: use the postgres account where there is one.
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.skip("running as root without runuser")
            self.prefix = ["runuser", "-u", "postgres", "--"]
            root.chmod(0o777)
        result = self._run(initdb, "-D", self.data, "-A", "trust", "-U", "postgres")
        if result.returncode:
            pytest.skip(f"initdb failed: {result.stderr.strip()[-300:]}")
        self.url = f"postgresql+psycopg2://postgres:pw@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *(str(a) for a in argv)], capture_output=True, text=True, timeout=120
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = self.root / "server.log"
        result = self._run(self.pg_ctl, "-D", self.data, "-o", options, "-l", log, "-w", "start")
        assert result.returncode == 0, result.stderr + result.stdout

    def stop(self) -> None:
        result = self._run(self.pg_ctl, "-D", self.data, "-m", "fast", "-w", "stop")
        assert result.returncode == 0, result.stderr + result.stdout


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    root = Path(f"/tmp/dmlopt-pg-{uuid.uuid4().hex[:8]}")
    root.mkdir()
    try:
        pg = PrivateCluster(root)
        pg.start()
        yield pg
        pg._run(pg.pg_ctl, "-D", pg.data, "-m", "immediate", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.services
@pytest.mark.slow
def test_workers_ride_out_a_database_restart(cluster: PrivateCluster, tmp_path: Path) -> None:
    """The server stops for a few seconds under two running workers: they retry, carry on when
    it is back, and the study finishes with exactly its budget."""
    study = _write(tmp_path / "study.yaml", "restart", 4)
    loss = "restart/contrastive"
    procs = [
        _popen(tmp_path, "worker", study, "--storage", cluster.url, "--quiet") for _ in range(2)
    ]
    _wait_for("a running trial", lambda: _running_in(cluster.url, loss, {p.pid for p in procs}))
    cluster.stop()
    time.sleep(5)
    cluster.start()
    for proc in procs:
        status, _, err = _finish(proc)
        assert status == 0, err[-3000:]
        assert "Traceback" not in err
    states = _states(_trials(cluster.url, loss))
    assert states.get("COMPLETE", 0) == 4 and states.get("RUNNING", 0) == 0, states


@pytest.mark.services
@pytest.mark.slow
def test_a_worker_gives_up_on_a_database_gone_for_good(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    study = _write(tmp_path / "study.yaml", "gone", 4, {"workers": {"storage_retry_seconds": 3}})
    proc = _popen(tmp_path, "worker", study, "--storage", cluster.url, "--quiet")
    _wait_for("a running trial", lambda: _running_in(cluster.url, "gone/contrastive", {proc.pid}))
    cluster.stop()
    status, _, err = _finish(proc)
    assert status == 2, err[-3000:]
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: lost storage"), err[-3000:]
    assert "pw" not in lines[0].split("***")[-1]
    cluster.start()  # nothing corrupt: the study opens, its finished trials intact
    trials = _trials(cluster.url, "gone/contrastive")
    assert all(t.state != TrialState.COMPLETE or t.value is not None for t in trials)
