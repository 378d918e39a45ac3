"""The single ledger writer: queued rows, batched inserts, credits settled, flush on shutdown.

Requests never write to the database: `enqueue()` holds the charge against the org's in-memory
balance and puts the row on a queue. One greenlet drains the queue in batches, inserts the rows,
deducts the charges and posts them to the credit log (one `charge` transaction per org per batch,
see services/credits.py) in one short transaction, then polls for admin changes (memo.py), so
balance reloads and commits never interleave. A batch that cannot be written is retried, then
spilled to `instance/ledger-spill.jsonl` and replayed at the next start: rows are never dropped.
The same transaction adds the batch's rollups (usage, party, daily party) and an error report per
failed request; before it, the rows are counted for Prometheus and the console's live hour.

Scaled out, an admin write anywhere publishes a nudge over Redis (memo.announce, stores/shared_bus.py)
and the loop polls at once on it; while that link is up it polls only every POLL_FALLBACK_SECONDS
otherwise, which catches a lost nudge. Without Redis (or while it is away) it polls every cycle.

Crash window: the loop writes every `sync_interval` (250 ms by default), and at once when
`ledger_flush_rows` rows (500) are queued. A graceful stop writes everything; a SIGKILL or power
loss loses only the rows queued since the last write (the last ~250 ms of requests).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import orjson
from flask import Flask
from gevent.lock import Semaphore
from gevent.queue import Empty, Queue
from sqlalchemy import bindparam, select, update

from gateway import db, metrics
from gateway.ledger import error_reports
from gateway.ledger.live import LIVE
from gateway.ledger.rollups import (
    groups,
    party_rollup,
    rollup,
    upsert_dlp_rollups,
    upsert_party_rollups,
    upsert_rollups,
)
from gateway.memo import MEMO
from gateway.models import CreditTransaction, DlpEvent, ErrorReport, LedgerEntry, Org, utcnow
from gateway.services.credits import charge_rows
from gateway.settings import private_file
from gateway.stores import shared_bus

log = logging.getLogger(__name__)

RETRIES = 3
POLL_FALLBACK_SECONDS = 5.0  # change-log poll period while Redis pub/sub delivers the nudges


class LedgerWriter:
    def __init__(self) -> None:
        self.queue: Queue = Queue()
        self.batch_size = 500
        self.flush_rows = 200
        self.interval = 0.25
        self._wake = gevent.event.Event()  # set when flush_rows rows are waiting
        self.spill_path: Path | None = None
        self._cycle_lock = Semaphore(1)
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False
        self._holding = False  # the loop has taken a batch and not yet written it
        self._nudged = False  # another process announced a change: poll at the next cycle
        self._polled = 0.0

    def init_app(self, app: Flask) -> None:
        settings = app.extensions["settings"]
        self.batch_size = settings.ledger_batch_size
        self.flush_rows = max(1, min(settings.ledger_flush_rows, settings.ledger_batch_size))
        self.interval = settings.sync_interval
        self.spill_path = settings.instance / "ledger-spill.jsonl"
        app.extensions["ledger_writer"] = self

    # ---- request side ----------------------------------------------------------------------
    def enqueue(self, row: dict[str, Any]) -> None:
        """Queue one ledger row; its charge counts against the org's balance at once."""
        row.setdefault("created_at", utcnow())
        MEMO.hold(row["org_id"], row["charge_micros"])
        self.queue.put((LedgerEntry, row))
        if self.queue.qsize() >= self.flush_rows:
            self._wake.set()

    def enqueue_record(self, model: type, row: dict[str, Any]) -> None:
        """Queue a row for another table written off the hot path (e.g. stored responses)."""
        row.setdefault("created_at", utcnow())
        self.queue.put((model, row))
        if self.queue.qsize() >= self.flush_rows:
            self._wake.set()

    def poll_soon(self) -> None:
        """A change was announced (Redis pub/sub): pick it up now, not at the next fallback poll."""
        self._nudged = True
        self._wake.set()

    # ---- writer side -----------------------------------------------------------------------
    def start(self) -> None:
        if self._greenlet is None or self._greenlet.dead:
            self._stopping = False
            self.replay_spill()
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop the loop and write everything still queued (graceful shutdown)."""
        self._stopping = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)
            self._greenlet = None
        self.flush()

    def flush(self) -> None:
        """Write every queued row now and pick up admin changes; returns when the queue is empty."""
        while True:
            with self._cycle_lock:
                batch = self._take(block=False)
                if batch:
                    self._write(batch)
                self._sync()
            if self.queue.empty() and not self._holding:
                return
            gevent.sleep(0)  # the loop holds a batch taken before our turn: let it write it

    def _run(self) -> None:
        """One cycle per interval, sooner when flush_rows rows are waiting: a transaction per
        request would cost more than the request itself, and every SQLite call blocks the hub.
        A cycle that fails is logged, its rows go back on the queue, and the loop goes on (a dead
        loop would stop all writes)."""
        while not self._stopping:
            began = time.monotonic()
            self._wake.clear()
            self._holding = True
            batch = []
            try:
                batch = self._take(block=False)
                with self._cycle_lock:
                    if batch:
                        self._write(batch)
                        batch = []
                    self._sync(force=False)
            except Exception:  # not written, not spilled (the disk too): keep the rows for the next cycle
                log.exception("ledger writer cycle failed; %d rows kept queued", len(batch))
                for item in batch:
                    self.queue.put(item)
            finally:
                self._holding = False
            if self.queue.qsize() < self.flush_rows:
                self._wake.wait(timeout=max(0.0, self.interval - (time.monotonic() - began)))

    def _take(self, block: bool) -> list[tuple[type, dict]]:
        batch: list[tuple[type, dict]] = []
        try:
            batch.append(self.queue.get(block=block, timeout=self.interval if block else None))
        except Empty:
            return batch
        while len(batch) < self.batch_size:
            try:
                batch.append(self.queue.get_nowait())
            except Empty:
                break
        return batch

    def _sync(self, force: bool = True) -> None:
        if not force and not self._nudged and shared_bus.connected and (
                time.monotonic() - self._polled < POLL_FALLBACK_SECONDS):
            return
        self._nudged = False
        self._polled = time.monotonic()
        try:
            with db.session_scope() as session:
                MEMO.poll(session)
        except Exception:
            log.exception("config sync failed; will retry")

    def _write(self, batch: list[tuple[type, dict]]) -> None:
        metrics.observe(row for model, row in batch if model is LedgerEntry)
        LIVE.observe(row for model, row in batch if model is LedgerEntry)  # the console's last hour
        for attempt in range(1, RETRIES + 1):
            try:
                self._insert(batch)
                return
            except Exception:
                log.exception("ledger batch of %d rows failed (attempt %d)", len(batch), attempt)
                gevent.sleep(0.05 * attempt)
        self._spill(batch)

    def _insert(self, batch: list[tuple[type, dict]]) -> None:
        charges: dict[int, int] = defaultdict(int)
        counts: dict[int, int] = defaultdict(int)
        tables: dict[type, list[dict]] = defaultdict(list)
        for model, row in batch:
            if model is LedgerEntry:
                charges[row["org_id"]] += row["charge_micros"]
                counts[row["org_id"]] += int(row["charge_micros"] > 0)
                row = row.copy()  # the rollups read these two; the table has no columns for them
                row.pop("saved_mechanisms", None)
                row.pop("unread_writes", None)
            tables[model].append(row)
        now = utcnow()
        postings = [{**p, "created_at": now} for p in charge_rows(
            {org_id: (micros, counts[org_id]) for org_id, micros in charges.items()})]
        if postings:
            tables[CreditTransaction].extend(postings)
        ledger_rows = [row for model, row in batch if model is LedgerEntry]
        if failed := error_reports.from_ledger(ledger_rows):
            tables[ErrorReport].extend(failed)
        grouped = groups(ledger_rows)
        rollups = rollup(ledger_rows, grouped)
        provider_ids = {name: p.id for name, p in MEMO.catalog.providers.items()}
        with db.write_lock, db.session_scope() as session:
            for model, rows in tables.items():
                session.execute(model.__table__.insert(), rows)  # Core executemany: no ORM bookkeeping
            if rollups:
                upsert_rollups(session, rollups)
                upsert_party_rollups(session, party_rollup(ledger_rows, provider_ids, grouped))
            if DlpEvent in tables:
                upsert_dlp_rollups(session, tables[DlpEvent])
            if debits := [{"org": org_id, "micros": micros} for org_id, micros in charges.items() if micros]:
                session.execute(_DEBIT, debits)
            balances = dict(session.execute(_BALANCES, {"orgs": list(charges)}).tuples().all())
        MEMO.committed_charges(charges, balances)

    def _spill(self, batch: list[tuple[type, dict]]) -> None:
        assert self.spill_path is not None
        private_file(self.spill_path)  # rows of every org: 0600, like the database
        with self.spill_path.open("ab") as fh:
            for model, row in batch:
                fh.write(orjson.dumps({"table": model.__tablename__, "row": row}, default=str) + b"\n")
        log.error("spilled %d ledger rows to %s; they are replayed at the next start",
                  len(batch), self.spill_path)

    def replay_spill(self) -> None:
        if self.spill_path is None or not self.spill_path.exists():
            return
        from datetime import datetime

        from gateway.models import Base

        by_table = {m.class_.__tablename__: m.class_ for m in Base.registry.mappers}
        rows, others = [], []
        for line in self.spill_path.read_bytes().splitlines():
            if line.strip():
                item = orjson.loads(line)
                row = item["row"]
                row["created_at"] = datetime.fromisoformat(row["created_at"])
                model = by_table[item["table"]]
                (rows if model is LedgerEntry else others).append((model, row))
        rows = [row for _, row in rows]
        known = set()
        with db.session_scope() as session:
            ids = [r["request_id"] for r in rows]
            for i in range(0, len(ids), 500):
                known.update(session.scalars(
                    select(LedgerEntry.request_id).where(LedgerEntry.request_id.in_(ids[i:i + 500]))
                ))
        fresh = [r for r in rows if r["request_id"] not in known]
        for row in fresh:
            MEMO.hold(row["org_id"], row["charge_micros"])
        if fresh or others:
            self._insert([(LedgerEntry, r) for r in fresh] + others)
        self.spill_path.unlink()
        log.warning("replayed %d spilled ledger rows", len(fresh))


# Built once: the writer runs them every cycle.
_DEBIT = (update(Org.__table__).where(Org.__table__.c.id == bindparam("org"))
          .values(credits_micros=Org.__table__.c.credits_micros - bindparam("micros")))
_BALANCES = select(Org.id, Org.credits_micros).where(Org.id.in_(bindparam("orgs", expanding=True)))

WRITER = LedgerWriter()
metrics.queue_depth = WRITER.queue.qsize
