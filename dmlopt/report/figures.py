"""Draw collected data as plotly figures: one colour per method in every chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative

from dmlopt.report.collect import LossResult
from dmlopt.report.table import KINDS, METRIC_NAMES

HEIGHT = 420  # pixels: two charts fit a laptop screen; plotly's default fills the window
PALETTE = qualitative.Plotly + qualitative.D3[::2] + qualitative.Dark24


def colours(methods: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method, in the order given (the same in every chart of a study)."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}


def _layout(fig: go.Figure, title: str, **axes: object) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01},
        height=HEIGHT,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        template="plotly_white",
        legend={"orientation": "v"},
        **axes,
    )
    return fig


def scores_figure(
    results: Mapping[str, LossResult],
    metric: str = "map_at_r",
    colour: Mapping[str, str] | None = None,
) -> go.Figure:
    """Test ``metric`` per method with its 95% interval over reruns, both embedding kinds
    (concatenated solid, separated hatched)."""
    colour = colour or colours(list(results))
    scored = {k: r.test for k, r in results.items() if r.test is not None}
    fig = go.Figure()
    for method, t in scored.items():
        for kind, short in KINDS:
            summary = t["test"][kind][metric]
            mean = 100 * summary["mean"]
            low, high = (100 * v for v in summary["ci95"])
            fig.add_bar(
                name=f"{method} {short}",
                legendgroup=method,
                x=[[short], [method]],
                y=[mean],
                marker={"color": colour[method],
                        "pattern": {"shape": "/" if kind == "separated" else ""}},
                error_y={"type": "data", "array": [high - mean], "arrayminus": [mean - low]},
                hovertemplate=f"{method} {kind}: %{{y:.2f}} [{low:.2f}, {high:.2f}]<extra></extra>",
            )  # fmt: skip
    runs = {t["runs"] for t in scored.values()}
    over = f" over {runs.pop()} reruns" if len(runs) == 1 else " over the reruns"
    return _layout(
        fig,
        f"Test {METRIC_NAMES[metric]} (%), mean and 95% interval{over}",
        showlegend=False,
        yaxis_title=f"{METRIC_NAMES[metric]} (%)",
        barmode="group",
    )


def search_figure(
    results: Mapping[str, LossResult], colour: Mapping[str, str] | None = None
) -> go.Figure:
    """Mean val MAP@R of each completed trial (dots) and the best so far (line), per method."""
    colour = colour or colours(list(results))
    fig = go.Figure()
    for loss, r in results.items():
        if not r.trials:
            continue
        numbers = [n for n, _ in r.trials]
        values = [v for _, v in r.trials]
        best = [max(values[: i + 1]) for i in range(len(values))]
        fig.add_scatter(
            x=numbers, y=values, mode="markers", name=f"{loss} trials", legendgroup=loss,
            marker={"color": colour[loss], "size": 7, "opacity": 0.6}, showlegend=False,
        )  # fmt: skip
        fig.add_scatter(
            x=numbers, y=best, mode="lines", name=loss, legendgroup=loss,
            line={"color": colour[loss], "shape": "hv", "width": 2},
        )  # fmt: skip
    return _layout(
        fig,
        "Search: mean val MAP@R per trial (dots) and best so far (line)",
        xaxis={"title": "trial", "tickformat": "d", "rangemode": "tozero"},
        yaxis_title="val MAP@R",
    )


def folds_figure(
    results: Mapping[str, LossResult], colour: Mapping[str, str] | None = None
) -> go.Figure:
    """Each fold's best val MAP@R in the best trial of each method: the spread behind the mean."""
    colour = colour or colours(list(results))
    fig = go.Figure()
    for loss, r in results.items():
        if not r.best_fold_scores:
            continue
        fig.add_box(
            y=r.best_fold_scores, name=loss, boxpoints="all", pointpos=0, jitter=0.3,
            marker={"color": colour[loss]}, line={"color": colour[loss]},
            text=[f"fold {i}" for i in range(len(r.best_fold_scores))],
            hovertemplate="%{text}: %{y:.4f}<extra>" + loss + "</extra>",
        )  # fmt: skip
    return _layout(
        fig,
        "Best trial of each method: val MAP@R per fold",
        showlegend=False,
        yaxis_title="val MAP@R",
    )


def importance_figure(result: LossResult, colour: str) -> go.Figure:
    """Optuna's parameter importances of one method's search (they sum to 1)."""
    items = sorted(result.importances.items(), key=lambda kv: kv[1])
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in items], y=[k for k, _ in items], orientation="h",
            marker={"color": colour}, hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )  # fmt: skip
    fig = _layout(fig, result.loss, xaxis_title="importance")
    fig.update_layout(height=120 + 28 * len(items), margin={"l": 160, "t": 40, "b": 40})
    return fig
