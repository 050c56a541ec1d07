"""The report page: collected studies -> one self-contained HTML file, through a Jinja2 template.

plotly.js is inlined once in the page head, so the page opens offline and makes no request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2

from dmlopt.report.collect import LossResult, StudyReport
from dmlopt.report.figures import (
    colours,
    folds_figure,
    importance_figure,
    scores_figure,
    search_figure,
)
from dmlopt.report.stats import ALPHA, TEST_NAME, Comparison, compare
from dmlopt.report.table import KINDS, METRIC_NAMES, has_interval

#: Paper column order: P@1, R-Precision, MAP@R, concatenated before separated.
COLUMNS = [(kind, m) for kind, _ in KINDS for m in ("precision_at_1", "r_precision", "map_at_r")]
HEADLINE = ("concatenated", "map_at_r")


@dataclass(frozen=True)
class Cell:
    text: str
    interval: str
    best: bool
    within: bool
    title: str


def comparisons(results: Mapping[str, LossResult]) -> dict[tuple[str, str], Comparison]:
    """The within-noise comparison of every (embedding kind, metric) column."""
    scored = {k: r.test for k, r in results.items() if r.test is not None}
    return {
        (kind, m): compare({k: t["test"][kind][m].get("values", []) for k, t in scored.items()})
        for kind, m in COLUMNS
    }


def _cell(loss: str, summary: Mapping[str, Any], comparison: Comparison) -> Cell:
    low, high = summary["ci95"]
    interval = f"[{100 * low:.2f}, {100 * high:.2f}]" if has_interval(summary) else "n/a"
    p = comparison.adjusted_p.get(loss)
    title = "best" if loss == comparison.best else ("" if p is None else f"Holm-adjusted p {p:.3f}")
    return Cell(
        text=f"{100 * summary['mean']:.2f}",
        interval=interval,
        best=loss == comparison.best,
        within=comparison.testable and loss in comparison.within_noise and loss != comparison.best,
        title=title,
    )


def _row(result: LossResult, compared: Mapping[tuple[str, str], Comparison]) -> dict[str, Any]:
    marks = []
    test = result.test
    if test is not None:
        if test.get("rescored"):
            marks.append(("*", f"rescore (scoring no. {test.get('attempt', 0) + 1})"))
        reproduction = test.get("reproduction_of")
        if reproduction:
            marks.append(("R", f"reproduction of {reproduction.get('study')} trial "
                          f"{reproduction.get('trial')}"))  # fmt: skip
        if test.get("diverged"):
            marks.append(("†", f"{len(test['diverged'])} diverged fold(s) in the reruns"))
    val = "-"
    if result.best_value is not None:
        val = f"{result.best_value:.4f}"
    elif test is not None and test.get("val_map_at_r") is not None:
        val = f"{test['val_map_at_r']:.4f}"
    std = result.best_std if result.best_value is not None else (test or {}).get("val_map_at_r_std")
    return {
        "loss": result.loss,
        "marks": marks,
        "val": val,
        "val_std": "" if std is None else f"± {std:.4f}",
        "cells": None
        if test is None
        else [_cell(result.loss, test["test"][k][m], compared[(k, m)]) for k, m in COLUMNS],
        "scoring": result.scoring or "not scored",
    }


def _untrained_row(results: Mapping[str, LossResult]) -> dict[str, Any] | None:
    test = next((r.test for r in results.values() if r.test and "untrained" in r.test), None)
    if test is None:
        return None
    cells = []
    for kind, m in COLUMNS:
        s = test["untrained"][kind][m]
        interval = f"[{100 * s['ci95'][0]:.2f}, {100 * s['ci95'][1]:.2f}]"
        cells.append(Cell(f"{100 * s['mean']:.2f}", interval if has_interval(s) else "n/a",
                          best=False, within=False, title="untrained network"))  # fmt: skip
    return {"loss": "(untrained)", "marks": [], "val": "-", "val_std": "", "cells": cells,
            "scoring": "baseline"}  # fmt: skip


def _examples(
    results: Mapping[str, LossResult], headline: Comparison
) -> tuple[str, dict[str, Any]] | None:
    """The retrieval examples of the best method (else of any method that has some)."""
    order = [headline.best] if headline.best else []
    order += [k for k in results if k not in order]
    for loss in order:
        test = results[loss].test if loss in results else None
        examples = (test or {}).get("examples")
        if examples and examples.get("queries"):
            return loss, examples
    return None


def _test_params(result: LossResult) -> dict[str, Any]:
    return dict((result.test or {}).get("params") or {})


def _params(result: LossResult) -> dict[str, Any]:
    """The parameters a method was scored with: its best trial's, or an exported config's."""
    if result.best_params:
        return {"loss": result.loss, "source": f"trial {result.best_trial}",
                "params": result.best_params}  # fmt: skip
    return {"loss": result.loss, "source": "exported config", "params": _test_params(result)}


def _figure(fig: Any, *, toolbar: bool = True) -> str:
    config = {"displaylogo": False, "displayModeBar": "hover" if toolbar else False}
    return str(fig.to_html(full_html=False, include_plotlyjs=False, config=config))


def study_context(study: StudyReport) -> dict[str, Any]:
    """Everything the template shows of one study."""
    results = study.losses
    colour = colours(list(results))
    compared = comparisons(results)
    headline = compared[HEADLINE]
    scored = [r for r in results.values() if r.test is not None]
    rows = [_row(r, compared) for r in results.values()]
    untrained = _untrained_row(results)
    figures = []
    if scored:
        figures.append(_figure(scores_figure(results, "map_at_r", colour)))
    if any(r.trials for r in results.values()):
        figures.append(_figure(search_figure(results, colour)))
    if any(r.best_fold_scores for r in results.values()):
        figures.append(_figure(folds_figure(results, colour)))
    importances = [
        {"loss": r.loss, "figure": _figure(importance_figure(r, colour[r.loss]), toolbar=False)}
        if r.importances
        else {"loss": r.loss, "note": r.importance_note}
        for r in results.values()
        if r.searched
    ]
    reruns = sorted({r.test["runs"] for r in scored if r.test})
    return {
        "name": study.name,
        "colour": colour,
        "columns": [(kind, METRIC_NAMES[m]) for kind, m in COLUMNS],
        "rows": ([untrained] if untrained else []) + rows,
        "unscored": [r.loss for r in results.values() if r.test is None],
        "headline": headline.sentence("concatenated MAP@R"),
        "sentences": [
            compared[(k, m)].sentence(f"{k} {METRIC_NAMES[m]}", caveat=False)
            for k, m in COLUMNS
            if (k, m) != HEADLINE
        ],
        "reruns": ", ".join(map(str, reruns)),
        "figures": figures,
        "importances": importances,
        "params": [_params(r) for r in results.values() if r.best_params or _test_params(r)],
        "examples": _examples(results, headline),
        "protocol": study.protocol,
        "methods": results,
        "fingerprints": {
            r.loss: r.test["fingerprints"] for r in scored if r.test and r.test.get("fingerprints")
        },
    }


def environment() -> jinja2.Environment:
    """dmlopt's page templates, HTML-escaped unless a value is marked safe."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("dmlopt.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def report_html(studies: Mapping[str, StudyReport]) -> str:
    """One page: per study, the comparison table, the within-noise statement, the charts, the
    best parameters, retrieval examples and the protocol box."""
    import plotly.offline

    template = environment().get_template("report.html.j2")
    return template.render(
        studies=[study_context(s) for s in studies.values()],
        plotly_js=plotly.offline.get_plotlyjs(),
        test_name=TEST_NAME,
        alpha=ALPHA,
        made=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
