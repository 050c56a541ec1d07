"""Shared fixtures: tiny studies that train in seconds on a CPU."""

from __future__ import annotations

import contextlib
import copy
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

#: A study small enough to search and score in seconds: 16 classes (8 train/val, 8 test),
#: 2 folds of 4 train / 4 val classes, 2-epoch folds of 3 iterations.
TINY_STUDY: dict[str, Any] = {
    "study": "tiny",
    "dataset": {"name": "synthetic", "classes": 16, "per_class": 8, "image_size": 16, "seed": 0},
    "split": {"test": "paper", "folds": 2},
    "model": {"trunk": "small_cnn", "embedding_dim": 16},
    "losses": ["contrastive"],
    "training": {
        "batch_size": 8,
        "m_per_class": 2,
        "iterations_per_epoch": 3,
        "max_epochs": 2,
        "eval_every": 1,
        "patience": 2,
        "eval_batch_size": 64,
    },
    "search": {"n_trials": 2, "sampler": "tpe", "pruner": "none", "seed": 0},
    "final": {"runs": 2},
}


def deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: tiny models train many times faster than with threads fighting other
    processes for the CPUs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_env_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DMLOPT_STORAGE", raising=False)


@pytest.fixture
def tiny_study() -> dict[str, Any]:
    """A fresh copy of :data:`TINY_STUDY` to modify."""
    return copy.deepcopy(TINY_STUDY)


@pytest.fixture
def write_study(tmp_path: Path):
    """``write_study(changes=None, name="study.yaml") -> Path``: TINY_STUDY changed, on disk."""

    def write(changes: dict[str, Any] | None = None, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(deep_update(TINY_STUDY, changes or {}), sort_keys=False))
        return path

    return write


#: The losses of the :func:`stored` study, and those scored on its test set.
LOSSES = ["contrastive", "multi_similarity", "triplet"]
SCORED = ["contrastive", "triplet"]


@pytest.fixture(scope="session")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny study with three losses, all searched; contrastive and triplet scored on the
    test set, multi_similarity not."""
    import torch

    from dmlopt.cli import main

    root = tmp_path_factory.mktemp("report")
    out = root / "out"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train faster without threads fighting for the CPUs
    try:
        for losses, final in ((SCORED, True), (["multi_similarity"], False)):
            path = root / f"{losses[0]}.yaml"
            path.write_text(yaml.safe_dump(deep_update(TINY_STUDY, {"losses": losses})))
            extra = [] if final else ["--no-final"]
            assert main(["run", str(path), "--out", str(out), *extra]) == 0
    finally:
        torch.set_num_threads(before)
    return {"out": out, "url": f"sqlite:///{out / 'study.db'}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_dashboard(*args: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """``dmlopt dashboard *args`` on a free port, until the block ends; yields (port, process)
    once it answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "dmlopt.cli", "dashboard", *args, "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/meta", timeout=2):
                    break
            except OSError:
                if server.poll() is not None:
                    raise AssertionError(f"dashboard exited: {server.communicate()[1]}") from None
                assert time.monotonic() < deadline, "dashboard did not start"
                time.sleep(0.5)
        yield port, server
    finally:
        server.terminate()
        server.wait(timeout=10)
