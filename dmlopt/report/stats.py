"""Which methods are within noise of the best: Welch's t-test over the final reruns, Holm-corrected.

For one metric, the method with the highest mean over its reruns is the best. Every other method
is compared with it by a two-sided Welch t-test (unequal variances) on the per-rerun values, and
the p-values of those m - 1 comparisons are adjusted by Holm's step-down method, which controls
the family-wise error rate at ``alpha``. A method whose adjusted p-value is at least ``alpha`` is
*within noise of the best*: the reruns do not show it to be worse. That is not a proof of
equality: with few reruns only large differences can be detected, and the summary says so.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05
TEST_NAME = "two-sided Welch t-test against the best, Holm-corrected"
FEW_RERUNS = 5  # below this many reruns per method, only large differences are detectable


@dataclass(frozen=True)
class Comparison:
    """One metric over the methods' reruns: the best, and who is within noise of it."""

    best: str | None
    within_noise: frozenset[str]  # includes the best itself
    adjusted_p: dict[str, float]  # Holm-adjusted p-value of each other method against the best
    testable: bool  # every method has at least two reruns
    methods: int
    min_reruns: int

    def sentence(self, metric_label: str, *, caveat: bool = True) -> str:
        """A plain statement of the result, honest (with ``caveat``) about what too few reruns
        allow."""
        if self.best is None:
            return f"No method has a test score on {metric_label}."
        if self.methods == 1:
            return f"Only {self.best} has a test score on {metric_label}: nothing to compare."
        if not self.testable:
            return (
                f"{self.best} has the highest mean on {metric_label}, but with a single rerun "
                "per method no test can say which methods differ (n/a)."
            )
        text = (
            f"{len(self.within_noise)} of {self.methods} methods are within noise of the best "
            f"({self.best}) on {metric_label}"
        )
        if caveat and self.min_reruns < FEW_RERUNS:
            text += (
                f"; with {self.min_reruns} reruns per method only large differences can be "
                "detected, so 'within noise' means not shown to differ, not shown equal"
            )
        return text + "."


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test; reruns with no spread on both sides are decided by
    their means alone (equal: p = 1, different: p = 0), where the t statistic is undefined."""
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return 1.0 if math.isnan(p) else p


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (monotone, capped at 1)."""
    ordered = sorted(pvalues.items(), key=lambda kv: kv[1])
    m = len(ordered)
    adjusted: dict[str, float] = {}
    running = 0.0
    for i, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[name] = running
    return adjusted


def compare(values: Mapping[str, Sequence[float]], alpha: float = ALPHA) -> Comparison:
    """Compare methods on one metric, from each method's per-rerun ``values``."""
    scored = {k: list(v) for k, v in values.items() if v}
    if not scored:
        return Comparison(None, frozenset(), {}, False, 0, 0)
    best = max(scored, key=lambda k: statistics.fmean(scored[k]))
    min_reruns = min(len(v) for v in scored.values())
    testable = min_reruns >= 2
    if not testable:
        return Comparison(best, frozenset({best}), {}, False, len(scored), min_reruns)
    raw = {k: welch_p(scored[best], v) for k, v in scored.items() if k != best}
    adjusted = holm(raw)
    within = {best} | {k for k, p in adjusted.items() if p >= alpha}
    return Comparison(best, frozenset(within), adjusted, True, len(scored), min_reruns)
