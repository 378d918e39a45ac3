"""Scheduler: periodic housekeeping (retention, idempotency records, expired conversations), batch
polling, the webhooks of deferred results and the daily reconciliation.

Every worker runs the scheduler; each tick of each job runs once across all of them: the first
worker to insert the (job, tick) row into `job_run` runs it, the others find the row and skip. The
claim is a short committed write, so a worker that dies mid-job only loses that tick's run (the
next tick runs as usual), and it works alike on SQLite and PostgreSQL, with or without Redis.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from flask import Flask
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from gateway import db
from gateway.models import CacheEntry, ChangeEvent, ContentLog, JobRun, SemanticEntry, utcnow

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


def prune_content_log() -> None:
    """Conversations past their org's retention (content logging): deleted in slices of 5,000 rows,
    each its own short transaction, so the writer is never held up for long."""
    now = utcnow()
    while True:
        with db.write_lock, db.session_scope() as session:
            ids = list(session.scalars(select(ContentLog.id).where(ContentLog.expires_at < now).limit(5000)))
            if ids:
                session.execute(delete(ContentLog).where(ContentLog.id.in_(ids)))
        if len(ids) < 5000:
            return


def poll_batches() -> None:
    """Parts stored but never submitted (their process stopped) submitted; open provider batches
    polled (each part on its own backoff); finished batches settled."""
    from gateway.services import batch_settle, batch_submit

    batch_submit.recover_due()
    batch_settle.poll_due()


def deliver_webhooks() -> None:
    """Deferred results POSTed to their apps' webhooks; failed deliveries retried with backoff."""
    from gateway.services import webhooks

    webhooks.deliver_due()


def prune_batches() -> None:
    """Batch files and results past their retention, and the deferred requests they answered."""
    from gateway.services import arbitrage, batch_settle

    with db.write_lock, db.session_scope() as session:
        batch_settle.prune(session, utcnow())
        arbitrage.prune(session, utcnow())


def prune_job_runs() -> None:
    """Claims only need to outlive their tick."""
    with db.write_lock, db.session_scope() as session:
        session.execute(delete(JobRun).where(JobRun.created_at < utcnow() - timedelta(days=2)))


def claim(job: str, tick: int) -> bool:
    """True for the one worker that claims this tick of this job."""
    try:
        with db.write_lock, db.session_scope() as session:
            session.add(JobRun(job=job, tick=tick))
    except IntegrityError:
        return False
    return True


def once(job, every_seconds: int):
    """`job`, run at most once per tick of `every_seconds` across every worker."""
    def run() -> None:
        if claim(job.__name__, int(time.time() // every_seconds)):
            job()
    run.__name__ = job.__name__
    return run


# (job, interval in seconds): each runs once per interval across every worker.
SCHEDULE = [(prune_change_events, 3600), (prune_expired_savings, 900), (prune_idempotency_records, 3600),
            (prune_job_runs, 86400), (poll_batches, 5), (deliver_webhooks, 5), (prune_batches, 3600),
            (prune_content_log, 3600)]


def init_app(app: Flask) -> None:
    app.extensions["jobs"] = [job for job, _ in SCHEDULE] + [reconcile_yesterday]


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
    for job, every in SCHEDULE:
        _scheduler.add_job(once(job, every), "interval", seconds=every, id=job.__name__)
    # 03:10 UTC, once a day across workers: the providers' reports for the day before have settled by then
    _scheduler.add_job(once(_in_app(app, reconcile_yesterday), 86400), "cron", hour=3, minute=10,
                       id="reconcile_yesterday")
    _scheduler.start()


def stop() -> None:
    global _scheduler
    if _scheduler is not None:
        _scheduler.shutdown(wait=False)
        _scheduler = None
