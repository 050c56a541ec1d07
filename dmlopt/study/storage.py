"""Where studies live: the Optuna storage, and dmlopt's own table of test scores beside it.

The test set is scored once per study and loss. That is a database fact, not a convention: the
``dmlopt_test_scores`` table has a unique ``(study_name, attempt)`` constraint, a first scoring
is attempt 0, and only an explicit rescore inserts attempt n + 1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from dmlopt.errors import DmloptError

T = TypeVar("T")

HEARTBEAT_SECONDS = 60  # a worker that stops beating this long is presumed dead
CREATE_ATTEMPTS = 3  # see _opening
RETRIES = 2  # a dead worker's trial is queued again this many times


def storage_url(cli: str | None, study_file: str | None, out_dir: Path) -> str:
    """``--storage``, else ``DMLOPT_STORAGE``, else the study file's, else SQLite in ``out_dir``."""
    url = cli or os.environ.get("DMLOPT_STORAGE") or study_file
    return url or f"sqlite:///{out_dir / 'study.db'}"


_SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "secret", "token")


def redact(url: str) -> str:
    """The URL with any password masked (also one passed as a query parameter)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "<malformed storage URL>"
    hidden = {k: "***" for k in parsed.query if any(s in k.lower() for s in _SECRET_QUERY_KEYS)}
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True)


def open_storage(url: str, *, create: bool = True) -> optuna.storages.RDBStorage:
    """The Optuna storage at ``url``, tables created if needed; unreachable is a user error.

    With ``create=False`` a SQLite file must already exist (commands that only read a study
    must not leave an empty database behind)."""
    _prepare(url, create=create)
    # Heartbeats are "experimental" in Optuna's terms but are how dead workers are detected.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return _opening(
        url,
        lambda: optuna.storages.RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_SECONDS,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=RETRIES
            ),
        ),
    )


def _opening(url: str, open_: Callable[[], T]) -> T:
    """``open_()``, which connects and may create tables, with database errors as user errors.

    Workers launched together on an empty database race to create the same tables; the losers
    see "already exists" errors and succeed once the winner is done, so a failure is retried
    a few times before it is reported (an unreachable server costs those retries too)."""
    for attempt in range(CREATE_ATTEMPTS):
        try:
            return open_()
        except SQLAlchemyError as e:
            if attempt == CREATE_ATTEMPTS - 1:
                raise DmloptError(f"cannot open storage {redact(url)}: {_reason(e)}") from None
            time.sleep(0.5 * (attempt + 1))
        except (ImportError, ValueError) as e:  # a missing driver, a malformed URL part
            raise DmloptError(f"cannot open storage {redact(url)}: {_reason(e)}") from None
    raise AssertionError("unreachable")


def _prepare(url: str, *, create: bool = True) -> None:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise DmloptError(f"malformed storage URL {redact(url)}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if not create and not path.is_file():
            raise DmloptError(f"no study database at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)


def _reason(error: Exception) -> str:
    orig = getattr(error, "orig", None) or error
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


_metadata = sa.MetaData()
test_scores = sa.Table(
    "dmlopt_test_scores",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_name", sa.String(512), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    # MySQL's TEXT stops at 64 KB; a result with many reruns can be larger.
    sa.Column("result", sa.Text().with_variant(mysql.LONGTEXT(), "mysql"), nullable=False),
    sa.UniqueConstraint("study_name", "attempt", name="dmlopt_test_scored_once"),
)


class AlreadyScored(DmloptError):
    """A test set that was scored before, and no rescore was asked for."""


class ScoreBook:
    """The record of test-set scorings, one row per scoring, in the study's database."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """``create=False`` opens it read-only: no table is created (reports only read)."""
        _prepare(url, create=create)

        def connect() -> tuple[sa.Engine, bool]:
            engine = sa.create_engine(url)
            if create:
                _metadata.create_all(engine)
                return engine, True
            return engine, sa.inspect(engine).has_table(test_scores.name)

        self.engine, self.exists = _opening(url, connect)

    def study_names(self) -> list[str]:
        """Every ``<study>/<loss>`` with a recorded scoring."""
        if not self.exists:
            return []
        query = sa.select(test_scores.c.study_name).distinct().order_by(test_scores.c.study_name)
        with self.engine.connect() as conn:
            return [row.study_name for row in conn.execute(query)]

    def latest(self, study_name: str) -> tuple[int, dict[str, Any]] | None:
        """``(attempt, result)`` of the newest scoring of ``study_name``, or ``None``."""
        if not self.exists:
            return None
        query = (
            sa.select(test_scores.c.attempt, test_scores.c.result)
            .where(test_scores.c.study_name == study_name)
            .order_by(test_scores.c.attempt.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (row.attempt, json.loads(row.result))

    def record(self, study_name: str, result: dict[str, Any], *, rescore: bool) -> int:
        """Store a scoring; returns its attempt number. Refuses a second one unless ``rescore``."""
        previous = self.latest(study_name)
        attempt = 0 if previous is None or not rescore else previous[0] + 1
        row = {
            "study_name": study_name,
            "attempt": attempt,
            "created_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
            "result": json.dumps(result),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(test_scores.insert().values(**row))
        except IntegrityError:
            raise AlreadyScored(
                f"the test set of {study_name} was already scored; pass --rescore to score it again"
            ) from None
        return attempt
