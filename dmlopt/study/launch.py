"""``dmlopt run --workers N``: N local worker processes on one storage, one progress display.

Each worker is a ``dmlopt worker`` process of its own (a crash or a kill takes one worker, not
the run). With several GPUs, worker ``i`` sees only device ``i mod len(devices)`` through
``CUDA_VISIBLE_DEVICES``; the devices are those the parent sees (its own
``CUDA_VISIBLE_DEVICES`` if set, else every device torch finds). Ctrl-C and SIGTERM are passed
on to every worker once; each marks its trial failed and exits, and the run exits with them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import optuna

from dmlopt.config import StudyConfig
from dmlopt.errors import DmloptError
from dmlopt.study.progress import FINISHED, Progress
from dmlopt.study.runner import trial_budget
from dmlopt.study.signals import Stopped

POLL_SECONDS = 1.0


def visible_devices(env: Mapping[str, str], accelerator: str) -> list[str]:
    """The GPUs to share out: the parent's ``CUDA_VISIBLE_DEVICES``, else all torch sees."""
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    if accelerator == "cpu":
        return []
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_env(index: int, devices: Sequence[str], env: Mapping[str, str]) -> dict[str, str]:
    """The environment of worker ``index``: pinned to one device when there are devices."""
    out = dict(env)
    if devices:
        out["CUDA_VISIBLE_DEVICES"] = devices[index % len(devices)]
    return out


def run_workers(
    config: StudyConfig,
    study_file: Path,
    url: str,
    out: Path,
    n: int,
    storage: object,
    *,
    mlflow: str | None = None,
) -> None:
    """Start ``n`` workers, show their common progress until all exit; a failed worker is an
    error once the others are done. ``mlflow`` is passed on to each worker (``--mlflow``)."""
    assert isinstance(storage, optuna.storages.BaseStorage)
    devices = visible_devices(os.environ, config.training.accelerator)
    command = [sys.executable, "-m", "dmlopt.cli", "worker", str(study_file)]
    command += ["--storage", url, "--out", str(out), "--quiet"]
    command += ["--mlflow", mlflow] if mlflow else []
    procs = [
        # A session of its own: a terminal's Ctrl-C reaches the parent only, which passes it
        # on exactly once (a second signal would make a worker exit without marking its trial).
        subprocess.Popen(command, env=worker_env(i, devices, os.environ), start_new_session=True)
        for i in range(n)
    ]
    bars = {loss: Progress(loss, trial_budget(config, loss)) for loss in config.losses}
    try:
        while any(p.poll() is None for p in procs):
            for loss, bar in bars.items():
                bar.sync(_finished(storage, config.study_name(loss)))
            time.sleep(POLL_SECONDS)
        for loss, bar in bars.items():
            bar.sync(_finished(storage, config.study_name(loss)))
    except Stopped as stop:
        for p in procs:
            if p.poll() is None:
                p.send_signal(stop.signum)
        for p in procs:
            p.wait()
        raise
    finally:
        for bar in bars.values():
            bar.close()
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        statuses = ", ".join(f"worker {i} exited {code}" for i, code in failed)
        raise DmloptError(f"{statuses}: rerun the same command to resume")


def _finished(storage: optuna.storages.BaseStorage, name: str) -> int:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False, states=FINISHED))


__all__ = ["run_workers", "visible_devices", "worker_env"]
