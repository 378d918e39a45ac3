"""The claims that make deferred requests and webhook deliveries run once across workers hold on
PostgreSQL (the scale-out database), not only on SQLite: two workers that read the same rows and
then claim them at the same moment each get a disjoint share, every row claimed exactly once.

Real parts: the private PostgreSQL cluster of tests/test_postgres.py (a database per test), the
gateway on it (conftest's gateway_factory), two concurrent sessions on two connections. Each
worker is a greenlet (psycopg waits cooperatively under gevent); the process's own write lock is
lifted, as it would not exist between two processes, and both workers are held at their UPDATE
until the other has read the rows too, so the database alone decides.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta

import gevent
import orjson
import pytest
from sqlalchemy import event, select

from gateway import db
from gateway.models import DeferredRequest, utcnow
from gateway.services import arbitrage, webhooks
from gateway.services.batch_common import z
from tests.test_postgres import pg_cluster, pg_url  # noqa: F401  (fixtures)

ROWS = 12


@pytest.fixture
def pgw(pg_url, gateway_factory, monkeypatch):  # noqa: F811
    gw = gateway_factory(database_url=pg_url)
    assert db.engine().dialect.name == "postgresql"
    arbitrage.stop()  # this test's workers alone claim the rows
    monkeypatch.setattr(db, "write_lock", contextlib.nullcontext())  # two processes: two locks, none shared
    return gw


def _update(statement: str) -> bool:
    return statement.lstrip().upper().startswith("UPDATE DEFERRED_REQUEST")


@contextlib.contextmanager
def meet_at_each_update(racers: list[gevent.Greenlet], written: list[int]):
    """Every UPDATE of deferred_request by a racer waits until the other racer reaches its own;
    `written` gets each such UPDATE's count of rows changed."""
    barrier = threading.Barrier(len(racers), timeout=10)

    def before(conn, cursor, statement, params, context, executemany):
        if _update(statement) and gevent.getcurrent() in racers:
            with contextlib.suppress(threading.BrokenBarrierError):  # the other one has finished
                barrier.wait()

    def after(conn, cursor, statement, params, context, executemany):
        if _update(statement) and gevent.getcurrent() in racers:
            written.append(cursor.rowcount)

    event.listen(db.engine(), "before_cursor_execute", before)
    event.listen(db.engine(), "after_cursor_execute", after)
    try:
        yield
    finally:
        event.remove(db.engine(), "before_cursor_execute", before)
        event.remove(db.engine(), "after_cursor_execute", after)
        barrier.abort()


def add_rows(org_id: int, **values) -> list[int]:
    now = utcnow() - timedelta(seconds=5)
    with db.session_scope() as s:
        rows = [DeferredRequest(request_id=f"dreq_pg{i:04d}", org_id=org_id, key_id=0, user_id=None, app_id=None,
                                provider="fakebatch", body_z=z(orjson.dumps({"model": "batchy"})), held_micros=1,
                                hold_ref=None, created_at=now, **values) for i in range(ROWS)]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def race(fn) -> list:
    """Two workers run `fn` at once; each row is written by exactly one claim (the database's
    count of rows each UPDATE changed sums to the rows), and their shares are returned."""
    racers = [gevent.Greenlet(fn) for _ in range(2)]
    written: list[int] = []
    with meet_at_each_update(racers, written):
        for g in racers:
            g.start()
        gevent.joinall(racers, raise_error=True, timeout=60)
    assert all(g.successful() for g in racers)
    assert sum(written) == ROWS, written
    return [g.value for g in racers]


def test_deferred_rows_are_claimed_once_by_racing_workers(pgw, monkeypatch):
    org = pgw.org()
    ids = add_rows(org.id, status="queued", webhook_state="none")
    monkeypatch.setattr(arbitrage.CONFIG, "arbitrage_max_requests", ROWS)
    now = utcnow()
    shares = race(lambda: [r.id for r in arbitrage._claim(org.id, "fakebatch", now)[1]])
    assert sorted(shares[0] + shares[1]) == sorted(ids)  # every row claimed...
    assert not set(shares[0]) & set(shares[1])  # ...by one worker
    with db.session_scope() as s:
        claimed = s.execute(select(DeferredRequest.claim_token, DeferredRequest.status)
                            .where(DeferredRequest.id.in_(ids))).all()
    assert {status for _, status in claimed} == {"claimed"}
    assert len({token for token, _ in claimed}) == len([x for x in shares if x])  # one token per winner


def test_webhook_deliveries_are_claimed_once_by_racing_workers(pgw):
    org = pgw.org()
    ids = add_rows(org.id, status="failed", error='{"message": "gone"}', webhook_state="pending")
    now = utcnow()

    def worker() -> list[int]:
        with db.session_scope() as s:
            due = webhooks._due(s, now)  # both read every row as due...
        assert sorted(r.id for r in due) == sorted(ids)
        return [r.id for r in due if webhooks._claim(r, now)]  # ...and claim them at the same moment

    shares = race(worker)
    assert sorted(shares[0] + shares[1]) == sorted(ids)
    assert not set(shares[0]) & set(shares[1])
    with db.session_scope() as s:
        leases = set(s.scalars(select(DeferredRequest.webhook_next_at).where(DeferredRequest.id.in_(ids))))
    assert leases == {now + timedelta(seconds=webhooks.LEASE_SECONDS)}
