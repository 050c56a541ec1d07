"""``dmlopt explain-metrics``: why MAP@R and not P@1, shown on three toy 2-D embedding spaces.

In each space every point's nearest neighbour shares its class, so P@1 is perfect; how the rest
of each class lies differs, and only R-Precision and MAP@R see it. The scores come from
:func:`dmlopt.metrics.retrieval_scores`, the functions that score real studies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from dmlopt.metrics import retrieval_scores
from dmlopt.report.figures import PALETTE

CLASSES = 4
PER_CLASS = 20


@dataclass(frozen=True)
class ToySpace:
    title: str
    story: str
    points: np.ndarray  # (n, 2)
    labels: np.ndarray  # (n,)

    def scores(self) -> dict[str, float]:
        return retrieval_scores(self.points, self.labels)


def toy_spaces(seed: int = 0) -> list[ToySpace]:
    """Three spaces of four classes with 20 points each."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(CLASSES), PER_CLASS)
    corners = np.array([[0, 0], [6, 0], [0, 6], [6, 6]], dtype=float)
    compact = np.concatenate([c + rng.normal(0, 0.6, (PER_CLASS, 2)) for c in corners])
    # each class in two far-apart halves, other classes' halves in between
    spots = rng.permutation(np.array([[3.0 * x, 6.0 * y] for x in range(4) for y in range(2)]))
    half = PER_CLASS // 2
    split = np.concatenate(
        [spots[2 * c + h] + rng.normal(0, 0.3, (half, 2)) for c in range(CLASSES) for h in (0, 1)]
    )
    # each class as tight pairs strewn over the whole plane
    centres = rng.uniform(0, 10, (CLASSES * half, 2))
    pairs = np.repeat(centres, 2, axis=0) + rng.normal(0, 0.05, (CLASSES * PER_CLASS, 2))
    return [
        ToySpace("Compact classes", "Each class one tight cluster, far from the others.",
                 compact, labels),
        ToySpace("Split classes", "Each class in two far-apart halves: the nearest neighbour is "
                 "right, but half of the class lies beyond other classes.", split, labels),
        ToySpace("Scattered pairs", "Each class is pairs of points strewn over the plane: the "
                 "nearest neighbour is right, the rest of the class is anywhere.", pairs, labels),
    ]  # fmt: skip


def space_figure(space: ToySpace) -> go.Figure:
    fig = go.Figure()
    for c in range(CLASSES):
        at = space.labels == c
        fig.add_scatter(
            x=space.points[at, 0], y=space.points[at, 1], mode="markers", name=f"class {c}",
            marker={"color": PALETTE[c], "size": 8, "line": {"width": 0.5, "color": "white"}},
        )  # fmt: skip
    fig.update_layout(
        title={"text": space.title, "x": 0.02},
        height=380,
        margin={"l": 30, "r": 10, "t": 40, "b": 30},
        template="plotly_white",
        showlegend=False,
        yaxis={"scaleanchor": "x", "scaleratio": 1},
    )
    return fig


def explain_html(seed: int = 0) -> str:
    """The page: the three spaces side by side with P@1, R-Precision and MAP@R under each."""
    import plotly.offline

    from dmlopt.report.page import environment

    panels = []
    for space in toy_spaces(seed):
        figure = space_figure(space).to_html(
            full_html=False, include_plotlyjs=False, config={"displayModeBar": False}
        )
        panels.append({"space": space, "figure": figure, "scores": space.scores()})
    return (
        environment()
        .get_template("explain.html.j2")
        .render(panels=panels, plotly_js=plotly.offline.get_plotlyjs(), per_class=PER_CLASS)
    )
