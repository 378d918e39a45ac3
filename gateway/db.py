"""Engine (SQLite pragmas), sessionmaker, session_scope(), init_app.

Under gevent a SQLite lock wait blocks every greenlet, so writes from request handlers never
happen: the ledger writer and admin actions are short transactions; `write_lock` serialises
the writers of this process cooperatively.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask, g
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.routing import IntegerConverter

from gateway.settings import Settings, private_file

_engine: Engine | None = None
SessionLocal = sessionmaker(expire_on_commit=False)


class _WriteLock:
    """A process-wide lock for SQLite writers; a gevent lock once gevent is in use."""

    def __init__(self) -> None:
        self._lock = None

    def __enter__(self):
        if self._lock is None:
            from gevent.lock import BoundedSemaphore

            self._lock = BoundedSemaphore(1)
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()


write_lock = _WriteLock()


def make_engine(settings: Settings) -> Engine:
    url = settings.database_url
    if url.startswith("sqlite"):
        _private_sqlite_files(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 5})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record) -> None:
            cur = conn.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _private_sqlite_files(url: str) -> None:
    """The database and its -wal/-shm files 0600, created so before SQLite opens them."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return  # SQLite reports the missing folder itself
    private_file(path)
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            private_file(extra)


def init_engine(settings: Settings) -> Engine:
    global _engine
    if _engine is not None:
        _engine.dispose()
    _engine = make_engine(settings)
    SessionLocal.configure(bind=_engine)
    return _engine


def engine() -> Engine:
    assert _engine is not None, "database not initialised"
    return _engine


@contextmanager
def session_scope() -> Iterator[Session]:
    """A short transaction: commit on success, roll back on error."""
    session = SessionLocal()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def request_session() -> Session:
    """The admin views' session, on `g`, closed at teardown."""
    if "db" not in g:
        g.db = SessionLocal()
    return g.db


def _close(_exc: BaseException | None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


MAX_ROW_ID = 2**63 - 1  # the largest id the database can bind (BIGINT, SQLite's INTEGER)


class RowId(IntegerConverter):
    """`<int:...>` in every route: an id beyond MAX_ROW_ID names no row, so the route does not match
    (404) rather than reaching the database, which cannot bind it (a 500)."""

    def __init__(self, map, *args, **kwargs) -> None:  # noqa: A002 (werkzeug's signature)
        kwargs.setdefault("max", MAX_ROW_ID)
        super().__init__(map, *args, **kwargs)


def init_app(app: Flask) -> None:
    """Before any blueprint registers its routes (create_app calls this first)."""
    app.url_map.converters["int"] = RowId
    init_engine(app.extensions["settings"])
    app.teardown_appcontext(_close)
