"""Engine and session setup: one engine and one sessionmaker per process."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from domain import UserError
from settings import get_settings

READ_ONLY = "brainmri_read_only"


class DatabaseBusy(UserError):
    """Another process held the SQLite write lock past the busy timeout; the transaction was rolled back."""


def make_engine(url: str, *, busy_timeout_s: float = 30.0) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and write-locking transactions."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": busy_timeout_s, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not pysqlite, decide when a transaction begins (see the "begin" hook).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        if conn.get_execution_options().get(READ_ONLY):
            # A reader in WAL sees the last commit and never waits for a writer.
            conn.exec_driver_sql("BEGIN DEFERRED")
            return
        # A deferred transaction that reads and then writes fails at once in WAL when another
        # writer got in between, whatever the busy timeout; taking the lock up front makes it wait.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    return make_engine(settings.database_url, busy_timeout_s=settings.db_busy_timeout_s)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A short transaction: commits on success, rolls back on error.

    A write that waited past the busy timeout for another process's lock raises DatabaseBusy, in words.
    """
    try:
        with get_sessionmaker()() as session, session.begin():
            yield session
    except OperationalError as exc:
        if "database is locked" not in str(exc.orig):
            raise
        timeout = get_settings().db_busy_timeout_s
        raise DatabaseBusy(
            f"The database is busy: another process held its write lock for over {timeout:g} s. "
            "Nothing was saved; try again in a moment."
        ) from exc


@contextmanager
def read_scope() -> Iterator[Session]:
    """A transaction for reading only: on SQLite it takes no write lock, so the pages' polling never queues
    behind a worker's writes. Nothing written in it is kept."""
    with get_sessionmaker()() as session:
        session.connection(execution_options={READ_ONLY: True})
        # Closed without a commit: the pool rolls the connection back, while the objects read stay loaded
        # (a rollback here would expire them).
        yield session


def reset_engine() -> None:
    """Forget the cached engine (after a fork, or when settings change in tests)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
