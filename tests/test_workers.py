"""``dmlopt run --workers N`` and ``dmlopt storage-proxy``, with real processes on PostgreSQL."""

from __future__ import annotations

import signal
import socket
import subprocess
import uuid
from pathlib import Path

import optuna
import pytest

from dmlopt.study.launch import visible_devices, worker_env
from dmlopt.study.runner import WORKER_ATTR
from tests.test_distributed import SERVERS, _forget, _require
from tests.test_failures import (
    TIMEOUT,
    _dmlopt,
    _env,
    _finish,
    _popen,
    _running_in,
    _states,
    _trials,
    _wait_for,
    _write,
)

PARAMS = [
    {"loss.pos_margin": 0.1, "loss.neg_margin": 0.9},
    {"loss.pos_margin": 0.3, "loss.neg_margin": 1.2},
    {"loss.pos_margin": 0.0, "loss.neg_margin": 0.5},
]


@pytest.fixture
def postgres() -> str:
    url = SERVERS["postgresql"]
    _require(url)
    return url


def test_sqlite_is_refused_for_several_workers(tmp_path: Path, write_study) -> None:
    result = subprocess.run(
        _dmlopt("run", write_study(), "--workers", "2"),
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: SQLite cannot serve several worker processes")
    assert "postgresql://" in result.stderr and "grpc://" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_each_worker_sees_one_device() -> None:
    devices = visible_devices({"CUDA_VISIBLE_DEVICES": "3, 5"}, "auto")
    assert devices == ["3", "5"]
    pinned = [worker_env(i, devices, {"PATH": "/bin"})["CUDA_VISIBLE_DEVICES"] for i in range(3)]
    assert pinned == ["3", "5", "3"]
    assert "CUDA_VISIBLE_DEVICES" not in worker_env(0, visible_devices({}, "cpu"), {})


def _enqueue(url: str, name: str) -> None:
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    for params in PARAMS:
        study.enqueue_trial(params)


@pytest.mark.services
@pytest.mark.slow
def test_three_workers_score_like_one_and_the_final_stage_runs_once(
    postgres: str, tmp_path: Path
) -> None:
    """The same enqueued parameters give the same fold scores with 1 and with 3 workers; the
    workers are pinned to the (fake) devices; the final stage runs once, after all of them."""
    one, three = f"one_{uuid.uuid4().hex[:8]}", f"three_{uuid.uuid4().hex[:8]}"
    changes = {"training": {"accelerator": "cpu"}}
    try:
        scores = {}
        for name, workers in ((one, 1), (three, 3)):
            study = _write(tmp_path / f"{name}.yaml", name, len(PARAMS), changes)
            _enqueue(postgres, f"{name}/contrastive")
            env = {**_env(), "CUDA_VISIBLE_DEVICES": "3,5"}
            result = subprocess.run(
                _dmlopt("run", study, "--workers", workers, "--storage", postgres,
                        "--out", tmp_path / name),
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr[-3000:]
            trials = _trials(postgres, f"{name}/contrastive")
            assert _states(trials) == {"COMPLETE": len(PARAMS)}
            scores[workers] = {
                tuple(sorted(t.params.items())): t.user_attrs["fold_scores"] for t in trials
            }
            devices = {t.system_attrs[WORKER_ATTR]["cuda_visible_devices"] for t in trials}
            if workers == 3:
                assert devices <= {"3", "5"}, devices
                assert len({t.system_attrs[WORKER_ATTR]["pid"] for t in trials}) >= 2
                assert (tmp_path / name / "final.json").is_file()
                assert result.stdout.count("results:") == 1
        assert scores[1] == scores[3]
    finally:
        _forget(postgres, one)
        _forget(postgres, three)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.services
@pytest.mark.slow
def test_dead_worker_recovery_through_the_storage_proxy(postgres: str, tmp_path: Path) -> None:
    """Workers on ``grpc://`` through ``dmlopt storage-proxy``: one is killed mid-trial, the
    other fails its trial (dmlopt's heartbeat works through any storage) and finishes."""
    pytest.importorskip("grpc")
    name = f"proxy_{uuid.uuid4().hex[:8]}"
    port = _free_port()
    proxy = _popen(tmp_path, "storage-proxy", "--storage", postgres, "--port", port,
                   "--host", "127.0.0.1")  # fmt: skip
    try:
        assert proxy.stdout is not None
        assert "serving" in proxy.stdout.readline()
        grpc_url = f"grpc://127.0.0.1:{port}"
        study = _write(tmp_path / "study.yaml", name, 3)
        loss = f"{name}/contrastive"
        procs = [_popen(tmp_path, "worker", study, "--storage", grpc_url, "--quiet") for _ in "ab"]
        victim = _wait_for("a running trial", lambda: _running_in(postgres, loss, {procs[0].pid}))
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        status, _, err = _finish(procs[1])
        assert status == 0, err[-3000:]
        trials = _trials(postgres, loss)
        assert _states(trials).get("COMPLETE") == 3, _states(trials)
        dead = next(t for t in trials if t.number == victim.number)
        assert dead.state.name == "FAIL"
    finally:
        proxy.send_signal(signal.SIGINT)
        code, _, err = _finish(proxy)
        assert code == 130, err[-2000:]
        _forget(postgres, name)


def _running_pids(url: str, name: str) -> set[int]:
    return {
        t.system_attrs[WORKER_ATTR]["pid"]
        for t in _trials(url, name)
        if t.state.name == "RUNNING" and t.system_attrs.get("dmlopt_heartbeat")
    }


@pytest.mark.services
@pytest.mark.slow
def test_ctrl_c_reaches_every_worker_and_the_same_command_resumes(
    postgres: str, tmp_path: Path
) -> None:
    name = f"fwd_{uuid.uuid4().hex[:8]}"
    study = _write(tmp_path / "study.yaml", name, 4)
    loss = f"{name}/contrastive"
    argv = ("run", study, "--workers", 2, "--storage", postgres, "--out", tmp_path / "out")
    try:
        parent = _popen(tmp_path, *argv)
        _wait_for("two workers training", lambda: len(_running_pids(postgres, loss)) == 2)
        parent.send_signal(signal.SIGINT)
        code, _, err = _finish(parent)
        assert code == 130, err[-3000:]
        assert err.rstrip().splitlines()[-1].startswith("error: stopped by SIGINT")
        assert "Traceback" not in err
        states = _states(_trials(postgres, loss))
        assert states.get("FAIL", 0) >= 2 and "RUNNING" not in states, states
        assert not (tmp_path / "out" / "final.json").exists()

        again = subprocess.run(
            _dmlopt(*argv), cwd=tmp_path, env=_env(), capture_output=True, text=True,
            timeout=TIMEOUT,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        assert _states(_trials(postgres, loss)).get("COMPLETE") == 4
        assert (tmp_path / "out" / "final.json").is_file()
    finally:
        _forget(postgres, name)
