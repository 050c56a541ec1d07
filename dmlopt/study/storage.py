"""Where studies live: the Optuna storage, and dmlopt's own table of test scores beside it.

The test set is scored once per study and loss. That is a database fact, not a convention: the
``dmlopt_test_scores`` table has a unique ``(study_name, attempt)`` constraint, a first scoring
is attempt 0, and only an explicit rescore inserts attempt n + 1.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import optuna
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from dmlopt.config import shorten
from dmlopt.errors import DmloptError

T = TypeVar("T")

CREATE_ATTEMPTS = 3  # see _opening
RETRIES = 2  # a dead worker's trial is queued again this many times
CONNECT_TIMEOUT = 10  # seconds; an unreachable host must not hang a worker for minutes
MAX_RETRY_DELAY = 15.0  # seconds between retries of a call, at most
_SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "secret", "token")
#: The driver SQLAlchemy picks for a URL without one, and the driver the extras install.
_DRIVERS = {"postgresql": ("psycopg", "psycopg2"), "mysql": ("MySQLdb", "pymysql")}


def storage_url(cli: str | None, study_file: str | None, out_dir: Path) -> str:
    """``--storage``, else ``DMLOPT_STORAGE``, else the study file's, else SQLite in ``out_dir``."""
    url = cli or os.environ.get("DMLOPT_STORAGE") or study_file
    return url or f"sqlite:///{out_dir / 'study.db'}"


def _split_userinfo(url: str) -> tuple[str, str | None, str]:
    """``(before the password, the raw password or None, from the last '@' on)``.

    The authority ends at the *last* '@', so a password holding an unescaped '@', ':' or '/'
    is still seen whole (SQLAlchemy would stop it at the first '@')."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url, None, ""
    at = rest.rindex("@")
    user, colon, password = rest[:at].partition(":")
    if not colon:
        return url, None, ""
    return f"{scheme}://{user}:", password, rest[at:]


def redact(url: str) -> str:
    """The URL with its password masked whatever it holds, and secrets in the query too."""
    if "://" not in url:
        return "<malformed storage URL>"  # no telling which part is secret
    head, password, tail = _split_userinfo(url)
    masked = url if password is None else f"{head}***{tail}"
    base, q, query = masked.partition("?")
    if not q:
        return masked
    parts = []
    for item in query.split("&"):
        key, eq, _ = item.partition("=")
        secret = eq and any(s in unquote(key).lower() for s in _SECRET_QUERY_KEYS)
        parts.append(f"{key}=***" if secret else item)
    return f"{base}?{'&'.join(parts)}"


def _secrets(url: str) -> list[str]:
    """Every form the URL's password may take in a driver's message."""
    _, password, _ = _split_userinfo(url)
    return [p for p in {password, unquote(password or "")} if p]


def _scrub(text: str, url: str) -> str:
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def normalize_url(url: str) -> str:
    """``url`` as SQLAlchemy must see it: a password's reserved characters percent-encoded,
    and a URL without a driver (``postgresql://``) given the driver that is installed."""
    head, password, tail = _split_userinfo(url)
    if password is not None:
        url = f"{head}{quote(unquote(password), safe='')}{tail}"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise DmloptError(f"malformed storage URL {redact(url)}") from None
    backend = parsed.get_backend_name()
    if backend in _DRIVERS and "+" not in parsed.drivername:
        default, fallback = _DRIVERS[backend]
        if importlib.util.find_spec(default) is None and importlib.util.find_spec(fallback):
            parsed = parsed.set(drivername=f"{backend}+{fallback}")
            return parsed.render_as_string(hide_password=False)
    return url


class StorageLost(DmloptError):
    """The database stayed unreachable for longer than the worker was told to wait."""


def _transient(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a lost connection rather than a refusal."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (sa.exc.OperationalError, sa.exc.InterfaceError, ConnectionError)):
            return True
        if isinstance(e, sa.exc.DBAPIError) and e.connection_invalidated:
            return True
        code = getattr(e, "code", None)
        if callable(code) and getattr(code(), "name", None) in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            return True  # grpc.RpcError of a proxy that is down or unreachable
        e = e.__cause__ or e.__context__
    return False


class RetryingStorage(optuna.storages.BaseStorage):
    """Any Optuna storage whose calls survive a database outage.

    A call that fails for a lost connection is retried with backoff (0.5 s doubling to
    ``max_delay``, 15 s at most) for up to ``patience`` seconds; past that :class:`StorageLost`
    is raised, and every later call raises it at once (a worker that gave up must not wait again
    while it exits).

    :attr:`recoveries` counts the calls that met an outage, however they ended: those that took
    longer than ``max_delay``, which every retried call does (and, through a proxy that retries
    on its own, an outage is a call that hangs). Heartbeats stopped meanwhile are the outage's,
    not dead workers' (:mod:`dmlopt.study.liveness`)."""

    def __init__(
        self,
        inner: optuna.storages.BaseStorage,
        url: str,
        patience: float,
        max_delay: float = MAX_RETRY_DELAY,
    ) -> None:
        self.inner = inner
        self.url = url
        self.patience = patience
        self.max_delay = min(max_delay, MAX_RETRY_DELAY)
        self.lost = False
        self.recoveries = 0  # see above

    def remove_session(self) -> None:
        self.inner.remove_session()

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        deadline = start + self.patience
        delay = min(0.5, self.max_delay)
        try:
            while True:
                if self.lost:
                    raise StorageLost(f"lost storage {redact(self.url)}")
                try:
                    return getattr(self.inner, name)(*args, **kwargs)
                except Exception as e:
                    if not _transient(e):
                        raise
                    if time.monotonic() + delay > deadline:
                        self.lost = True
                        raise StorageLost(
                            f"lost storage {redact(self.url)} for over {self.patience:g} s: "
                            f"{_scrub(_reason(e), self.url)}"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, self.max_delay)
        finally:
            if time.monotonic() - start > self.max_delay:
                self.recoveries += 1


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return self.call(name, *args, **kwargs)

    method.__name__ = name
    return method


for _name in [
    n for n in vars(optuna.storages.BaseStorage) if not n.startswith("_") and n != "remove_session"
]:
    setattr(RetryingStorage, _name, _delegate(_name))
# The methods are set just above, so the class is concrete (mypy cannot see it).
RetryingStorage.__abstractmethods__ = frozenset()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def open_storage(
    url: str,
    *,
    create: bool = True,
    patience: float = 0.0,
    max_delay: float = MAX_RETRY_DELAY,
) -> optuna.storages.BaseStorage:
    """The Optuna storage at ``url`` (a database URL, or ``grpc://HOST:PORT`` for a
    ``dmlopt storage-proxy``), tables created if needed; unreachable is a user error.

    Calls that lose the connection are retried for ``patience`` seconds, at most ``max_delay``
    apart. With ``create=False`` a SQLite file must already exist (commands that only read a
    study must not leave an empty database behind)."""
    if url.startswith("grpc://"):
        proxy = _grpc_proxy(url)
        return RetryingStorage(proxy, url, patience, max_delay)  # type: ignore[abstract]
    url = normalize_url(url)
    _prepare(url, create=create)
    engine_kwargs: dict[str, Any] = {}
    if not is_sqlite(url):
        # A connection the server dropped (a restart) is replaced before use, not failed on.
        engine_kwargs = {"pool_pre_ping": True, "connect_args": _connect_args(url)}
    rdb = _opening(url, lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs))
    cached = optuna.storages._CachedStorage(rdb)  # as optuna.create_study would wrap it
    return RetryingStorage(cached, url, patience, max_delay)  # type: ignore[abstract]


def _connect_args(url: str) -> dict[str, Any]:
    return {"connect_timeout": CONNECT_TIMEOUT} if not is_sqlite(url) else {}


def _grpc_proxy(url: str) -> optuna.storages.BaseStorage:
    host, _, port = url.removeprefix("grpc://").rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise DmloptError(f"malformed storage URL {redact(url)}: expected grpc://HOST:PORT")
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise DmloptError("grpc:// storage needs grpcio: pip install 'dmlopt[proxy]'") from None
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna.storages.GrpcStorageProxy(host=host, port=int(port))


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
                raise DmloptError(
                    f"cannot open storage {redact(url)}: {_scrub(_reason(e), url)}"
                ) from None
            time.sleep(0.5 * (attempt + 1))
        except (ImportError, ValueError, TypeError) as e:  # a missing driver, a bad URL part
            raise DmloptError(
                f"cannot open storage {redact(url)}: {_scrub(_reason(e), url)}"
            ) from None
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
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DmloptError(f"cannot create {path.parent}: {e.strerror}") from None


def _reason(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    text = str(orig).strip()
    return shorten(text.splitlines()[0]) if text else type(orig).__name__


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
        if url.startswith("grpc://"):
            raise DmloptError(
                "test scores are kept in the database itself, which a storage proxy does not "
                "serve: search with --no-final here, then score with the database URL"
            )
        url = normalize_url(url)
        _prepare(url, create=create)

        def connect() -> tuple[sa.Engine, bool]:
            pre_ping = not is_sqlite(url)
            engine = sa.create_engine(url, pool_pre_ping=pre_ping, connect_args=_connect_args(url))
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
