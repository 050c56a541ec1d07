"""Distributed trial throughput: trials per second of 1, 2, 4, 8 and 16 workers on one storage.

Each worker is a process running dmlopt's own trial loop (shared budget, heartbeats, stale-trial
watch, retrying storage) with an objective that sleeps instead of training, so the figure is
what the storage and the loop allow, not what the CPU trains. Storages: PostgreSQL directly and
through ``dmlopt storage-proxy``. The baseline, measured in the same run, is one worker; the
per-trial storage overhead is one worker's seconds per trial with an objective that returns at
once. Prints one JSON line; the target is 8 workers at least 7x one.

    python benchmarks/workers_throughput.py [--storage postgresql://...] [--sleep 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import optuna

from dmlopt.config import parse_study
from dmlopt.search_space import suggest
from dmlopt.study.progress import Progress
from dmlopt.study.runner import TrialLoop, open_study
from dmlopt.study.storage import open_storage

WORKERS = (1, 2, 4, 8, 16)


def _config(name: str, n_trials: int) -> Any:
    return parse_study(
        {
            "study": name,
            "dataset": {"name": "synthetic"},
            "losses": ["contrastive"],
            "search": {"n_trials": n_trials, "sampler": "random", "pruner": "none"},
            "workers": {"heartbeat_seconds": 5},
        }
    )


def _worker(url: str, name: str, n_trials: int, sleep: float, start: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one "using an existing study" each
    config = _config(name, n_trials)
    storage = open_storage(url, patience=60)
    study = open_study(config, "contrastive", storage, seed=None)
    space = config.loss_space("contrastive")

    def objective(trial: optuna.Trial) -> float:
        suggest(space, trial)
        time.sleep(sleep)
        return random.random()

    start.wait()  # every worker connected: time the trials, not Python's start-up
    TrialLoop(
        config, "contrastive", None, [], study, Progress("", 1, enabled=False), objective
    ).run()


def trials_per_second(url: str, workers: int, n_trials: int, sleep: float) -> float:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(workers + 1)
    procs = [
        ctx.Process(target=_worker, args=(url, name, n_trials, sleep, start))
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    start.wait()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    storage = open_storage(url)
    study = optuna.load_study(study_name=f"{name}/contrastive", storage=storage)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == n_trials, len(trials)
    # From the first trial's start to the last one's end: trials, not process exits, count.
    first = min(t.datetime_start for t in trials if t.datetime_start is not None)
    last = max(t.datetime_complete for t in trials if t.datetime_complete is not None)
    elapsed = (last - first).total_seconds()
    optuna.delete_study(study_name=f"{name}/contrastive", storage=storage)
    print(f"{url.partition(':')[0]}: {workers} workers, {n_trials / elapsed:.2f} trials/s",
          file=sys.stderr)  # fmt: skip
    return n_trials / elapsed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--storage",
        default=os.environ.get(
            "DMLOPT_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds per trial")
    parser.add_argument("--per-worker", type=int, default=8, help="trials per worker")
    parser.add_argument("--no-proxy", action="store_true")
    parser.add_argument("--quick", action="store_true", help="3 trials per worker, no proxy")
    args = parser.parse_args()
    if args.quick:
        args.per_worker, args.no_proxy = 3, True
    open_storage(args.storage)  # tables created once, not raced by the first workers

    def sweep(url: str) -> dict[str, float]:
        return {str(n): trials_per_second(url, n, n * args.per_worker, args.sleep) for n in WORKERS}

    direct = sweep(args.storage)
    overhead = 1 / trials_per_second(args.storage, 1, 20, 0.0)
    result: dict[str, Any] = {
        "benchmark": "workers_throughput",
        "sleep_s": args.sleep,
        "postgresql_trials_per_s": direct,
        "baseline": "1 worker on PostgreSQL",
        "ratio_8_workers": direct["8"] / direct["1"],
        "target_ratio_8_workers": 7.0,
        "storage_overhead_s_per_trial": overhead,
    }
    if not args.no_proxy:
        port = _free_port()
        proxy = subprocess.Popen(
            [sys.executable, "-m", "dmlopt.cli", "storage-proxy", "--storage", args.storage,
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proxy.stdout is not None and "serving" in proxy.stdout.readline()
            proxied = sweep(f"grpc://127.0.0.1:{port}")
        finally:
            proxy.terminate()
            proxy.wait()
        result["proxy_trials_per_s"] = proxied
        result["proxy_ratio_8_workers"] = proxied["8"] / proxied["1"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
