"""Scheduler: periodic housekeeping (retention, idempotency records) and the daily reconciliation."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import Flask
from sqlalchemy import delete, func, select

from gateway import db
from gateway.models import CacheEntry, ChangeEvent, SemanticEntry, utcnow

log = logging.getLogger(__name__)

_scheduler = None


def prune_change_events() -> None:
    """Change events only need to outlive the slowest poller; keep a day, and always the newest:
    SQLite hands out max(id) + 1, so an emptied table would restart ids below what servers have seen."""
    with db.write_lock, db.session_scope() as session:
        newest = session.scalar(select(func.max(ChangeEvent.id)))
        if newest is None:
            return
        session.execute(delete(ChangeEvent).where(ChangeEvent.created_at < utcnow() - timedelta(days=1),
                                                  ChangeEvent.id < newest))


def prune_expired_savings() -> None:
    """Expired cache and semantic entries: memory forgets them by TTL, the tables here."""
    now = utcnow()
    with db.write_lock, db.session_scope() as session:
        session.execute(delete(CacheEntry).where(CacheEntry.expires_at < now))
        session.execute(delete(SemanticEntry).where(SemanticEntry.expires_at < now))


def prune_idempotency_records() -> None:
    """Idempotency records older than their 24 hours."""
    from gateway.stores import idempotency

    with db.write_lock, db.session_scope() as session:
        idempotency.prune(session)


def reconcile_yesterday() -> None:
    """Yesterday (UTC) against each provider's own usage and cost reports (services/reconciliation.py)."""
    from flask import current_app

    from gateway.services import reconciliation as reconcile

    day = utcnow().date() - timedelta(days=1)
    with db.write_lock, db.session_scope() as session:
        reconcile.reconcile(session, day, current_app.extensions["settings"].secret_key)


def init_app(app: Flask) -> None:
    app.extensions["jobs"] = [prune_change_events, prune_expired_savings, prune_idempotency_records, reconcile_yesterday]


def _in_app(app: Flask, job):
    def run() -> None:
        with app.app_context():
            job()
    run.__name__ = job.__name__
    return run


def start(app: Flask) -> None:
    global _scheduler
    if not app.extensions["settings"].start_jobs or _scheduler is not None:
        return
    from apscheduler.schedulers.gevent import GeventScheduler

    _scheduler = GeventScheduler(timezone="UTC")
    _scheduler.add_job(prune_change_events, "interval", hours=1, id="prune_change_events")
    _scheduler.add_job(prune_expired_savings, "interval", minutes=15, id="prune_expired_savings")
    _scheduler.add_job(prune_idempotency_records, "interval", hours=1, id="prune_idempotency_records")
    # 03:10 UTC: the providers' reports for the day before have settled by then
    _scheduler.add_job(_in_app(app, reconcile_yesterday), "cron", hour=3, minute=10, id="reconcile_yesterday")
    _scheduler.start()


def stop() -> None:
    global _scheduler
    if _scheduler is not None:
        _scheduler.shutdown(wait=False)
        _scheduler = None
