"""Input that cannot hurt: hostile study files, storage URLs and data are refused with one
line (``error: ...``, exit status 2, no traceback), fast, and never echo a whole value."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dmlopt.study.storage import normalize_url, redact
from tests.conftest import TINY_STUDY, deep_update
from tests.test_distributed import SERVERS, _require


def _dmlopt(cwd: Path, *argv: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DMLOPT_STORAGE"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "dmlopt.cli", *(str(a) for a in argv)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


# --------------------------------------------------------------------------- study files
ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
       f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
       f"*{chr(97 + i)}, *{chr(97 + i)}]" for i in range(8)]
)  # fmt: skip


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"study: x\n" + b"# padding\n" * 120_000, "larger than 1024 KiB"),
        (b"\x89\xff\xfe garbage \x00\x01", "not UTF-8"),
        (ALIAS_BOMB.encode(), "aliases"),
        (yaml.safe_dump({**TINY_STUDY, "losses": [["contrastive"]]}).encode(), "losses"),
        (yaml.safe_dump({**TINY_STUDY, "training": [1, 2]}).encode(), "training"),
        (yaml.safe_dump({**TINY_STUDY, "losses": {"contrastive": {"loss": [1]}}}).encode(), "loss"),
    ],
    ids=["over-1MB", "non-utf8", "alias-bomb", "nested-losses", "list-section", "bad-group"],
)
def test_hostile_study_files_are_refused_fast(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "study.yaml"
    path.write_bytes(content)
    started = time.monotonic()
    line = _one_error(_dmlopt(tmp_path, "check", path))
    assert expected in line
    assert time.monotonic() - started < 30  # Python start-up and imports, never an expansion


def test_errors_never_echo_a_whole_value(tmp_path: Path) -> None:
    huge = "x" * 50_000
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**TINY_STUDY, "losses": [huge], "study": huge}))
    line = _one_error(_dmlopt(tmp_path, "check", path))
    assert len(line) < 800 and huge not in line


# --------------------------------------------------------------------------- storage URLs
@pytest.mark.parametrize(
    "password", ["P@W", "a:b/c@d", "p%40w", "x?y#z&password=1", "@@@", "plain"]
)
def test_redaction_hides_the_whole_password(password: str) -> None:
    url = f"postgresql://postgres:{password}@127.0.0.1:5432/test?sslmode=disable"
    shown = redact(url)
    assert shown == "postgresql://postgres:***@127.0.0.1:5432/test?sslmode=disable"
    query_secret = redact("postgresql://u@h/db?password=hunter2&application_name=a")
    assert query_secret == "postgresql://u@h/db?password=***&application_name=a"


def test_plain_postgresql_url_uses_the_installed_driver() -> None:
    url = normalize_url("postgresql://postgres:P@W@127.0.0.1:5432/test")
    import importlib.util

    driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
    expected = "" if driver == "psycopg" else "+psycopg2"
    assert url == f"postgresql{expected}://postgres:P%40W@127.0.0.1:5432/test"


@pytest.mark.services
def test_documented_postgresql_url_works(tmp_path: Path) -> None:
    """``postgresql://`` without a driver, as the README and docker/ write it, with the
    password's '@' unescaped: it connects (the study is missing, which is the one error)."""
    _require(SERVERS["postgresql"])
    url = "postgresql://postgres:P@W@127.0.0.1:5432/test"
    line = _one_error(_dmlopt(tmp_path, "export", "nosuch/contrastive", "--storage", url))
    assert "no study 'nosuch/contrastive'" in line
    assert "P@W" not in line and "W@" not in line and "postgres:***@127.0.0.1" in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nonsense", "malformed storage URL"),
        ("postgresql://u:s3cr@t@127.0.0.1:notaport/db", "storage"),
        ("grpc://nohost", "expected grpc://HOST:PORT"),
        ("postgresql://u:s3cr@t@127.0.0.1:1/db", "cannot open storage"),
        ("mysql+nosuchdriver://u:s3cr@t@h/db", "cannot open storage"),
    ],
)
def test_malformed_storage_urls_give_one_line(tmp_path: Path, url: str, expected: str) -> None:
    line = _one_error(_dmlopt(tmp_path, "export", "x/contrastive", "--storage", url))
    assert expected in line
    assert "s3cr" not in line


def test_an_impossible_sqlite_folder_gives_one_line(tmp_path: Path, write_study) -> None:
    study = write_study()
    line = _one_error(_dmlopt(tmp_path, "worker", study, "--storage", "sqlite:////proc/x/s.db"))
    assert "cannot create /proc/x" in line


# --------------------------------------------------------------------------- data
def _npz_study(tmp_path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(tmp_path / "feats.npz", X=x, y=y)
    data = deep_update(TINY_STUDY, {"model": {"trunk": "mlp"}})
    data["dataset"] = {"name": "npz", "path": str(tmp_path / "feats.npz")}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_non_finite_features_are_refused_by_row(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(128, 8)).astype(np.float32)
    y = np.repeat(np.arange(16), 8)
    x[3, 1] = np.nan
    x[17, 0] = np.inf
    x[127, 0] = np.nan  # a test-class row: the search does not read it
    study = _npz_study(tmp_path, x, y)
    line = _one_error(_dmlopt(tmp_path, "run", study, "--out", tmp_path / "out"))
    assert "2 rows of X are not finite" in line and "rows 3, 17" in line
    assert not (tmp_path / "out").exists()  # refused before any storage
    check = _dmlopt(tmp_path, "check", study, "--verify-data", "--include-test")
    assert "rows 3, 17, 127" in check.stdout


def test_non_numeric_features_are_refused(tmp_path: Path) -> None:
    x = np.array([["a"] * 4] * 128)
    study = _npz_study(tmp_path, x, np.repeat(np.arange(16), 8))
    assert "must be real numbers" in _one_error(_dmlopt(tmp_path, "check", study))


def _folder(tmp_path: Path, bad: dict[str, bytes]) -> Path:
    """16 classes of 8 small images; ``bad`` maps "class/file" to broken contents."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for c in range(16):
        (root / f"c{c:02d}").mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 255, size=(20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"c{c:02d}" / f"{i}.png")
    for name, content in bad.items():
        (root / name).write_bytes(content)
    return root


def _folder_study(tmp_path: Path, root: Path, n_trials: int = 2) -> Path:
    data = deep_update(TINY_STUDY, {"search": {"n_trials": n_trials}})
    data["dataset"] = {"name": "folder", "root": str(root), "transform": {"size": 16}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_verify_data_lists_bad_files_and_reads_test_only_when_asked(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"c01/3.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 10, "c12/0.jpg": b""})
    (root / "c01" / "4.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    study = _folder_study(tmp_path, root)
    assert _dmlopt(tmp_path, "check", study).returncode == 0  # decodes nothing by default
    line = _one_error(result := _dmlopt(tmp_path, "check", study, "--verify-data"))
    assert "2 unreadable samples" in line
    assert str(root / "c01" / "3.png") in result.stdout
    assert str(root / "c01" / "4.jpg") in result.stdout
    assert "c12" not in result.stdout  # a test class: not read without --include-test
    with_test = _dmlopt(tmp_path, "check", study, "--verify-data", "--include-test")
    assert "3 unreadable samples" in _one_error(with_test)
    assert str(root / "c12" / "0.jpg") in with_test.stdout


@pytest.mark.slow
def test_a_bad_image_in_training_fails_trials_naming_it(tmp_path: Path) -> None:
    """A truncated image in a validation class, which every trial reads: each trial fails
    with its path and the study goes on to the next, until a budget's worth of trials failed
    in this run; then one line, no traceback, nothing scored. Once fixed, a rerun finishes."""
    import optuna

    root = _folder(tmp_path, {})
    png = (root / "c02" / "5.png").read_bytes()
    (root / "c02" / "5.png").write_bytes(png[: len(png) // 2])
    study = _folder_study(tmp_path, root, n_trials=2)
    result = _dmlopt(tmp_path, "run", study, "--out", tmp_path / "out", timeout=600)
    line = _one_error(
        subprocess.CompletedProcess(
            result.args,
            result.returncode,
            result.stdout,
            "\n".join(x for x in result.stderr.splitlines() if x.startswith("error")),  # no bars
        )
    )
    assert str(root / "c02" / "5.png") in line
    assert "Traceback" not in result.stderr
    warnings = result.stderr.split("warning: trial")[1:]  # after progress bars' carriage returns
    assert len(warnings) == 2 and all(str(root / "c02" / "5.png") in w for w in warnings)
    trials = optuna.load_study(
        study_name="tiny/contrastive", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    ).trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert not (tmp_path / "out" / "final.json").exists()

    # Fixed, the same command finishes the study: failures of past runs do not block it.
    (root / "c02" / "5.png").write_bytes(png)
    fixed = _dmlopt(tmp_path, "run", study, "--out", tmp_path / "out", timeout=600)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert (tmp_path / "out" / "final.json").is_file()


def test_the_final_stage_through_a_proxy_names_the_way(tmp_path: Path, write_study) -> None:
    line = _one_error(_dmlopt(tmp_path, "final", write_study(), "--storage", "grpc://h:1"))
    assert "--no-final" in line and "database URL" in line
