"""The report and the dashboard as a person sees them: headless Chromium, offline.

Each test checks what a reader would: every method is there, the within-noise statement is
there, no script failed, and no request left the machine. Screenshots stay in the test's
temporary folder for a look after a failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from dmlopt.cli import main

from .browser import Chromium, find_chromium
from .conftest import LOSSES, running_dashboard

pytestmark = pytest.mark.slow  # a browser start and a dashboard each take seconds

RENDERED = "document.querySelectorAll('.plotly-graph-div .main-svg').length"


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        pytest.skip("chromium is not installed and could not be installed here (`make test` "
                    "installs the Debian package chromium where apt-get may)")  # fmt: skip
    return found


def test_report_in_a_browser(chromium: str, stored: dict[str, Any], tmp_path: Path) -> None:
    page_file = tmp_path / "report.html"
    assert main(["report", "--storage", stored["url"], "-o", str(page_file)]) == 0
    with Chromium(chromium) as page:
        page.goto(page_file.as_uri())
        figures = page.evaluate("document.querySelectorAll('.plotly-graph-div').length")
        assert figures >= 3
        page.wait_for(f"{RENDERED} >= {figures}")  # every chart drew itself
        shot = page.screenshot(tmp_path / "report.png")
        rows = page.evaluate(
            "[...document.querySelectorAll('tr[data-method]')].map(r => "
            "[r.dataset.method, r.getBoundingClientRect().height > 0])"
        )
        headline = page.evaluate("document.querySelector('[data-testid=headline]').innerText")
        protocol = page.evaluate("document.querySelector('[data-testid=protocol]').innerText")
        assert page.errors == []
        assert page.outside_requests() == []
    assert {m for m, visible in rows if visible} >= set(LOSSES)
    assert "of 2 methods are within noise of the best" in headline
    assert "concatenated MAP@R" in headline
    assert "2 complete, 0 pruned, 0 failed" in protocol
    assert shot.stat().st_size > 20_000  # a real page, not a blank one


def test_metrics_page_in_a_browser(chromium: str, tmp_path: Path) -> None:
    page_file = tmp_path / "metrics.html"
    assert main(["explain-metrics", "-o", str(page_file)]) == 0
    with Chromium(chromium) as page:
        page.goto(page_file.as_uri())
        page.wait_for(f"{RENDERED} >= 3")
        page.screenshot(tmp_path / "metrics.png")
        text = page.evaluate("document.body.innerText")
        assert page.errors == [] and page.outside_requests() == []
    assert text.count("MAP@R") >= 3 and "Scattered pairs" in text


def test_dashboard_in_a_browser(chromium: str, stored: dict[str, Any], tmp_path: Path) -> None:
    study = optuna.load_study(study_name="tiny/contrastive", storage=stored["url"])
    with running_dashboard("--storage", stored["url"]) as (port, _), Chromium(chromium) as page:
        base = f"http://127.0.0.1:{port}/dashboard"
        page.goto(base)
        page.wait_for(" && ".join(f"document.body.innerText.includes('tiny/{m}')" for m in LOSSES))
        page.screenshot(tmp_path / "dashboard.png", full_page=False)
        page.goto(f"{base}/studies/{study._study_id}")
        page.wait_for("document.body.innerText.includes('val MAP@R')")  # the named objective
        page.screenshot(tmp_path / "study.png", full_page=False)
        page.goto(f"{base}/studies/{study._study_id}/note")
        page.wait_for("document.body.innerText.includes('Test scores of record')")
        page.goto(f"{base}/studies/{study._study_id}/trials")
        page.wait_for("document.body.innerText.includes('fold0_val_curve.csv')")  # artifacts
        page.screenshot(tmp_path / "trials.png", full_page=False)
        assert page.errors == []
        assert page.outside_requests() == []
