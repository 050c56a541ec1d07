"""The settings of ``workers:`` by their effect, in-process and in seconds."""

from __future__ import annotations

import time
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from dmlopt.config import parse_study
from dmlopt.study.liveness import BEAT_ATTR, STALE_ATTR, Liveness, StaleWatch
from dmlopt.study.storage import RetryingStorage, StorageLost
from tests.conftest import TINY_STUDY, deep_update


def _workers(**settings: float) -> Any:
    return parse_study(deep_update(TINY_STUDY, {"workers": settings})).workers


def _study_with_running_trial() -> tuple[optuna.Study, int]:
    study = optuna.create_study(direction="maximize")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study._storage.set_trial_system_attr(trial._trial_id, BEAT_ATTR, 1)
    return study, trial._trial_id


@pytest.mark.parametrize(("heartbeat", "failed"), [(0.1, True), (5.0, False)])
def test_heartbeat_seconds_sets_when_a_silent_trial_is_failed(
    heartbeat: float, failed: bool
) -> None:
    """A trial silent for 0.6 s is dead with 0.1 s beats (grace 0.3 s), alive with 5 s beats;
    a dead one is failed, marked, and queued again with its parameters."""
    interval = _workers(heartbeat_seconds=heartbeat).heartbeat_seconds
    study, trial_id = _study_with_running_trial()
    watch = StaleWatch(study, interval)
    watch.check()
    time.sleep(0.6)
    watch.check()
    trial = study._storage.get_trial(trial_id)
    assert (trial.state == TrialState.FAIL) is failed
    waiting = study.get_trials(states=(TrialState.WAITING,))
    if failed:
        assert trial.system_attrs[STALE_ATTR] is True
        assert [t.params for t in waiting] == [trial.params]
    else:
        assert trial.state == TrialState.RUNNING and not waiting


def test_a_beating_trial_is_never_failed() -> None:
    study, trial_id = _study_with_running_trial()
    with Liveness(study, 0.05) as live, live.beating(trial_id):
        watcher = StaleWatch(study, 0.05)
        for _ in range(8):
            watcher.check()
            time.sleep(0.05)
    assert study._storage.get_trial(trial_id).state == TrialState.RUNNING


class _Down(optuna.storages.InMemoryStorage):
    """A storage whose database is down until ``until`` (monotonic time)."""

    def __init__(self, until: float) -> None:
        super().__init__()
        self.until = until

    def get_all_studies(self) -> list[Any]:
        if time.monotonic() < self.until:
            raise sa.exc.OperationalError("SELECT", {}, ConnectionError("server closed"))
        return super().get_all_studies()


@pytest.mark.parametrize(("patience", "survives"), [(3.0, True), (0.5, False)])
def test_storage_retry_seconds_sets_how_long_an_outage_is_ridden_out(
    patience: float, survives: bool
) -> None:
    """An outage of 1.5 s: survived with 3 s of patience, fatal (one line) with 0.5 s."""
    retry = _workers(storage_retry_seconds=patience).storage_retry_seconds
    storage = RetryingStorage(  # type: ignore[abstract]
        _Down(time.monotonic() + 1.5), "postgresql://u:pw@h/db", retry
    )
    if survives:
        assert storage.get_all_studies() == []
    else:
        with pytest.raises(StorageLost, match=r"^lost storage postgresql://u:\*\*\*@h/db for"):
            storage.get_all_studies()
        with pytest.raises(StorageLost):  # and at once from then on
            storage.get_all_studies()


def test_a_refusal_is_not_retried() -> None:
    class Refusing(optuna.storages.InMemoryStorage):
        calls = 0

        def get_all_studies(self) -> list[Any]:
            Refusing.calls += 1
            raise sa.exc.IntegrityError("INSERT", {}, ValueError("duplicate"))

    storage = RetryingStorage(Refusing(), "sqlite://", 60)  # type: ignore[abstract]
    with pytest.raises(sa.exc.IntegrityError):
        storage.get_all_studies()
    assert Refusing.calls == 1
