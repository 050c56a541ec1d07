"""What keeps a search honest across sessions: same settings, finished before scoring,
resumed without repeats, and loss arithmetic in float32 under mixed precision."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml

from dmlopt.cli import main
from dmlopt.config import parse_study
from dmlopt.data import open_dataset
from dmlopt.errors import DmloptError
from dmlopt.study.fold import build_module
from dmlopt.study.storage import ScoreBook

from .conftest import TINY_STUDY, deep_update


def write(path: Path, changes: dict[str, Any] | None = None) -> Path:
    path.write_text(yaml.safe_dump(deep_update(copy.deepcopy(TINY_STUDY), changes or {})))
    return path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_a_changed_study_file_is_refused_and_nothing_is_trained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path / "a.yaml")), "--out", str(out), "--no-final"]) == 0
    db = (out / "study.db").read_bytes()
    changed = write(tmp_path / "b.yaml", {"training": {"max_epochs": 3}, "search": {"n_trials": 3}})
    for command in (["run", str(changed), "--no-final"], ["final", str(changed)]):
        capsys.readouterr()
        assert main([*command, "--out", str(out)]) == 2
        line = one_error_line(capsys)
        assert "differs from the one tiny/contrastive was searched with (in training)" in line
    assert (out / "study.db").read_bytes() == db


def test_a_larger_budget_resumes_without_repeating_trials(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path / "a.yaml")), "--out", str(out), "--no-final"]) == 0
    more = write(tmp_path / "b.yaml", {"search": {"n_trials": 4}, "final": {"runs": 3}})
    assert main(["run", str(more), "--out", str(out), "--no-final"]) == 0
    study = optuna.load_study(study_name="tiny/contrastive", storage=f"sqlite:///{out}/study.db")
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(params) == 4 and len(set(params)) == 4  # a re-seeded sampler would repeat 0 and 1


def test_final_refuses_an_unfinished_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path / "a.yaml")), "--out", str(out), "--no-final"]) == 0
    larger = write(tmp_path / "b.yaml", {"search": {"n_trials": 5}})
    capsys.readouterr()
    assert main(["final", str(larger), "--out", str(out)]) == 2
    assert "is not finished (2 of 5 trials, 0 running)" in one_error_line(capsys)
    assert not (out / "final.json").exists()


def test_a_final_stage_that_stopped_midway_can_be_completed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    study = write(tmp_path / "a.yaml", {"losses": ["contrastive", "triplet"]})
    assert main(["run", str(study), "--out", str(out), "--no-final"]) == 0
    first_only = write(tmp_path / "first.yaml", {"losses": ["contrastive"]})
    assert main(["final", str(first_only), "--out", str(out)]) == 0  # ... and then it stopped
    book = ScoreBook(f"sqlite:///{out}/study.db")
    first = book.latest("tiny/contrastive")
    assert main(["final", str(study), "--out", str(out)]) == 0
    assert book.latest("tiny/contrastive") == first  # not scored twice
    latest = book.latest("tiny/triplet")
    assert latest is not None and latest[0] == 0 and "test" in latest[1]
    capsys.readouterr()
    assert main(["final", str(study), "--out", str(out)]) == 2
    assert "already scored" in one_error_line(capsys)


def test_run_refuses_an_exported_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exported = {
        "exported_from": {"study": "x/c", "loss": "contrastive", "trial": 0, "val_map_at_r": 0.5},
        "losses": {"contrastive": {"loss": {"pos_margin": 0.1, "neg_margin": 0.9}}},
    }
    path = write(tmp_path / "best.yaml", exported)
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "exported best config: score it with dmlopt final" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without GPU")
def test_gpu_accelerator_without_a_gpu_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "a.yaml", {"training": {"accelerator": "gpu"}})
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "no GPU is available" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"training": {"eval_every": 3, "max_epochs": 2}}, "no validation would run"),
        ({"search": {"seed": -1}}, "search.seed"),
        ({"dataset": {"image_size": 8}}, "at least 16x16"),
    ],
)
def test_settings_that_cannot_run_are_refused_before_storage(
    changes: dict[str, Any], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "a.yaml", changes)
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert words in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("loss", ["arcface", "ntxent"])
def test_losses_compute_in_float32_under_bf16_autocast(loss: str) -> None:
    config = parse_study(deep_update(TINY_STUDY, {"losses": [loss]}))
    space = config.loss_space(loss)
    params = {name: (p if isinstance(p, (int, float)) else p.low) for name, p in space.items()}
    module = build_module(config, loss, params, open_dataset(config.dataset), num_classes=4)
    x = torch.randn(8, 1, 16, 16)
    y = torch.arange(4).repeat_interleave(2)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = module.compute_loss((x, y))
    assert value.dtype == torch.float32


def test_errors_are_dmlopt_errors() -> None:
    with pytest.raises(DmloptError):
        parse_study(deep_update(TINY_STUDY, {"search": {"seed": 2**32}}))
