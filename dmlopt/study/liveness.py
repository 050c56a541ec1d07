"""Which workers are alive: heartbeats on running trials, and failing the trials of the dead.

Optuna's own heartbeat exists only for its RDB storage, so dmlopt keeps its own, through any
storage (a database, or a ``dmlopt storage-proxy``): a worker writes a counter into its running
trial's system attributes every interval. Watchers judge liveness by whether that counter
*moves*, timed on their own clock, so clocks that disagree between machines cannot fail a
live worker. A running trial whose beat has not moved for :data:`GRACE_BEATS` intervals is
failed, and a copy of it (same parameters) is queued as WAITING for a surviving worker.

A database outage stops every beat at once, and a watcher cannot tell the database's silence
from the workers' deaths. So a watcher starts watching afresh whenever its storage met an
outage since its last look (a call failed, or retried, or hung:
:attr:`~dmlopt.study.storage.RetryingStorage.recoveries`): a worker is failed only for a grace
period of silence seen with the database up. Workers retry at least once per interval and beat
at a fixed rate (at once after a call that waited out an outage), so after an outage the live
ones beat within about two intervals, inside the grace of three.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from dmlopt.errors import DmloptError
from dmlopt.study.storage import RETRIES

BEAT_ATTR = "dmlopt_heartbeat"
STALE_ATTR = "dmlopt_stale"  # set on a trial failed for a stopped heartbeat
GRACE_BEATS = 3  # intervals without a beat before a running trial is presumed dead

_log = logging.getLogger(__name__)


class StaleWatch:
    """Fails the running trials of ``study`` whose heartbeat stopped, and queues their retries.

    ``check()`` is cheap enough to call at every poll; it only acts on what it has watched for a
    whole grace period itself (so a fresh watcher never fails a trial at its first look)."""

    def __init__(self, study: optuna.Study, interval: float) -> None:
        self.study = study
        self.grace = GRACE_BEATS * interval
        self._seen: dict[int, tuple[object, float]] = {}  # trial id -> (beat, when it moved)
        self._recoveries = self._outages_met()
        self._lock = threading.Lock()

    def _outages_met(self) -> int:
        """Outages the study's storage has met so far (0 for one that does not retry)."""
        return int(getattr(self.study._storage, "recoveries", 0))

    def check(self, *, own: int | None = None) -> list[int]:
        """Fail stale trials (never ``own``); returns the numbers of those it failed."""
        with self._lock:
            try:
                running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            except Exception:
                # An outage stops every beat: start afresh once reads work again, so nobody
                # is failed for the database's silence.
                self._seen.clear()
                raise
            recoveries = self._outages_met()
            if recoveries != self._recoveries:  # beats stopped by an outage prove nothing
                self._recoveries = recoveries
                self._seen.clear()
            now = time.monotonic()
            seen: dict[int, tuple[object, float]] = {}
            stale = []
            for trial in running:
                beat = trial.system_attrs.get(BEAT_ATTR)
                last = self._seen.get(trial._trial_id)
                moved = last is None or last[0] != beat
                seen[trial._trial_id] = (beat, now) if moved else last  # type: ignore[assignment]
                silent = now - seen[trial._trial_id][1]
                if not moved and silent > self.grace and trial._trial_id != own:
                    stale.append(trial)
            self._seen = seen
            return [t.number for t in stale if self._fail(t)]

    def _fail(self, trial: optuna.trial.FrozenTrial) -> bool:
        storage = self.study._storage
        try:
            # Marked first: a finished trial takes no more attributes.
            storage.set_trial_system_attr(trial._trial_id, STALE_ATTR, True)
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                return False
        except UpdateFinishedTrialError:
            return False  # another watcher, or the worker itself, got there first
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) <= RETRIES:
            # The same parameters again, as Optuna's RetryFailedTrialCallback queues them, but
            # without the dead attempt's partial fold scores.
            retry = optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                system_attrs={"failed_trial": history[0], "retry_history": history},
            )
            self.study.add_trial(retry)
        _log.warning("trial %d: its worker stopped beating; failed and queued again", trial.number)
        return True


class Liveness:
    """A background thread for one worker: beats for its running trial and watches the others
    (so a dead worker's trial is failed while this one trains, not only between trials)."""

    def __init__(self, study: optuna.Study, interval: float) -> None:
        self.study = study
        self.interval = interval
        self.watch = StaleWatch(study, interval)
        self.trial_id: int | None = None
        self._beats = 0
        self._switch = threading.Lock()  # guards trial_id between the two threads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dmlopt-liveness", daemon=True)

    def __enter__(self) -> Liveness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    @contextlib.contextmanager
    def beating(self, trial_id: int) -> Iterator[None]:
        """Beat for ``trial_id`` while the block runs (one beat at once)."""
        with self._switch:
            self.trial_id = trial_id
        self.beat()
        try:
            yield
        finally:
            with self._switch:
                self.trial_id = None

    def beat(self) -> None:
        trial_id = self.trial_id
        if trial_id is None:
            return
        self._beats += 1
        try:
            self.study._storage.set_trial_system_attr(trial_id, BEAT_ATTR, self._beats)
        except UpdateFinishedTrialError:
            # Failed by a watcher that thought us dead: nothing to beat for, unless the main
            # thread has moved on to its next trial while this write was retrying.
            with self._switch:
                if self.trial_id == trial_id:
                    self.trial_id = None

    def _run(self) -> None:
        # A fixed rate: slow storage calls shorten the wait rather than add to it, and after
        # one that waited out an outage the next beat is at once.
        due = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            due = time.monotonic() + self.interval
            try:
                self.beat()
                self.watch.check(own=self.trial_id)
            except DmloptError:
                return  # the storage is lost: the main thread reports it
            except Exception as e:  # an outage: the main thread's calls retry and report it
                _log.debug("liveness check failed: %s", e)


def wait_until_idle(study: optuna.Study, interval: float) -> None:
    """Block until no trial of ``study`` is running, failing those of dead workers."""
    watch = StaleWatch(study, interval)
    while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        watch.check()
        time.sleep(min(interval, 10.0))
