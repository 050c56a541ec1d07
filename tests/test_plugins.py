"""Bring your own method: user losses, trunks and datasets by import path and by entry point,
errors a user can act on, code identity in the integrity check, provenance, kept models.

The example plugin ``examples/own_loss`` is put on ``sys.path`` (or ``PYTHONPATH`` for real
processes) rather than pip-installed; its entry points are registered by a temporary
``.dist-info`` folder on the path, which is what an installed package amounts to for
``importlib.metadata``.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml

import dmlopt
from dmlopt import plugins
from dmlopt.cli import main
from dmlopt.config import load_study
from dmlopt.data import open_dataset
from dmlopt.data.splits import paper_split
from dmlopt.kept import embed
from dmlopt.provenance import environment, git_state
from tests.conftest import TINY_STUDY, deep_update

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "own_loss"
EXAMPLE_SRC = EXAMPLE / "src"
PROXY_MARGIN = {
    "class": "own_loss.losses:ProxyMarginLoss",
    "needs": ["num_classes", "embedding_size"],
    "space": {
        "loss": {"margin": {"low": 0.0, "high": 0.5}, "scale": {"low": 4.0, "high": 64.0}},
        "loss_optimizer": {"lr": {"low": 1.0e-4, "high": 1.0, "log": True}},
    },
}
#: a small loss module of the test's own, to be edited between runs
USER_LOSS = """
import torch
from torch import nn


class Loss(nn.Module):
    def __init__(self, margin: float = 0.5) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, embeddings, labels, indices_tuple=None):
        e = torch.nn.functional.normalize(embeddings, dim=1)
        same = (labels[:, None] == labels[None, :]).float()
        d = torch.cdist(e, e)
        return (same * d + (1 - same) * torch.relu(self.margin - d)).mean()
"""


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def own_loss(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The example plugin importable by import path (not installed)."""
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    yield
    plugins.refresh()


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example plugin as if pip-installed: its package and a ``.dist-info`` with its entry
    points on the path. Yields the folder that holds the ``.dist-info``."""
    site = tmp_path / "site"
    info = site / "own_loss-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: own-loss\nVersion: 0.1.0\n")
    (info / "top_level.txt").write_text("own_loss\n")
    (info / "entry_points.txt").write_text(
        "[dmlopt.losses]\nproxy_margin = own_loss.specs:PROXY_MARGIN\n\n"
        "[dmlopt.trunks]\ntiny_mlp = own_loss.nets:tiny_mlp\n\n"
        "[dmlopt.datasets]\nblobs = own_loss.data:BlobsDataset\n"
    )
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    monkeypatch.syspath_prepend(str(site))
    plugins.refresh()
    yield site
    plugins.refresh()


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``edited_loss.py`` (:data:`USER_LOSS`) in a folder on the path, never cached in
    ``sys.modules`` across tests."""
    folder = tmp_path / "code"
    folder.mkdir()
    path = folder / "edited_loss.py"
    path.write_text(USER_LOSS)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("edited_loss", None)
    yield path
    sys.modules.pop("edited_loss", None)


def study(tmp_path: Path, changes: dict[str, Any], name: str = "study.yaml") -> Path:
    data = deep_update(copy.deepcopy(TINY_STUDY), changes)
    for key, value in changes.items():  # replace, not merge, what the test sets as a whole
        if key in ("losses", "dataset"):
            data[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, contains: str) -> str:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in err
    assert contains in lines[0], (contains, lines[0])
    return lines[0]


def process_env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DMLOPT_STORAGE", None)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    return env


QUICK = (1, 1)  # (n_trials, final.runs): the least that exercises search and final stage


def quick(changes: dict[str, Any]) -> dict[str, Any]:
    return deep_update({"search": {"n_trials": QUICK[0]}, "final": {"runs": QUICK[1]}}, changes)


# --------------------------------------------------------------------------- the worked example
@pytest.mark.slow
def test_own_loss_against_three_builtin_losses_end_to_end(
    own_loss: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/own_loss/compare.yaml, shrunk: searched, scored, tabled, reported, exported,
    reproduced, its kept models reloading to the same test embeddings bit for bit."""
    data = yaml.safe_load((EXAMPLE / "compare.yaml").read_text())
    assert list(data["losses"]) == ["proxy_margin", "contrastive", "triplet", "multi_similarity"]
    for key in ("dataset", "split", "training", "search"):
        data[key] = copy.deepcopy(TINY_STUDY[key])
    data["model"]["embedding_dim"] = 16
    data["final"] = {"runs": 2, "keep": "models"}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "out"

    rc, stdout, err = cli(capsys, "run", path, "--out", out)
    assert rc == 0, err
    table = stdout.splitlines()
    assert [line.split()[0] for line in table[2:7]] == [
        "(untrained)", "proxy_margin", "contrastive", "triplet", "multi_similarity",
    ]  # fmt: skip
    results = json.loads((out / "final.json").read_text())
    assert list(results) == list(data["losses"])
    entry = results["proxy_margin"]
    assert set(entry["params"]) == {"loss.margin", "loss.scale", "loss_optimizer.lr"}
    code = entry["provenance"]["code"]["loss proxy_margin"]
    assert code["import_path"] == "own_loss.losses:ProxyMarginLoss"
    assert "code" in results["contrastive"]["provenance"]
    assert results["contrastive"]["provenance"]["code"] == {}  # dmlopt's own code only
    assert "proxy_margin" in (out / "report.html").read_text()

    # the export runs on its own: a reproduction of the searched trial
    best = out / "best" / "proxy_margin.yaml"
    exported = load_study(best)
    assert exported.losses["proxy_margin"].loss_class == PROXY_MARGIN["class"]  # type: ignore[union-attr]
    assert exported.exported_from is not None and exported.exported_from.provenance is not None
    assert exported.exported_from.provenance["code"]["loss proxy_margin"] == code
    rc, _, err = cli(capsys, "final", best, "--out", tmp_path / "repro")
    assert rc == 0, err
    repro = json.loads((tmp_path / "repro" / "final.json").read_text())["proxy_margin"]
    assert repro["reproduction_of"] == {
        "study": "own_loss/proxy_margin",
        "trial": exported.exported_from.trial,
    }
    assert repro["params"] == entry["params"]

    # kept models reproduce their test embeddings bit for bit
    config = load_study(path)
    dataset = open_dataset(config.dataset)
    test = dataset.view(paper_split(dataset.num_classes)[1], train=False)
    for loss in data["losses"]:
        kept = out / "kept" / loss
        np.testing.assert_array_equal(np.load(kept / "labels.npy"), test.labels)
        for model_file in sorted(kept.glob("run*/fold*.pt")):
            model = dmlopt.load_model(model_file)
            again = embed(model, test, config.training.eval_batch_size)
            kept_embeddings = np.load(model_file.with_suffix(".npy"))
            assert again.dtype == kept_embeddings.dtype == np.float32
            assert np.array_equal(again, kept_embeddings), model_file


def test_a_user_loss_is_searched_scored_and_exported_like_a_builtin_one(
    own_loss: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The space the study file gives is what the search samples, ``needs`` what the class
    receives: the proxies are sized to the fold's classes and the embedding size."""
    path = study(tmp_path, quick({"losses": {"mine": PROXY_MARGIN}}))
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "run", path, "--out", out)
    assert rc == 0, err
    trial = optuna.load_study(study_name="tiny/mine", storage=f"sqlite:///{out}/study.db").trials[0]
    assert set(trial.params) == {"loss.margin", "loss.scale", "loss_optimizer.lr"}
    assert 0.0 <= trial.params["loss.margin"] <= 0.5
    assert 4.0 <= trial.params["loss.scale"] <= 64.0
    assert trial.distributions["loss_optimizer.lr"].log  # the space's scale is what is sampled
    assert not trial.distributions["loss.scale"].log
    config = load_study(path)
    from dmlopt.study.fold import build_module

    dataset = open_dataset(config.dataset)
    module = build_module(config, "mine", {**trial.params}, dataset, num_classes=3)
    assert tuple(module.loss_fn.proxies.shape) == (3, config.model.embedding_dim)
    assert module.loss_lr == trial.params["loss_optimizer.lr"]


# --------------------------------------------------------------------------- final.keep
@pytest.mark.parametrize("keep", ["models", "embeddings", "none"])
def test_final_keep_decides_what_is_kept(
    keep: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = study(tmp_path, quick({"final": {"keep": keep}}))
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "run", path, "--out", out)
    assert rc == 0, err
    kept = out / "kept" / "contrastive"
    files = sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file())
    embeddings = ["labels.npy", "run0/fold0.npy", "run0/fold1.npy"]
    expected = {
        "models": sorted([*embeddings, "run0/fold0.pt", "run0/fold1.pt"]),
        "embeddings": embeddings,
        "none": [],
    }[keep]
    assert files == expected
    entry = json.loads((out / "final.json").read_text())["contrastive"]
    assert entry["kept"] == (None if keep == "none" else "kept/contrastive")
    if keep == "models":  # the model reloads to the scored embeddings, bit for bit
        model = dmlopt.load_model(kept / "run0" / "fold1.pt")
        assert model.checkpoint["run"] == 0 and model.checkpoint["fold"] == 1
        assert model.checkpoint["seed"] == entry["seeds"][0][1]
        dataset = open_dataset(model.config.dataset)
        test = dataset.view(paper_split(dataset.num_classes)[1], train=False)
        again = embed(model, test, model.config.training.eval_batch_size)
        assert np.array_equal(again, np.load(kept / "run0" / "fold1.npy"))


def test_embed_command_embeds_a_study_or_a_folder_with_a_kept_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c in range(16):
        (root / f"c{c:02d}").mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (16, 16), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / f"c{c:02d}" / f"{i}.png")
    dataset = {"name": "folder", "root": str(root), "transform": {"size": 16, "channels": 1}}
    path = study(tmp_path, quick({"dataset": dataset, "final": {"keep": "models"}}))
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "run", path, "--out", out)
    assert rc == 0, err
    model_file = out / "kept" / "contrastive" / "run0" / "fold0.pt"

    rc, _, err = cli(capsys, "embed", model_file, "--data", path, "-o", tmp_path / "all.npy")
    assert rc == 0, err
    everything = np.load(tmp_path / "all.npy")
    assert everything.shape == (64, 16)
    np.testing.assert_array_equal(np.load(tmp_path / "all.labels.npy"), np.repeat(range(16), 4))
    # the test half of the classes, embedded again, is what the final stage kept
    kept = np.load(model_file.with_suffix(".npy"))
    assert np.array_equal(everything[32:], kept)

    rc, _, err = cli(
        capsys, "embed", model_file, "--data", root / "c10", "-o", tmp_path / "c10.npy"
    )
    assert rc == 0, err
    files = (tmp_path / "c10.files.txt").read_text().splitlines()
    assert [Path(f).name for f in files] == ["0.png", "1.png", "2.png", "3.png"]
    assert np.array_equal(np.load(tmp_path / "c10.npy"), everything[40:44])

    rc, _, err = cli(capsys, "embed", tmp_path / "no.pt", "--data", path, "-o", tmp_path / "x.npy")
    one_line_error(rc, err, "cannot read model")


def test_import_dmlopt_stays_light() -> None:
    code = "import sys, dmlopt; assert 'torch' not in sys.modules; print(dmlopt.load_model)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=process_env()
    )
    assert result.returncode == 0, result.stderr
    assert "load_model" in result.stdout


# --------------------------------------------------------------------------- errors
def _not_a_module(folder: Path) -> dict[str, Any]:
    (folder / "plain_class.py").write_text("class Loss:\n    def __init__(self): pass\n")
    return {"losses": {"mine": {"class": "plain_class:Loss"}}}


def _bad_forward(folder: Path) -> dict[str, Any]:
    (folder / "bad_forward.py").write_text(
        "from torch import nn\n\nclass Loss(nn.Module):\n"
        "    def forward(self, embeddings):\n        return embeddings.sum()\n"
    )
    return {"losses": {"mine": {"class": "bad_forward:Loss"}}}


def _broken_module(folder: Path) -> dict[str, Any]:
    (folder / "broken_loss.py").write_text("import torch\ndef broken(:\n")
    return {"losses": {"mine": {"class": "broken_loss:Loss"}}}


def _raising_module(folder: Path) -> dict[str, Any]:
    (folder / "raising_loss.py").write_text("raise RuntimeError('needs a GPU driver')\n")
    return {"losses": {"mine": {"class": "raising_loss:Loss"}}}


def _not_a_dataset(folder: Path) -> dict[str, Any]:
    (folder / "plain_data.py").write_text("class Data:\n    pass\n")
    return {"dataset": {"name": "plain_data:Data"}}


#: name -> (study changes, or a function of a folder on sys.path making them; error words)
ERRORS: dict[str, tuple[Any, str]] = {
    "module_missing": (
        {"losses": {"mine": {"class": "no_such_module_xyz:Loss"}}},
        "loss mine: cannot import module 'no_such_module_xyz' (ModuleNotFoundError",
    ),
    "module_broken": (_broken_module, "cannot import module 'broken_loss' (SyntaxError"),
    "module_raises": (_raising_module, "(RuntimeError: needs a GPU driver)"),
    "attribute_missing": (
        {"losses": {"mine": {**PROXY_MARGIN, "class": "own_loss.losses:NoSuchLoss"}}},
        "module 'own_loss.losses' has no attribute 'NoSuchLoss'",
    ),
    "not_a_module": (_not_a_module, "plain_class:Loss): not a torch.nn.Module class"),
    "wrong_forward": (
        _bad_forward,
        "forward must take (embeddings, labels, indices_tuple) as pytorch-metric-learning's "
        "losses do; too many positional arguments (it takes: self, embeddings)",
    ),
    "space_argument_missing": (
        {"losses": {"mine": deep_update(PROXY_MARGIN, {"space": {"loss": {"margn": 0.1}}})}},
        "got an unexpected keyword argument 'margn' (it takes: num_classes, embedding_size, "
        "margin, scale)",
    ),
    "need_missing": (
        {"losses": {"mine": {**PROXY_MARGIN, "needs": ["num_classes"]}}},
        "missing a required argument: 'embedding_size'",
    ),
    "bad_space_group": (
        {"losses": {"mine": {**PROXY_MARGIN, "space": {"miner": {"x": 1}}}}},
        "losses.mine: space: expected groups loss, loss_optimizer",
    ),
    "bad_range": (
        {"losses": {"mine": {**PROXY_MARGIN, "space": {"loss": {"margin": {"low": 1}}}}}},
        "space.loss.margin: a range is {low, high, log, int}",
    ),
    "builtin_name": (
        {"losses": {"triplet": PROXY_MARGIN}},
        "a loss of your own needs a name of its own ('triplet' is registered)",
    ),
    "unknown_need": (
        {"losses": {"mine": {**PROXY_MARGIN, "needs": ["classes"]}}},
        "losses.mine.needs.0: Input should be 'num_classes' or 'embedding_size'",
    ),
    "unknown_dataset": (
        {"dataset": {"name": "imagenet", "root": "x"}},
        "dataset.name: unknown dataset 'imagenet' (known: synthetic, folder, npz, cub200, "
        "cars196, sop, oml_csv; or a dataset class of your own as 'module:Class')",
    ),
    "dataset_not_metric_dataset": (
        _not_a_dataset,
        "dataset plain_data:Data: not a subclass of dmlopt.data.base.MetricDataset",
    ),
    "dataset_option_unknown": (
        {"dataset": {"name": "own_loss.data:BlobsDataset", "clases": 16}},
        "got an unexpected keyword argument 'clases' (it takes: classes, per_class, dim, noise",
    ),
    "trunk_missing": (
        {"model": {"trunk": "own_loss.nets:wide_mlp"}},
        "model.trunk own_loss.nets:wide_mlp: module 'own_loss.nets' has no attribute",
    ),
    "unknown_trunk": ({"model": {"trunk": "tiny"}}, "unknown trunk 'tiny' (known: small_cnn"),
}


@pytest.mark.parametrize("command", ["check", "run", "worker", "final"])
@pytest.mark.parametrize("case", list(ERRORS))
def test_user_code_errors_are_one_line_and_store_nothing(
    case: str,
    command: str,
    own_loss: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "code"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(tmp_path)
    changes, words = ERRORS[case]
    path = study(tmp_path, changes(folder) if callable(changes) else changes)
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, command, path, "--out", out)
    one_line_error(rc, err, words)
    assert stdout == ""
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_check_of_a_study_with_user_code_does_not_import_lightning(tmp_path: Path) -> None:
    path = study(tmp_path, {"losses": {"mine": PROXY_MARGIN}})
    code = (
        f"import sys\nfrom dmlopt.cli import main\nassert main(['check', {str(path)!r}]) == 0\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'torchmetrics')]\n"
        "assert not heavy, heavy[:5]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=process_env(EXAMPLE_SRC)
    )
    assert result.returncode == 0, result.stderr
    assert "# mine: loss.margin [0, 0.5] lin" in result.stdout


def test_user_code_error_in_a_real_process(tmp_path: Path) -> None:
    path = study(tmp_path, {"losses": {"mine": {"class": "own_loss.losses:NoSuchLoss"}}})
    result = subprocess.run(
        [sys.executable, "-m", "dmlopt.cli", "run", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=process_env(EXAMPLE_SRC),
        cwd=tmp_path,
    )
    one_line_error(result.returncode, result.stderr, "has no attribute 'NoSuchLoss'")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- code identity
def test_resuming_with_edited_loss_code_is_refused(
    user_module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = study(tmp_path, quick({"losses": {"mine": {"class": "edited_loss:Loss"}}}))
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "run", path, "--out", out, "--no-final")
    assert rc == 0, err
    db = (out / "study.db").read_bytes()

    user_module.write_text(USER_LOSS.replace("torch.relu", "torch.nn.functional.relu"))
    more = study(tmp_path, quick({"losses": {"mine": {"class": "edited_loss:Loss"}},
                                  "search": {"n_trials": 2}}), name="more.yaml")  # fmt: skip
    for command in (["run", more, "--no-final"], ["worker", more], ["final", path]):
        rc, _, err = cli(capsys, *command, "--out", out)
        line = one_line_error(rc, err, "the code differs from the one tiny/mine was searched with")
        assert "loss mine edited_loss:Loss (sha256 " in line
    assert (out / "study.db").read_bytes() == db  # nothing trained, nothing scored

    user_module.write_text(USER_LOSS)  # the same source again: accepted
    rc, _, err = cli(capsys, "final", path, "--out", out)
    assert rc == 0, err
    entry = json.loads((out / "final.json").read_text())["mine"]
    assert entry["provenance"]["code"]["loss mine"]["import_path"] == "edited_loss:Loss"
    from dmlopt.report.collect import collect
    from dmlopt.study.storage import ScoreBook

    url = f"sqlite:///{out}/study.db"
    collected = collect(optuna.storages.RDBStorage(url), ScoreBook(url, create=False), "tiny")
    test = collected["tiny"]["mine"].test
    assert test is not None and test["provenance"] == entry["provenance"]  # the report's data


def test_scoring_an_export_with_edited_code_is_refused(
    user_module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = study(tmp_path, quick({"losses": {"mine": {"class": "edited_loss:Loss"}}}))
    out = tmp_path / "out"
    assert cli(capsys, "run", path, "--out", out, "--no-final")[0] == 0
    best = out / "best" / "mine.yaml"
    user_module.write_text(USER_LOSS + "\n# tuned\n")
    rc, _, err = cli(capsys, "final", best, "--out", tmp_path / "repro")
    one_line_error(rc, err, "the code differs from the one tiny/mine was searched with")
    assert not (tmp_path / "repro").exists()


def test_code_identity_names_the_distribution_of_an_installed_plugin(
    installed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dmlopt.user_code import identities

    changes = {
        "losses": ["proxy_margin", "contrastive"],
        "model": {"trunk": "tiny_mlp"},
        "dataset": {"name": "blobs", "classes": 16, "per_class": 8, "dim": 8},
    }
    config = load_study(study(tmp_path, changes))
    found = identities(config)
    assert set(found) == {"loss proxy_margin (entry point)", "loss proxy_margin", "trunk",
                          "dataset"}  # fmt: skip
    assert found["loss proxy_margin"]["import_path"] == "own_loss.losses:ProxyMarginLoss"
    assert found["trunk"]["import_path"] == "own_loss.nets:tiny_mlp"
    assert found["dataset"]["import_path"] == "own_loss.data:BlobsDataset"
    assert all(f["distribution"] == "own-loss 0.1.0" for f in found.values())
    assert identities(config, "contrastive").keys() == {"trunk", "dataset"}


# --------------------------------------------------------------------------- entry points
def test_installed_plugins_are_listed_and_run_by_name(
    installed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = cli(capsys, "losses", "proxy_m*")
    assert rc == 0, err
    assert out.splitlines()[0] == (
        "proxy_margin  (own_loss.losses:ProxyMarginLoss): proxies with an additive cosine "
        "margin (example plugin) [installed: own-loss 0.1.0]"
    )
    assert "loss_optimizer.lr" in out

    changes = quick(
        {
            "losses": {"proxy_margin": {"loss": {"scale": 16.0}}, "contrastive": {}},
            "model": {"trunk": "tiny_mlp"},
            "dataset": {"name": "blobs", "classes": 16, "per_class": 8, "dim": 8},
        }
    )
    path = study(tmp_path, changes)
    rc, out, err = cli(capsys, "check", path)
    assert rc == 0, err
    assert "# model: tiny_mlp + linear -> 16-d" in out
    assert "# proxy_margin: loss.margin [0, 0.5] lin, loss.scale 16.0" in out
    rc, out, err = cli(capsys, "run", path, "--out", tmp_path / "out")
    assert rc == 0, err
    results = json.loads((tmp_path / "out" / "final.json").read_text())
    assert results["proxy_margin"]["params"]["loss.scale"] == 16.0
    best = yaml.safe_load((tmp_path / "out" / "best" / "proxy_margin.yaml").read_text())
    assert best["losses"]["proxy_margin"]["loss"]["scale"] == 16.0


def test_dmlopt_losses_lists_installed_plugins_without_torch(installed: Path) -> None:
    code = (
        "import sys\nfrom dmlopt.cli import main\nassert main(['losses']) == 0\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning')]\n"
        "assert not heavy, heavy[:5]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=process_env(installed, EXAMPLE_SRC),
    )
    assert result.returncode == 0, result.stderr
    assert "proxy_margin  (own_loss.losses:ProxyMarginLoss)" in result.stdout
    assert "[installed: own-loss 0.1.0]" in result.stdout


def test_unknown_dataset_lists_installed_ones(
    installed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = cli(capsys, "check", study(tmp_path, {"dataset": {"name": "blob"}}))
    one_line_error(rc, err, "(known: synthetic, folder, npz, cub200, cars196, sop, oml_csv, blobs;")


def test_a_trunk_returning_a_module_has_its_width_measured(own_loss: None) -> None:
    from dmlopt.config import ModelConfig
    from dmlopt.models import build_model

    _, embedder = build_model(
        ModelConfig(trunk="own_loss.nets:tiny_mlp", embedding_dim=5), (1, 4, 4)
    )
    assert embedder.in_features == 64 and embedder.out_features == 5


# --------------------------------------------------------------------------- provenance
def test_provenance_has_versions_device_date_and_the_git_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = environment()
    assert found["dmlopt"] == dmlopt.__version__
    assert found["torch"].startswith("2.13.0")
    for key in ("lightning", "pytorch_metric_learning", "optuna", "faiss", "python", "device"):
        assert found[key], key
    assert found["date"].endswith("+00:00")

    repo = tmp_path / "repo"
    repo.mkdir()
    assert git_state(repo) is None  # not a repository: no commit, no failure
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "study.yaml").write_text("a\n")
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    assert git_state(repo) == {"commit": head.stdout.strip(), "dirty": False}
    (repo / "study.yaml").write_text("b\n")
    assert git_state(repo) == {"commit": head.stdout.strip(), "dirty": True}

    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no git at all
    assert git_state(repo) is None
    monkeypatch.chdir(repo)
    assert environment()["git"] is None


def test_an_integer_range_of_a_user_loss_is_searched_as_integers(
    user_module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``int: true``: integer values reach the class, and a single integer range within the
    budget is searched as a grid, each value once, as for built-in losses."""
    user_module.write_text(
        USER_LOSS.replace("margin: float = 0.5", "margin: float = 0.5, power: int = 1").replace(
            "        self.margin = margin\n",
            "        self.margin = margin\n        assert isinstance(power, int)\n",
        )
    )
    space = {"loss": {"power": {"low": 1, "high": 2, "int": True}, "margin": 0.5}}
    path = study(
        tmp_path, quick({"losses": {"mine": {"class": "edited_loss:Loss", "space": space}},
                         "search": {"n_trials": 2}})
    )  # fmt: skip
    rc, _, err = cli(capsys, "run", path, "--out", tmp_path / "out", "--no-final")
    assert rc == 0, err
    trials = optuna.load_study(
        study_name="tiny/mine", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    ).trials
    assert sorted(t.params["loss.power"] for t in trials) == [1, 2]
    assert all(set(t.params) == {"loss.power"} for t in trials)  # margin is fixed
