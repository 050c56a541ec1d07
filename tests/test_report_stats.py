"""Which methods are within noise of the best: Welch's t-test, Holm's correction, the sentence."""

from __future__ import annotations

import pytest
from scipy import stats

from dmlopt.report.stats import compare, holm, welch_p


def test_holm_adjusts_step_down_and_stays_monotone() -> None:
    # sorted p: 0.01 (x3), 0.03 (x2), 0.04 (x1) -> 0.03, 0.06, then max(0.06, 0.04)
    assert holm({"a": 0.04, "b": 0.01, "c": 0.03}) == pytest.approx(
        {"b": 0.03, "c": 0.06, "a": 0.06}
    )
    assert holm({"a": 0.6, "b": 0.5}) == {"b": 1.0, "a": 1.0}  # capped at 1


def test_welch_p_is_scipys_unequal_variance_test() -> None:
    a, b = [0.61, 0.63, 0.60, 0.64], [0.55, 0.59, 0.50]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p([0.5, 0.5], [0.5, 0.5]) == 1.0  # no spread, same mean
    assert welch_p([0.5, 0.5], [0.4, 0.4]) == 0.0  # no spread, different means


def test_a_clearly_worse_method_is_not_within_noise() -> None:
    values = {
        "best": [0.700, 0.705, 0.698, 0.702, 0.701],
        "close": [0.699, 0.703, 0.697, 0.700, 0.704],
        "worse": [0.500, 0.505, 0.498, 0.502, 0.499],
    }
    result = compare(values)
    assert result.best == "best" and result.testable
    assert result.within_noise == {"best", "close"}
    assert result.adjusted_p["worse"] < 0.05 <= result.adjusted_p["close"]
    assert result.sentence("concatenated MAP@R") == (
        "2 of 3 methods are within noise of the best (best) on concatenated MAP@R."
    )


def test_few_reruns_are_said_to_have_little_power() -> None:
    result = compare({"a": [0.5, 0.6], "b": [0.55, 0.5]})
    assert "with 2 reruns per method only large differences can be detected" in result.sentence(
        "MAP@R"
    )
    assert "detected" not in result.sentence("MAP@R", caveat=False)


def test_one_rerun_cannot_be_tested() -> None:
    result = compare({"a": [0.5], "b": [0.6], "c": [0.4]})
    assert result.best == "b" and not result.testable and result.adjusted_p == {}
    assert "single rerun" in result.sentence("MAP@R")


def test_nothing_or_one_method() -> None:
    assert compare({}).best is None and "No method" in compare({}).sentence("MAP@R")
    assert "nothing to compare" in compare({"a": [0.1, 0.2]}).sentence("MAP@R")
