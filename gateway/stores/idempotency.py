"""Idempotency records: (org, Idempotency-Key) -> the first request's reply, kept 24 hours.

Requests read and write memory only. `claim` marks a key as running (or reports the record that
is there); `complete` keeps the reply in memory and queues its row for the ledger writer
(`WRITER.enqueue_record`); `release` forgets a claim whose request failed, so a retry runs again.
`load` (at start) puts the unexpired rows of `idempotency_record` back in memory. Keys are scoped
to the org: the same key sent by two orgs names two records.

Single process: gevent greenlets never switch inside these methods (but for the table lookup,
after which memory is read again), so a claim is atomic without a lock. With several workers each
holds its own memory: a key memory does not hold is looked up in the table, so a reply completed by
one worker (and written by its ledger writer, within a sync interval) is replayed by the others,
but a key still running on one worker is not seen as running by another.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway.ledger.writer import WRITER
from gateway.models import IdempotencyRecord, utcnow

log = logging.getLogger(__name__)

TTL_SECONDS = 24 * 3600
MAX_RECORDS = 200_000  # across orgs; the oldest go first


@dataclass(slots=True)
class Record:
    fingerprint: str
    expires: float  # epoch seconds
    request_id: str
    running: bool = True
    status: int = 0
    content_type: str = "application/json"
    headers: dict[str, str] | None = None
    body: bytes = b""
    chunks: list[int] | None = None  # chunk lengths of a stream; None: a whole body
    usage: dict[str, int] | None = None  # the original's metered usage

    def parts(self) -> list[bytes]:
        """A stored stream's chunks, as the client first received them."""
        out, at = [], 0
        for size in self.chunks or ():
            out.append(self.body[at:at + size])
            at += size
        return out


class IdempotencyStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._records: OrderedDict[tuple[int, str], Record] = OrderedDict()
        # (org_id, key) -> the newest unexpired stored record, or None; set at start (lookup_stored)
        self.lookup: Callable[[int, str], Record | None] | None = None

    def claim(self, org_id: int, key: str, fingerprint: str, request_id: str) -> Record | None:
        """None: the key is now ours (running). Otherwise the record already there (running or done).

        A key not in memory is looked up in the table (a reply completed by another worker, or
        before a restart); the lookup may yield to other greenlets (PostgreSQL), so memory is read
        again after it: a greenlet that claimed the key meanwhile wins."""
        now = self.clock()
        found = self._live(org_id, key, now)
        if found is None and self.lookup is not None:
            stored = self.lookup(org_id, key)
            found = self._live(org_id, key, now)
            if found is None and stored is not None and stored.expires > now:
                self._records[(org_id, key)] = found = stored
        if found is not None:
            return found
        self._prune(now)
        self._records[(org_id, key)] = Record(fingerprint, now + TTL_SECONDS, request_id)
        self._records.move_to_end((org_id, key))
        return None

    def _live(self, org_id: int, key: str, now: float) -> Record | None:
        found = self._records.get((org_id, key))
        return found if found is not None and found.expires > now else None

    def release(self, org_id: int, key: str, request_id: str) -> None:
        found = self._records.get((org_id, key))
        if found is not None and found.running and found.request_id == request_id:
            del self._records[(org_id, key)]

    def complete(self, org_id: int, key: str, request_id: str, *, status: int, content_type: str,
                 headers: dict[str, str], body: bytes, chunks: list[int] | None, usage: dict[str, int]) -> None:
        found = self._records.get((org_id, key))
        if found is None or found.request_id != request_id:
            return
        found.running, found.status, found.content_type = False, status, content_type
        found.headers, found.body, found.chunks, found.usage = headers, body, chunks, usage
        WRITER.enqueue_record(IdempotencyRecord, {
            "org_id": org_id, "idem_key": key, "fingerprint": found.fingerprint, "request_id": request_id,
            "status": status, "content_type": content_type, "headers": orjson.dumps(headers).decode(),
            "body": body, "chunks": orjson.dumps(chunks).decode() if chunks is not None else None,
            "usage": orjson.dumps(usage).decode(), "expires_at": _naive_utc(found.expires),
        })

    def _prune(self, now: float) -> None:
        """Records are kept in claim order and all live as long, so the expired ones are in front."""
        while self._records:
            first = next(iter(self._records.values()))
            if first.expires > now and len(self._records) < MAX_RECORDS:
                return
            self._records.popitem(last=False)

    def load(self, session: Session) -> None:
        """Replace memory with the unexpired rows, and delete the expired ones."""
        now = utcnow()
        session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now))
        records: OrderedDict[tuple[int, str], Record] = OrderedDict()
        rows = session.scalars(select(IdempotencyRecord).where(IdempotencyRecord.expires_at > now)
                               .order_by(IdempotencyRecord.id)).all()
        for r in rows[-MAX_RECORDS:]:  # a later row for the same key (reused after expiry) wins
            records[(r.org_id, r.idem_key)] = _record(r)
        self._records = records

    def clear(self) -> None:
        self._records.clear()


def _record(r: IdempotencyRecord) -> Record:
    return Record(r.fingerprint, r.expires_at.replace(tzinfo=UTC).timestamp(), r.request_id, running=False,
                  status=r.status, content_type=r.content_type, headers=orjson.loads(r.headers or "{}"),
                  body=r.body, chunks=orjson.loads(r.chunks) if r.chunks else None,
                  usage=orjson.loads(r.usage or "{}"))


def lookup_stored(org_id: int, key: str) -> Record | None:
    """The newest unexpired row for the key (one indexed read, only for a key memory does not
    hold); None on any failure, so the request runs rather than fails."""
    from gateway import db

    try:
        with db.session_scope() as session:
            row = session.scalar(select(IdempotencyRecord).where(
                IdempotencyRecord.org_id == org_id, IdempotencyRecord.idem_key == key,
                IdempotencyRecord.expires_at > utcnow()).order_by(IdempotencyRecord.id.desc()).limit(1))
            return _record(row) if row is not None else None
    except Exception:
        log.warning("idempotency lookup failed; the request runs", exc_info=True)
        return None


def _naive_utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def prune(session: Session) -> None:
    """Delete expired rows (the scheduler's job; memory forgets them as it meets them)."""
    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= utcnow()))


STORE = IdempotencyStore()
