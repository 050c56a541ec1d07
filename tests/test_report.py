"""Reports read storage and never write it; the dashboard serves it on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from dmlopt.cli import main
from dmlopt.report.collect import collect
from dmlopt.report.figures import report_html, scores_figure, search_figure
from dmlopt.study.storage import ScoreBook, open_storage

from .conftest import TINY_STUDY, deep_update

LOSSES = ["contrastive", "triplet"]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny study with two losses: both searched, only contrastive scored on the test set."""
    root = tmp_path_factory.mktemp("report")
    out = root / "out"
    for loss, final in (("contrastive", True), ("triplet", False)):
        path = root / f"{loss}.yaml"
        path.write_text(yaml.safe_dump(deep_update(TINY_STUDY, {"losses": [loss]})))
        assert main(["run", str(path), "--out", str(out), *([] if final else ["--no-final"])]) == 0
    return {"out": out, "url": f"sqlite:///{out / 'study.db'}"}


def test_collect_reads_searches_and_scores(stored: dict[str, Any]) -> None:
    url = stored["url"]
    studies = collect(open_storage(url), ScoreBook(url))
    assert list(studies) == ["tiny"] and set(studies["tiny"]) == set(LOSSES)
    for loss, result in studies["tiny"].items():
        study = optuna.load_study(study_name=f"tiny/{loss}", storage=url)
        assert result.best_value == study.best_value
        assert result.best_params == study.best_params
        assert [n for n, _ in result.trials] == [t.number for t in study.trials]
    scored = studies["tiny"]["contrastive"].test
    final = json.loads((stored["out"] / "final.json").read_text())["contrastive"]
    assert scored is not None and scored["test"] == final["test"] and scored["rescored"] is False
    assert studies["tiny"]["triplet"].test is None


def test_figures_carry_the_collected_numbers(stored: dict[str, Any]) -> None:
    url = stored["url"]
    results = collect(open_storage(url), ScoreBook(url))["tiny"]
    bars = scores_figure(results)
    final = json.loads((stored["out"] / "final.json").read_text())["contrastive"]["test"]
    concat = next(t for t in bars.data if t.name == "concatenated")
    assert list(concat.x) == ["contrastive"]  # triplet has no test score: no bar
    assert concat.y[0] == pytest.approx(100 * final["concatenated"]["map_at_r"]["mean"])
    search = search_figure(results)
    best_line = next(t for t in search.data if t.name == "contrastive best")
    assert best_line.y[-1] == pytest.approx(results["contrastive"].best_value)


def test_report_command_writes_html_and_changes_nothing(
    stored: dict[str, Any], tmp_path: Path
) -> None:
    db = stored["out"] / "study.db"
    before = db.read_bytes()
    page = tmp_path / "report.html"
    assert main(["report", "--storage", stored["url"], "-o", str(page)]) == 0
    text = page.read_text()
    assert "contrastive" in text and "triplet" in text and "plotly" in text.lower()
    assert db.read_bytes() == before
    assert (stored["out"] / "report.html").is_file()  # written by `run` after the final stage


def test_report_never_shows_a_password() -> None:
    results = {"s": {}}
    assert "secret" not in report_html(results)  # nothing from a URL is drawn at all


def test_report_without_storage_or_study_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report"]) == 2
    assert capsys.readouterr().err.startswith("error: report needs --storage")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dashboard_serves_the_studies_on_localhost(stored: dict[str, Any]) -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "dmlopt.cli", "dashboard", "--storage", stored["url"],
           "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "dashboard did not start"
                time.sleep(0.5)
        names = {s["study_name"] for s in body["study_summaries"]}
        assert names == {"tiny/contrastive", "tiny/triplet"}
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_redact_masks_passwords_in_the_userinfo_and_the_query() -> None:
    from dmlopt.study.storage import redact

    assert "hunter2" not in redact("postgresql://u:hunter2@db:5432/x")
    masked = redact("postgresql://u@db/x?password=hunter2&sslmode=require")
    assert "hunter2" not in masked and "sslmode=require" in masked


def test_report_of_an_exported_final_shows_its_scores(
    stored: dict[str, Any], tmp_path: Path
) -> None:
    best = tmp_path / "best.yaml"
    assert main(["export", "tiny/contrastive", "--out", str(stored["out"]), "-o", str(best)]) == 0
    out = tmp_path / "exported"
    assert main(["final", str(best), "--out", str(out)]) == 0
    url = f"sqlite:///{out / 'study.db'}"
    studies = collect(open_storage(url, create=False), ScoreBook(url, create=False))
    (result,) = studies["tiny-contrastive-best"].values()
    assert result.trials == [] and result.test is not None  # scored without a search
    assert "tiny-contrastive-best" in (out / "report.html").read_text()


def test_a_read_only_score_book_creates_nothing(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    book = ScoreBook(f"sqlite:///{db}", create=False)
    assert book.study_names() == [] and book.latest("x/y") is None
    tables = sqlite3.connect(db).execute("select name from sqlite_master").fetchall()
    assert tables == []
