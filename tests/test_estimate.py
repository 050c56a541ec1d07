"""``dmlopt check --estimate``: worst-case fold trainings from the study file, timed iterations
of its real model on its real data, wall time for one and for N workers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dmlopt.cli import main
from dmlopt.config import parse_study
from dmlopt.study.estimate import Estimate, duration, worst_case
from tests.conftest import TINY_STUDY


def run_check(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def estimate_lines(out: str) -> dict[str, str]:
    lines = [line for line in out.splitlines() if line.startswith("# ")]
    return {
        key: next(line for line in lines if line.startswith(f"# {key}"))
        for key in ("estimate", "per fold", "measured", "estimated wall time")
    }


@pytest.mark.parametrize(("n_trials", "runs", "losses"), [(2, 2, ["contrastive"]), (5, 3, None)])
def test_estimate_counts_the_worst_case_of_the_study_file(
    n_trials: int,
    runs: int,
    losses: list[str] | None,
    write_study,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    losses = losses or ["contrastive", "triplet"]
    study = write_study(
        {"search": {"n_trials": n_trials}, "final": {"runs": runs}, "losses": losses,
         "training": {"max_epochs": 4, "eval_every": 2, "iterations_per_epoch": 3}}
    )  # fmt: skip
    rc, out, err = run_check(capsys, "check", study, "--estimate", "--workers", 3)
    assert rc == 0, err
    lines = estimate_lines(out)
    folds = TINY_STUDY["split"]["folds"]
    search, final = n_trials * folds * len(losses), runs * folds * len(losses)
    assert f"search {search} fold trainings" in lines["estimate"]
    assert f"final {final} ({runs} runs" in lines["estimate"]
    # 4 epochs x 3 iterations, a validation every 2 epochs over the val classes' 4 x 8 samples
    assert "12 iterations (4 epochs x 3), 2 validations of 32 images" in lines["per fold"]
    per_iteration = float(re.search(r"([\d.]+) s per iteration", lines["measured"]).group(1))
    assert per_iteration > 0
    assert "1 worker " in lines["estimated wall time"]
    assert "3 workers " in lines["estimated wall time"]
    assert not (tmp_path / "runs").exists()


def test_without_estimate_nothing_is_timed(
    write_study,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = run_check(capsys, "check", write_study())
    assert rc == 0, err
    assert "# estimate" not in out and "per iteration" not in out


def test_workers_share_the_search_not_the_final_stage() -> None:
    e = Estimate(
        losses=1, search_fold_trainings=40, final_fold_trainings=8, iterations_per_fold=100,
        validations_per_fold=2, val_images=50, seconds_per_iteration=0.5,
        seconds_per_val_image=0.01,
    )  # fmt: skip
    assert e.seconds_per_fold == pytest.approx(100 * 0.5 + 2 * 50 * 0.01)
    assert e.wall_seconds(1) == pytest.approx(48 * 51)
    assert e.wall_seconds(4) == pytest.approx((10 + 8) * 51)


def test_worst_case_of_a_paper_preset() -> None:
    config = parse_study(
        {"study": "p", "dataset": {"name": "synthetic"}, "split": {"folds": 4},
         "losses": ["contrastive", "triplet"],
         "training": {"max_epochs": 1000, "iterations_per_epoch": 100, "eval_every": 2},
         "search": {"n_trials": 50}, "final": {"runs": 10}}
    )  # fmt: skip
    assert worst_case(config, 4) == (400, 80, 100_000, 500)


def test_bad_worker_count_is_refused(
    write_study,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", str(write_study()), "--estimate", "--workers", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("seconds", "text"), [(42, "42 s"), (300, "5.0 min"), (7 * 3600, "7.0 h"), (3e6, "34.7 days")]
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text
