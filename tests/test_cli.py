"""The command line: one-line errors with exit status 2, nothing stored changed, quick commands.

Most commands run in-process through :func:`dmlopt.cli.main` (fast); a few run as real processes
to check the exit status, that stderr holds no traceback, and that quick commands (``losses``,
``check``, error paths) never import Lightning.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dmlopt import losses
from dmlopt.cli import main
from dmlopt.config import load_study, parse_study
from dmlopt.data.splits import class_disjoint_folds, paper_split
from tests.conftest import TINY_STUDY

SECRET = "s3cret-pw"
UNREACHABLE = f"postgresql+psycopg2://nobody:{SECRET}@127.0.0.1:1/none"


# --------------------------------------------------------------------------- helpers
def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``(exit status, stdout, stderr)`` of ``dmlopt argv`` run in this process."""
    capsys.readouterr()  # drop anything printed before
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *, contains: str = "") -> str:
    """Exit status 2 and exactly one ``error: ...`` line on stderr; returns the message."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert contains.lower() in lines[0].lower(), (contains, lines[0])
    return lines[0]


def process_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DMLOPT_STORAGE", None)  # the study file and --storage decide, not the caller's shell
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_process(argv: list[object], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def dmlopt_script() -> str:
    """The installed console script beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).with_name("dmlopt")
    found = str(beside) if beside.exists() else shutil.which("dmlopt")
    if found is None:
        pytest.skip("the dmlopt console script is not installed")
    return found


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the SQLite database included), byte for byte."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The tiny study searched and scored once into ``out``: a stored run to leave alone."""
    root = tmp_path_factory.mktemp("scored")
    study = write_yaml(root / "study.yaml", copy.deepcopy(TINY_STUDY))
    out = root / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DMLOPT_STORAGE", raising=False)
        mp.chdir(root)
        assert main(["run", str(study), "--out", str(out)]) == 0
    assert (out / "study.db").is_file() and (out / "final.json").is_file()
    yield {"root": root, "study": study, "out": out}


# --------------------------------------------------------------------------- bad input
def _study(tmp_path: Path, changes: dict[str, Any] | None = None, **replace: Any) -> Path:
    data = copy.deepcopy(TINY_STUDY)
    for key, value in (changes or {}).items():
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    data.update(replace)
    return write_yaml(tmp_path / "bad.yaml", data)


def _malformed_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("study: tiny\ndataset: {name: synthetic, classes: 16\nlosses: [contrastive]\n")
    return path


#: name -> (study file maker, extra arguments, words the error must contain).
STUDY_FILE_ERRORS: dict[str, tuple[Callable[[Path], Path], list[str], str]] = {
    "malformed_yaml": (_malformed_yaml, [], "malformed YAML"),
    "unknown_key": (lambda p: _study(p, colour="blue"), [], "unknown key"),
    "unknown_nested_key": (
        lambda p: _study(p, {"training": {"batchsize": 8}}),
        [],
        "training.batchsize",
    ),
    "unknown_loss": (lambda p: _study(p, losses=["no_such_loss"]), [], "no_such_loss"),
    "unknown_loss_parameter": (
        lambda p: _study(p, losses={"contrastive": {"loss": {"margin": 0.5}}}),
        [],
        "margin",
    ),
    "missing_study_file": (lambda p: p / "does_not_exist.yaml", [], "cannot read study file"),
    "missing_dataset_root": (
        lambda p: _study(p, dataset={"name": "folder", "root": str(p / "no_such_root")}),
        [],
        "dataset root not found",
    ),
    "impossible_split": (lambda p: _study(p, {"split": {"folds": 10}}), [], "split: 10 folds"),
    "unreachable_storage": (
        lambda p: _study(p),
        ["--storage", UNREACHABLE],
        "cannot open storage",
    ),
    "malformed_storage_url": (
        lambda p: _study(p),
        ["--storage", "not a url"],
        "malformed storage URL",
    ),
}
#: errors found before any storage is opened: also for ``final`` (which opens storage first).
LOAD_ERRORS = ("malformed_yaml", "unknown_key", "unknown_nested_key", "unknown_loss")


def _other_errors(tmp_path: Path) -> dict[str, tuple[list[object], str]]:
    study = _study(tmp_path)
    return {
        "export_nonexistent_study": (["export", "nope/contrastive"], "no study"),
        "export_name_without_slash": (["export", "nope"], "expected <study>/<loss>"),
        "losses_unknown_pattern": (["losses", "zzz*"], "no loss matches 'zzz*'"),
        "final_malformed_storage_url": (
            ["final", study, "--storage", "not a url"],
            "malformed storage URL",
        ),
        "final_unreachable_storage": (
            ["final", study, "--storage", UNREACHABLE],
            "cannot open storage",
        ),
    }


def _cases() -> Iterator[Any]:
    for name in STUDY_FILE_ERRORS:
        for command in ("run", "worker", "check"):
            if command == "check" and name in ("unreachable_storage", "malformed_storage_url"):
                continue  # check takes no --storage
            yield pytest.param(command, name, id=f"{command}-{name}")
        if name in LOAD_ERRORS:
            yield pytest.param("final", name, id=f"final-{name}")


@pytest.mark.parametrize(("command", "case"), list(_cases()))
def test_bad_study_input_is_one_line_and_creates_nothing(
    command: str,
    case: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    make, extra, words = STUDY_FILE_ERRORS[case]
    out = tmp_path / "fresh_out"
    rc, stdout, err = cli(capsys, command, make(tmp_path), *extra, "--out", out)
    assert_one_line_error(rc, err, contains=words)
    assert stdout == ""
    assert SECRET not in err
    assert not out.exists(), "a failed command created its output folder"
    assert not (tmp_path / "runs").exists()
    assert not list(tmp_path.rglob("*.db"))


@pytest.mark.parametrize(
    "case",
    [
        "export_nonexistent_study",
        "export_name_without_slash",
        "losses_unknown_pattern",
        "final_malformed_storage_url",
        "final_unreachable_storage",
    ],
)
def test_other_bad_input_is_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv, words = _other_errors(tmp_path)[case]
    rc, stdout, err = cli(capsys, *argv)
    assert_one_line_error(rc, err, contains=words)
    assert stdout == ""
    assert SECRET not in err


def test_unreachable_storage_error_masks_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = cli(capsys, "run", _study(tmp_path), "--storage", UNREACHABLE)
    message = assert_one_line_error(rc, err, contains="cannot open storage")
    assert SECRET not in message
    assert "nobody:***@127.0.0.1:1/none" in message


def test_storage_url_with_bad_port_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql+psycopg2://nobody:{SECRET}@127.0.0.1:notaport/none"
    rc, _, err = cli(capsys, "run", _study(tmp_path), "--storage", url, "--out", tmp_path / "o")
    assert_one_line_error(rc, err)
    assert SECRET not in err
    assert not (tmp_path / "o").exists()


def test_export_of_nonexistent_study_creates_no_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli(capsys, "export", "nope/contrastive")
    assert_one_line_error(rc, err, contains="no study")
    rc, _, err = cli(capsys, "export", "nope/contrastive", "--out", tmp_path / "fresh")
    assert_one_line_error(rc, err, contains="no study")
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "fresh").exists()


# --------------------------------------------------------------------------- nothing stored changed
@pytest.mark.parametrize("case", list(STUDY_FILE_ERRORS))
def test_bad_run_leaves_a_stored_study_unchanged(
    case: str, scored: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = scored["out"]
    before = snapshot(out)
    make, extra, words = STUDY_FILE_ERRORS[case]
    rc, _, err = cli(capsys, "run", make(tmp_path), *extra, "--out", out)
    assert_one_line_error(rc, err, contains=words)
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["export", "tiny/nope"], id="export-unknown-loss-study"),
        pytest.param(["export", "nope/contrastive"], id="export-unknown-study"),
        pytest.param(["export", "tiny"], id="export-without-slash"),
        pytest.param(["run", "{study}"], id="run-already-scored"),
        pytest.param(["final", "{study}"], id="final-already-scored"),
    ],
)
def test_refused_command_leaves_a_stored_study_unchanged(
    argv: list[str], scored: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = scored["out"]
    before = snapshot(out)
    args = [a.format(study=scored["study"]) for a in argv]
    rc, _, err = cli(capsys, *args, "--out", out)
    assert_one_line_error(rc, err)
    assert snapshot(out) == before


def test_final_of_unsearched_study_leaves_storage_unchanged(
    scored: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = scored["out"]
    other = write_yaml(tmp_path / "other.yaml", {**copy.deepcopy(TINY_STUDY), "study": "other"})
    copied = tmp_path / "copy"
    shutil.copytree(out, copied)  # the module's stored run stays intact if the bug is there
    before = snapshot(copied)
    rc, _, err = cli(capsys, "final", other, "--out", copied)
    assert_one_line_error(rc, err, contains="run the search first")
    assert snapshot(copied) == before


# --------------------------------------------------------------------------- real processes
def test_process_malformed_yaml_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = _malformed_yaml(tmp_path)
    result = run_process([sys.executable, "-m", "dmlopt.cli", "run", bad], tmp_path)
    assert_one_line_error(result.returncode, result.stderr, contains="malformed YAML")
    assert result.stdout == ""
    assert not (tmp_path / "runs").exists()


def test_process_unreachable_storage_exits_2_without_traceback(tmp_path: Path) -> None:
    study = _study(tmp_path)
    out = tmp_path / "out"
    result = run_process(
        [dmlopt_script(), "run", study, "--storage", UNREACHABLE, "--out", out], tmp_path
    )
    assert_one_line_error(result.returncode, result.stderr, contains="cannot open storage")
    assert SECRET not in result.stderr + result.stdout
    assert not out.exists()


def test_process_export_without_slash_exits_2(tmp_path: Path) -> None:
    result = run_process([dmlopt_script(), "export", "nope"], tmp_path)
    assert_one_line_error(result.returncode, result.stderr, contains="<study>/<loss>")
    assert not (tmp_path / "runs").exists()


NO_LIGHTNING = """
import sys
from dmlopt.cli import main
rc = main({argv!r})
assert rc == {rc}, rc
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning'))
assert not heavy, heavy
print('ok')
"""


@pytest.mark.parametrize(
    ("argv", "rc"),
    [
        pytest.param(["losses"], 0, id="losses"),
        pytest.param(["losses", "multi*"], 0, id="losses-pattern"),
        pytest.param(["check", "{study}"], 0, id="check"),
        pytest.param(["run", "{bad}"], 2, id="run-malformed-yaml"),
        pytest.param(["run", "{study}", "--storage", "not a url"], 2, id="run-malformed-storage"),
        pytest.param(["export", "nope"], 2, id="export-without-slash"),
    ],
)
def test_quick_commands_do_not_import_lightning(argv: list[str], rc: int, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    names = {"study": str(_study(tmp_path)), "bad": str(_malformed_yaml(tmp_path / "x"))}
    args = [a.format(**names) for a in argv]
    code = NO_LIGHTNING.format(argv=args, rc=rc)
    result = run_process([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("ok\n")
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- losses
def _parse_losses(text: str) -> dict[str, dict[str, str]]:
    """``dmlopt losses`` output -> {key: {parameter: range text}}."""
    listed: dict[str, dict[str, str]] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("    "):
            assert key is not None, line
            name, _, rng = line.strip().partition(" ")
            listed[key][name] = rng.strip()
        else:
            key = line.split()[0]
            listed[key] = {}
    return listed


#: the three methods of the first release and their searched parameters (docs/protocol.md).
CORE = {
    "contrastive": {"loss.pos_margin", "loss.neg_margin"},
    "triplet": {"loss.margin"},
    "multi_similarity": {"loss.alpha", "loss.beta", "loss.base"},
}


def test_losses_lists_every_registered_loss_with_its_parameters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = cli(capsys, "losses")
    assert rc == 0, err
    listed = _parse_losses(out)
    assert list(listed) == losses.names()
    for key, params in CORE.items():
        assert set(listed[key]) == params, key
    for key in losses.names():
        space = losses.get(key).search_space()
        assert listed[key] == {name: str(param) for name, param in space.items()}, key


def test_losses_pattern_filters(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "losses", "multi*")
    assert rc == 0
    listed = _parse_losses(out)
    assert "multi_similarity" in listed
    assert all(fnmatch.fnmatchcase(k, "multi*") for k in listed)
    assert list(listed) == [k for k in losses.names() if k.startswith("multi")]
    assert "contrastive" not in out and "triplet" not in out


def test_losses_exact_name_lists_one(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "losses", "triplet")
    assert rc == 0
    assert list(_parse_losses(out)) == ["triplet"]


def test_losses_unknown_pattern_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(capsys, "losses", "no_such_*")
    assert_one_line_error(rc, err, contains="no_such_*")
    assert "contrastive" in err  # the message names the known losses
    assert out == ""


# --------------------------------------------------------------------------- check
@pytest.mark.parametrize("folds", [2, 4])
def test_check_prints_config_and_folds_and_stores_nothing(
    folds: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    study = _study(tmp_path, {"split": {"folds": folds}})
    rc, out, err = cli(capsys, "check", study, "--out", tmp_path / "out")
    assert rc == 0, err
    lines = out.splitlines()
    config_text = "\n".join(line for line in lines if not line.startswith("#"))
    assert parse_study(yaml.safe_load(config_text)) == load_study(study)

    trainval, test = paper_split(16)
    assert f"# split: {len(trainval)} train/val classes (search), {len(test)} test classes" in out
    fold_lines = [line for line in lines if line.startswith("# fold ")]
    assert len(fold_lines) == folds
    for i, (train, val) in enumerate(class_disjoint_folds(trainval, folds)):
        ids = f"[{min(val)}-{max(val)}]"  # tiny folds are contiguous runs of class ids
        assert fold_lines[i] == (
            f"# fold {i}: train {len(train)} classes, val {len(val)} classes {ids}"
        )
    assert "# contrastive: loss.pos_margin" in out
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "runs").exists()
    assert not list(tmp_path.rglob("*.db"))


def test_check_says_how_each_loss_is_searched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A one-integer space within the budget is a grid, which overrides ``search.sampler``:
    ``check`` says so rather than leaving the sampler setting to look as if it applied."""
    fastap = {"fastap": {"loss": {"num_bins": {"low": 2, "high": 6}}}}
    study = _study(tmp_path, {"search": {"n_trials": 8}}, losses={"contrastive": {}, **fastap})
    rc, out, err = cli(capsys, "check", study)
    assert rc == 0, err
    lines = {line.split(":")[0]: line for line in out.splitlines() if line.startswith("# ")}
    assert lines["# contrastive"].endswith("(tpe sampler, 8 trials)")
    assert lines["# fastap"].endswith(
        "(grid: each of its 5 values once; search.sampler does not apply)"
    )
    rc, out, err = cli(capsys, "check", study, "--format", "json")
    assert json.loads(out)["search"] == {
        "contrastive": "tpe sampler, 8 trials",
        "fastap": "grid: each of its 5 values once; search.sampler does not apply",
    }


def test_check_redacts_a_storage_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _study(tmp_path, storage=f"postgresql+psycopg2://user:{SECRET}@db.example/x")
    rc, out, err = cli(capsys, "check", study)
    assert rc == 0, err
    assert SECRET not in out + err
    assert "# storage: postgresql+psycopg2://user:***@db.example/x" in out


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ({"trunk": "mlp"}, "mlp needs feature vectors"),
        ({"trunk": "small_cnn", "pretrained": "/nonexistent/weights.pt"}, "pretrained weights"),
    ],
)
def test_model_that_cannot_be_built_fails_before_storage(
    model: dict[str, Any], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_yaml(tmp_path / "study.yaml", {**copy.deepcopy(TINY_STUDY), "model": model})
    for command in ("run", "check"):
        rc, _, err = cli(capsys, command, study, "--out", tmp_path / "out")
        assert_one_line_error(rc, err, contains=words)
    assert not (tmp_path / "out").exists()
