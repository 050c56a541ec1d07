"""The settings of ``workers:`` by their effect, in-process and in seconds."""

from __future__ import annotations

import contextlib
import itertools
import time
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from dmlopt.config import parse_study
from dmlopt.search_space import suggest
from dmlopt.study.liveness import BEAT_ATTR, STALE_ATTR, Liveness, StaleWatch
from dmlopt.study.progress import Progress
from dmlopt.study.runner import TrialLoop, open_study
from dmlopt.study.storage import RetryingStorage, StorageLost
from tests.conftest import TINY_STUDY, deep_update


def _workers(**settings: float) -> Any:
    return parse_study(deep_update(TINY_STUDY, {"workers": settings})).workers


SPACE = {"x": optuna.distributions.FloatDistribution(0, 1)}


def _two_workers(
    database: optuna.storages.BaseStorage, interval: float
) -> tuple[optuna.Study, optuna.Study]:
    """Two workers' views of one study on ``database``, each through a retrying storage of its
    own (retries at most ``interval`` apart, as a worker's)."""
    optuna.create_study(study_name="shared", storage=database, direction="maximize")

    def view() -> optuna.Study:
        storage = RetryingStorage(database, "postgresql://h/db", 60, interval)  # type: ignore[abstract]
        return optuna.load_study(study_name="shared", storage=storage)

    return view(), view()


def _silent_trial(study: optuna.Study) -> optuna.Trial:
    """A running trial that beat once and never again: its worker is dead."""
    trial = study.ask(SPACE)
    study._storage.set_trial_system_attr(trial._trial_id, BEAT_ATTR, 1)
    return trial


def _study_with_running_trial() -> tuple[optuna.Study, int]:
    study = optuna.create_study(direction="maximize")
    return study, _silent_trial(study)._trial_id


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


class _Outage(optuna.storages.InMemoryStorage):
    """One database shared by several workers, down from ``start``; reads are back at
    ``reads_back`` and writes at ``writes_back`` (monotonic times): one worker's retry gets
    through before another's."""

    start = reads_back = writes_back = 0.0

    def _up(self, back: float) -> None:
        if self.start <= time.monotonic() < back:
            raise sa.exc.OperationalError("SELECT", {}, ConnectionError("server closed"))

    def get_all_trials(self, *args: Any, **kwargs: Any) -> list[optuna.trial.FrozenTrial]:
        self._up(self.reads_back)
        return super().get_all_trials(*args, **kwargs)

    def set_trial_system_attr(self, *args: Any, **kwargs: Any) -> None:
        self._up(self.writes_back)
        super().set_trial_system_attr(*args, **kwargs)


def test_an_outage_is_nobodys_death() -> None:
    """The database is down for 2 s, over three grace periods, and the watcher's reads block
    in their retries meanwhile. A live worker whose beat gets through 0.2 s after the
    watcher's first read keeps its trial; a trial nobody beats for is still failed, a grace
    period after the database is back."""
    database = _Outage()
    interval = 0.2  # grace 0.6 s
    watcher, alive = _two_workers(database, interval)
    beaten, abandoned = alive.ask(SPACE), _silent_trial(alive)
    with Liveness(alive, interval) as live, live.beating(beaten._trial_id):
        watch = StaleWatch(watcher, interval)
        database.start = time.monotonic() + 0.3
        database.reads_back = database.start + 2.0
        database.writes_back = database.reads_back + 0.2
        while time.monotonic() < database.writes_back + 1.5:
            watch.check()
            time.sleep(interval / 2)
    states = {t.number: t.state for t in watcher.get_trials(deepcopy=False)}
    assert states[beaten.number] == TrialState.RUNNING, states
    assert states[abandoned.number] == TrialState.FAIL, states


def test_a_worker_taken_for_dead_moves_on(capsys: pytest.CaptureFixture[str]) -> None:
    """A worker silent past the grace period (paused, say) finds its trial failed by another
    worker when it writes again: it says so in one line and runs the next trial, the retry of
    its own, instead of crashing on the finished trial."""
    config = parse_study(deep_update(TINY_STUDY, {"search": {"n_trials": 2, "sampler": "random"}}))
    storage = optuna.storages.InMemoryStorage()
    study = open_study(config, "contrastive", storage, seed=0)
    other = StaleWatch(study, 1.0)
    ran: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        suggest(config.loss_space("contrastive"), trial)
        ran.append(trial.number)
        if trial.number == 0:  # another worker gives up on this one mid-trial
            other._fail(study._storage.get_trial(trial._trial_id))
        trial.set_user_attr("fold_scores", [0.5])
        return 0.5

    progress = Progress("", config.search.n_trials, enabled=False)
    TrialLoop(config, "contrastive", None, [], study, progress, objective).run()
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert ran == [0, 1, 2]
    retry = study.trials[1]
    assert retry.params == study.trials[0].params
    assert retry.system_attrs["retry_history"] == [0]
    assert capsys.readouterr().err.splitlines() == [
        "warning: trial 0 was failed by another worker that took this one for dead "
        "(no heartbeat); its retry is queued"
    ]


@pytest.mark.parametrize(("heartbeat", "gap"), [(0.1, (0.0, 0.3)), (30.0, (0.9, 1.3))])
def test_retries_come_at_least_once_per_heartbeat(
    heartbeat: float, gap: tuple[float, float]
) -> None:
    """During a 1.5 s outage a worker with 0.1 s beats retries every 0.1 s, so that it beats
    again right after; with 30 s beats it backs off (0.5 s, then 1 s)."""
    calls: list[float] = []

    class Counting(_Down):
        def get_all_studies(self) -> list[Any]:
            calls.append(time.monotonic())
            return super().get_all_studies()

    interval = _workers(heartbeat_seconds=heartbeat).heartbeat_seconds
    storage = RetryingStorage(  # type: ignore[abstract]
        Counting(time.monotonic() + 1.5), "postgresql://h/db", 60, interval
    )
    assert storage.get_all_studies() == []
    longest = max(b - a for a, b in itertools.pairwise(calls))
    assert gap[0] < longest < gap[1], calls


def test_a_slow_database_does_not_hide_a_dead_worker() -> None:
    """Every storage call takes 0.6 of an interval (slow, not out): a worker's thread beats and
    looks about every 1.2 intervals, the dead trial is still failed, and another worker's
    watch, looking every interval, never fails the live one."""
    interval = 0.25

    class Slow(optuna.storages.InMemoryStorage):
        def get_all_trials(self, *args: Any, **kwargs: Any) -> list[optuna.trial.FrozenTrial]:
            time.sleep(0.6 * interval)
            return super().get_all_trials(*args, **kwargs)

        def set_trial_system_attr(self, *args: Any, **kwargs: Any) -> None:
            time.sleep(0.6 * interval)
            super().set_trial_system_attr(*args, **kwargs)

    database = Slow()
    alive, other = _two_workers(database, interval)
    own, dead = alive.ask(SPACE), _silent_trial(alive)
    watch = StaleWatch(other, interval)
    with Liveness(alive, interval) as live, live.beating(own._trial_id):
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            watch.check()
            time.sleep(interval)
    assert database.get_trial(dead._trial_id).state == TrialState.FAIL
    assert database.get_trial(own._trial_id).state == TrialState.RUNNING


class _Flaky(optuna.storages.InMemoryStorage):
    """``get_all_studies`` hangs for ``hang`` seconds, or fails ``fails`` times and then raises
    ``then`` (or answers)."""

    def __init__(self, hang: float = 0.0, fails: int = 0, then: Exception | None = None) -> None:
        super().__init__()
        self.hang, self.fails, self.then = hang, fails, then

    def get_all_studies(self) -> list[Any]:
        time.sleep(self.hang)
        if self.fails:
            self.fails -= 1
            raise sa.exc.OperationalError("SELECT", {}, ConnectionError("server closed"))
        if self.then is not None:
            raise self.then
        return super().get_all_studies()


@pytest.mark.parametrize(
    ("inner", "outage"),
    [
        (_Flaky(), False),
        (_Flaky(hang=0.3), True),  # through a proxy, an outage is a call that hangs
        (_Flaky(fails=1), True),
        (_Flaky(fails=1, then=KeyError("gone")), True),  # met an outage, then another error
    ],
)
def test_calls_that_meet_an_outage_are_counted(inner: _Flaky, outage: bool) -> None:
    storage = RetryingStorage(inner, "postgresql://h/db", 60, 0.1)  # type: ignore[abstract]
    with contextlib.suppress(KeyError):
        storage.get_all_studies()
    assert storage.recoveries == int(outage)


def test_a_late_beat_does_not_silence_the_next_trial() -> None:
    """A beat for a trial that was failed meanwhile lands after the worker moved on to its
    next trial: the worker keeps beating for the new one."""
    study = optuna.create_study(direction="maximize")
    first, second = study.ask(SPACE), study.ask(SPACE)
    live = Liveness(study, 1.0)
    write = study._storage.set_trial_system_attr

    def late(trial_id: int, key: str, value: Any) -> None:
        if trial_id == first._trial_id:
            live.trial_id = second._trial_id  # the main thread moved on while this retried
            raise UpdateFinishedTrialError("already finished")
        write(trial_id, key, value)

    study._storage.set_trial_system_attr = late  # type: ignore[method-assign]
    live.trial_id = first._trial_id
    live.beat()
    assert live.trial_id == second._trial_id
    live.beat()
    assert study._storage.get_trial(second._trial_id).system_attrs[BEAT_ATTR] == 2
