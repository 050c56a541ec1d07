"""Draw a report from collected data: plotly figures and one self-contained HTML page."""

from __future__ import annotations

import html
from collections.abc import Mapping

import plotly.graph_objects as go

from dmlopt.report.collect import LossResult
from dmlopt.report.table import KINDS, format_table


def scores_figure(results: Mapping[str, LossResult], metric: str = "map_at_r") -> go.Figure:
    """Test ``metric`` per loss with its 95% interval over reruns, both embedding kinds."""
    scored = {k: r.test for k, r in results.items() if r.test is not None}
    fig = go.Figure()
    for kind, _ in KINDS:
        means = [100 * t["test"][kind][metric]["mean"] for t in scored.values()]
        lows = [100 * t["test"][kind][metric]["ci95"][0] for t in scored.values()]
        highs = [100 * t["test"][kind][metric]["ci95"][1] for t in scored.values()]
        fig.add_bar(
            name=kind,
            x=[k + ("*" if t["rescored"] else "") for k, t in scored.items()],
            y=means,
            error_y={"type": "data", "array": [h - m for h, m in zip(highs, means, strict=True)],
                     "arrayminus": [m - lo for m, lo in zip(means, lows, strict=True)]},
        )  # fmt: skip
    fig.update_layout(title=f"Test {metric} (%), mean and 95% interval", barmode="group")
    return fig


def search_figure(results: Mapping[str, LossResult]) -> go.Figure:
    """Mean val MAP@R of each completed trial, and the best so far, per loss."""
    fig = go.Figure()
    for loss, r in results.items():
        numbers = [n for n, _ in r.trials]
        values = [v for _, v in r.trials]
        best = [max(values[: i + 1]) for i in range(len(values))]
        fig.add_scatter(x=numbers, y=values, mode="markers", name=f"{loss} trials")
        fig.add_scatter(x=numbers, y=best, mode="lines", name=f"{loss} best")
    fig.update_layout(title="Search: mean val MAP@R over folds", xaxis_title="trial")
    return fig


def report_html(studies: Mapping[str, Mapping[str, LossResult]]) -> str:
    """One page: per study, the comparison table and the two figures (plotly.js embedded, so
    the page works offline)."""
    parts = ["<html><head><meta charset='utf-8'><title>dmlopt report</title></head><body>"]
    include_js = True  # plotly.js once, in the first figure
    for study, results in studies.items():
        parts.append(f"<h1>{html.escape(study)}</h1>")
        scored = {k: r.test for k, r in results.items() if r.test is not None}
        table = format_table(scored) if scored else "no test scores recorded yet"
        parts.append(f"<pre>{html.escape(table)}</pre>")
        for fig in (scores_figure(results), search_figure(results)):
            parts.append(fig.to_html(full_html=False, include_plotlyjs=include_js))
            include_js = False
    parts.append("</body></html>")
    return "\n".join(parts)
