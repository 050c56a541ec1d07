"""Every study file in studies/ runs end to end with a tiny budget, so none can rot.

The file is kept as written (trunk, losses, search spaces, optimizer) except: the dataset of an
image preset becomes a generated miniature folder of RGB images (no pretrained weights), the
synthetic one a smaller synthetic set, and the budget shrinks to two folds, one trial, one
short epoch per fold and batches of at most 32.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dmlopt.cli import main

from .conftest import deep_update

STUDIES = sorted(Path(__file__).resolve().parents[1].glob("studies/**/*.yaml"))
TINY_BUDGET: dict[str, Any] = {
    "split": {"folds": 2},  # the fold arithmetic is tested in test_splits; halves the cost here
    "training": {"iterations_per_epoch": 1, "max_epochs": 1, "eval_every": 1, "num_workers": 0},
    "search": {"n_trials": 1},
    "final": {"runs": 1},
    "storage": None,
}


def miniature_folder(root: Path, classes: int = 32, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        for k in range(per_class):
            path = root / f"{c:03d}.class" / f"{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return root


def shrink(study: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    dataset = study["dataset"]
    if dataset["name"] == "synthetic":
        dataset = {**dataset, "classes": 40, "per_class": 6}
    else:
        transform = {**dataset.get("transform", {}), "size": 32, "resize": 36}
        dataset = {"name": "folder", "root": str(miniature_folder(tmp_path / "images")),
                   "transform": transform}  # fmt: skip
    model = {**study.get("model", {}), "pretrained": None}
    training = study.get("training", {})
    batch = {"batch_size": min(training.get("batch_size", 32), 32)}  # part of the budget
    return deep_update(
        {**study, "dataset": dataset, "model": model, "training": {**training, **batch}},
        TINY_BUDGET,
    )


def test_every_study_file_is_found() -> None:
    names = {p.relative_to(p.parents[1]).as_posix() for p in STUDIES}
    assert {"studies/quickstart.yaml", "studies/reality_check_small.yaml"} <= names
    assert {"cub200", "cars196", "sop", "cub200_bs256"} <= {p.stem for p in STUDIES}


@pytest.mark.slow
@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_file_runs_end_to_end(path: Path, tmp_path: Path) -> None:
    study = shrink(yaml.safe_load(path.read_text()), tmp_path)
    small = tmp_path / path.name
    small.write_text(yaml.safe_dump(study, sort_keys=False))
    out = tmp_path / "out"
    assert main(["run", str(small), "--out", str(out)]) == 0
    final = yaml.safe_load((out / "final.json").read_text())  # JSON is YAML
    assert set(final) == set(yaml.safe_load(path.read_text())["losses"])
    for loss in final:
        assert (out / "best" / f"{loss}.yaml").is_file()
        assert 0.0 <= final[loss]["test"]["concatenated"]["map_at_r"]["mean"] <= 1.0


#: What the README's quickstart table was made with. Thread count, instruction set and the
#: versions of the libraries that train and sample change float rounding or the trials, so
#: elsewhere the same study prints other (equally valid) digits and the test skips, saying so.
README_TABLE_MADE_WITH = {
    "cpu": "AVX512",
    "torch": "2.13.0+cpu",
    "lightning": "2.6.6",
    "optuna": "5.0.0",
    "numpy": "2.4.6",
    "pytorch-metric-learning": "2.9.0",
    "faiss-cpu": "1.15.1",
}


def _this_machine() -> dict[str, str]:
    packages = {name: version(name) for name in README_TABLE_MADE_WITH if name != "cpu"}
    return {"cpu": torch.backends.cpu.get_cpu_capability(), **packages}


@pytest.mark.slow
def test_quickstart_prints_the_table_the_readme_shows(tmp_path: Path) -> None:
    """The README's quickstart output is what ``make quickstart`` prints, digit for digit (the
    README cuts the widest columns, ``...``): a change to what trains shows up here rather
    than as a stale README."""
    here = _this_machine()
    made = {k: v for k, v in README_TABLE_MADE_WITH.items() if here[k] != v}
    if made:
        differs = {k: here[k] for k in made}
        pytest.skip(f"the README's quickstart table was made with {made}, here: {differs}")
    root = Path(__file__).resolve().parents[1]
    block = (root / "README.md").read_text().split("```\nloss ", 1)[1].split("```", 1)[0]
    shown = [line.removesuffix("...").rstrip() for line in ("loss " + block).splitlines()]
    # As `make quickstart` runs on the 2-core CPU machine the table was made on.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMLOPT_")}
    env.update(OMP_NUM_THREADS="2", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run(
        [sys.executable, "-m", "dmlopt.cli", "run", "studies/quickstart.yaml", "--out", tmp_path],
        cwd=root, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    printed = run.stdout.splitlines()
    start = next(i for i, line in enumerate(printed) if line.startswith("loss "))
    table = [line for line in printed[start:] if line.strip("-")][: len(shown)]  # no rule, blank
    assert len(shown) == len(table) == 7
    for readme_line, line in zip(shown, table, strict=True):
        assert line.startswith(readme_line), (readme_line, line)
