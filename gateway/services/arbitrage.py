"""Batch arbitrage: a synchronous chat request that can wait goes in its org's next provider batch.

`defer(headers, raw, deadline)` (called by the inference route for /v1/chat/completions when the
request sends `x-gateway-deadline: <seconds>`, or its app has a default deferral: `deadline_for`):
when the deadline is at least `batch_arbitrage_min_seconds`, the caller is authenticated, the
request is planned as a batch line (its route must be on a provider with a batch API, the org's plan
must allow batch) and its worst case is held at the batch price; the request is then written to
`deferred_request` and the answer is 202 with a request id. A request that cannot be deferred
(shorter deadline, a stream, no batch route, a plan without batch, a body the pipeline would refuse)
returns None and is served at once, as is every request without the header from an app without
the policy. A malformed deadline (not a number, not finite, not positive) is a 400.

Durable before the 202: a 202 promises the request will be served, so the one small INSERT of the
deferred row happens before answering, under `db.write_lock`. This is the one write on an inference
route, and it is on a request that said it can wait (a day, by default), never on the synchronous
hot path. If the INSERT fails, the hold is released and the request is served now (None).

Flush: every process runs a loop (`start`) that takes the queued rows from the database, grouped
per (org, provider), and submits a group as one provider batch (services/batches.py, mechanism
`batch_arbitrage`) once `batch_arbitrage_max_requests` are waiting or the oldest has waited
`batch_arbitrage_max_age_seconds`. The rows are claimed first (`UPDATE ... WHERE status='queued'`
with a token), so each row is submitted by exactly one process, however many share the database.

Holds, across processes and restarts: the process that accepts a request holds its worst case in
its counters (`LOCAL`) and hands that hold to the batch when it flushes the row itself. A process
that flushes another's row (or a row from before a restart) re-takes it: over Redis by the shared
hold's id (`hold_ref`), in memory as a new hold that cannot be refused (it was granted at the 202).
The accepting process, seeing its row claimed elsewhere (`sweep`), releases its own in-memory hold
(a shared one is now the batch's, so it only forgets it). At start (`restore`), queued rows get
their holds back before anything else is admitted. The batch then settles the holds with one
ledger row per succeeded request (services/batch_settle.py): charged once, never twice.

Failure modes: a flush that dies after its claim leaves rows `claimed`; after CLAIM_LEASE_SECONDS
any process takes them back (to `submitted` if their batch was stored, else to `queued`). A group
whose line can no longer be planned (model or route gone) fails that line alone (`failed`, nothing
charged, its hold released); a provider that refuses the batch errors its requests (not charged).
Several processes without Redis: each counts its own holds. The process that accepted a request
(or flushed its batch) keeps its hold until the batch is settled; the poll job that settles it may
run in another process, so every process's loop also releases, every RELEASE_SECONDS, the holds of
batches the database says are settled (batch_settle.release_settled).
`outcome()` is the result as `GET /v1/requests/{id}/result` and the webhook (services/webhooks.py)
report it, from the database, in any process.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import gevent
import orjson
from sqlalchemy import delete, func, select, update

from gateway import db
from gateway.crypto import digest
from gateway.errors import GatewayError, InvalidRequest
from gateway.ledger.pricing import usd
from gateway.memo import MEMO, Principal, entities
from gateway.models import Batch, BatchRequest, DeferredRequest, utcnow
from gateway.pipeline import auth, gate
from gateway.pipeline.context import RequestContext
from gateway.services import batch_runner, batch_settle, batches
from gateway.services.batch_common import CONFIG, hold_ttl, new_id, unz, z
from gateway.stores.counters import COUNTERS, Hold, MemoryCounters

log = logging.getLogger(__name__)

HEADER = "x-gateway-deadline"
MECHANISM = "batch_arbitrage"
CLAIM_LEASE_SECONDS = 300.0  # a claim older than this belongs to a process that died mid-flush
UNLIMITED = 1 << 62  # a hold re-taken for a request already accepted: never refused
RELEASE_SECONDS = 5.0  # how often each process releases the holds of batches settled elsewhere
RECLAIM_EVERY_SECONDS = 30.0  # how often the loop looks for stale claims (a claim's lease is 300 s)
WORKER = secrets.token_hex(8)  # this process, on the rows it claims

LOCAL: dict[str, Hold] = {}  # request id -> the hold this process carries for it until its flush
PENDING: dict[tuple[int, str], int] = {}  # (org, provider) -> rows this process queued since a flush
_loop: gevent.Greenlet | None = None
_reclaimed = 0.0  # monotonic time of the last look for stale claims


def deadline_for(headers: Mapping[str, str]) -> str | None:
    """The request's deadline: its header, else its app's default deferral (None: serve now).
    Reads memory only; an unknown key gets None (the pipeline answers it)."""
    value = headers.get(HEADER)
    if value is not None or not MEMO.app_deferral:
        return value
    raw_key = auth.extract_key(headers)
    principal = MEMO.principal(digest(raw_key)) if raw_key else None
    if principal is None or principal.app_id is None:
        return None
    seconds = MEMO.app_deferral.get(principal.app_id)
    return str(seconds) if seconds is not None and seconds > 0 else None


def parse_deadline(deadline: str) -> float:
    try:
        seconds = float(deadline)
    except ValueError:
        raise InvalidRequest(f"The {HEADER} header must be a number of seconds.", param=HEADER) from None
    if not math.isfinite(seconds) or not seconds > 0:
        raise InvalidRequest(f"The {HEADER} header must be a positive, finite number of seconds.", param=HEADER)
    return seconds


def defer(headers: Mapping[str, str], raw: bytes, deadline: str) -> tuple[str, dict] | None:
    """(request id, the 202 body) for a deferred request; None to serve it now. Raises GatewayError
    (auth, credits, budgets, a malformed deadline) for the caller to render."""
    if parse_deadline(deadline) < CONFIG.arbitrage_min_seconds:
        return None  # too soon for a batch window: served now
    ctx = RequestContext("chat.completions", "openai", raw, headers, auth.extract_key(headers))
    auth.before(ctx)
    principal = ctx.principal
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("stream") is True or not isinstance(body.get("model"), str):
        return None
    plan = MEMO.org_money(principal.org_id).plan
    if (plan is not None and not plan.batch) or principal.scope not in gate.INFERENCE_SCOPES:
        return None
    request_id = new_id("dreq_")
    try:
        planned = batches.plan_line(principal, batches.Line(1, request_id, body), "chat.completions", "openai")
    except GatewayError:
        return None  # the pipeline gives the request its own error
    if planned.kind == batch_runner.KIND:
        return None  # no provider batch to join (no discount): served now
    now = utcnow()
    # In Redis the hold lives through the wait for the flush and the batch's whole window.
    hold = gate.hold_for(principal, planned.held, now,
                         ttl_seconds=CONFIG.arbitrage_max_age_seconds + hold_ttl(None, now))
    provider = planned.route.provider.name
    LOCAL[request_id] = hold  # before the row exists: a flush that claims it finds the hold
    try:
        with db.write_lock, db.session_scope() as session:
            session.add(DeferredRequest(
                request_id=request_id, org_id=principal.org_id, key_id=principal.key_id, user_id=principal.user_id,
                app_id=principal.app_id, provider=provider, body_z=z(orjson.dumps(body)), held_micros=hold.micros,
                hold_ref=hold.ref, status="queued", created_at=now,
                webhook_state="pending" if principal.app_id is not None else "none"))
    except Exception:  # not durable: no 202 promise can be made; served now instead
        log.exception("deferred request could not be stored; served now")
        LOCAL.pop(request_id, None)
        COUNTERS.settle(hold, 0, now)
        return None
    key = (principal.org_id, provider)
    PENDING[key] = PENDING.get(key, 0) + 1
    if PENDING[key] >= CONFIG.arbitrage_max_requests:
        PENDING[key] = 0
        gevent.spawn(_flush_quietly)
    return request_id, {"id": request_id, "object": "gateway.deferred_request", "status": "queued",
                        "result_url": f"/v1/requests/{request_id}/result"}


# ---- flush ------------------------------------------------------------------------------------

def flush_due(force: bool = False, now: datetime | None = None) -> list[str]:
    """Flush every group that is full or old enough (all of them with `force`); returns the public
    ids of the batches submitted. Safe to run in every process at once."""
    global _reclaimed
    now = now or utcnow()
    if force or time.monotonic() - _reclaimed >= RECLAIM_EVERY_SECONDS:  # claims go stale in minutes
        _reclaimed = time.monotonic()
        reclaim_stale(now)
    sweep()
    with db.session_scope() as session:
        groups = session.execute(
            select(DeferredRequest.org_id, DeferredRequest.provider, func.count(), func.min(DeferredRequest.created_at))
            .where(DeferredRequest.status == "queued")
            .group_by(DeferredRequest.org_id, DeferredRequest.provider)).all()
    oldest = now - timedelta(seconds=CONFIG.arbitrage_max_age_seconds)
    out: list[str] = []
    for org_id, provider, count, first in groups:
        if not (force or count >= CONFIG.arbitrage_max_requests or first <= oldest):
            continue
        PENDING.pop((org_id, provider), None)
        while (found := flush_group(org_id, provider)) is not None:
            if found:
                out.append(found)
    return out


def _flush_quietly() -> None:
    try:
        flush_due()
    except Exception:
        log.exception("arbitrage flush failed; retried by the loop")


def _claim(org_id: int, provider: str, now: datetime) -> tuple[str, list[DeferredRequest]]:
    """Claim up to `batch_arbitrage_max_requests` of the group's oldest queued rows: the UPDATE only
    takes rows still queued, so two processes never claim the same row."""
    token = f"{WORKER}-{secrets.token_hex(8)}"
    with db.write_lock, db.session_scope() as session:
        oldest = (select(DeferredRequest.id).where(DeferredRequest.status == "queued", DeferredRequest.org_id == org_id,
                                                   DeferredRequest.provider == provider)
                  .order_by(DeferredRequest.created_at, DeferredRequest.id).limit(CONFIG.arbitrage_max_requests))
        ids = list(session.scalars(oldest))
        if ids:
            session.execute(update(DeferredRequest).where(DeferredRequest.id.in_(ids), DeferredRequest.status == "queued")
                            .values(status="claimed", claim_token=token, claimed_by=WORKER, claimed_at=now))
    with db.session_scope() as session:
        rows = list(session.scalars(select(DeferredRequest).where(DeferredRequest.claim_token == token)
                                    .order_by(DeferredRequest.created_at, DeferredRequest.id)))
    return token, rows


def sender(r: DeferredRequest) -> Principal:
    """The caller who sent the row, as the flush (in any process) submits for it."""
    return Principal(key_id=r.key_id, org_id=r.org_id, org_name=MEMO.org_names.get(r.org_id, ""),
                     scope="inference", user_id=r.user_id, app_id=r.app_id)


def _hold(r: DeferredRequest, principal: Principal, now: datetime) -> Hold:
    """The row's hold for its batch: this process's own, else the shared one by its id, else
    re-taken here (it was granted when the request was accepted, so never refused)."""
    hold = LOCAL.pop(r.request_id, None)
    if hold is not None and not hold.settled:
        return hold
    if r.hold_ref and not isinstance(COUNTERS.backend, MemoryCounters):
        return Hold(r.org_id, r.held_micros, tuple(dict.fromkeys((("org", r.org_id), *entities(principal)))),
                    ref=r.hold_ref)
    taken = COUNTERS.hold(r.org_id, r.held_micros, UNLIMITED, entities(principal), [], now)
    return taken if isinstance(taken, Hold) else Hold(r.org_id, 0, ())


def flush_group(org_id: int, provider: str) -> str | None:
    """Claim and submit one batch of the group. Returns the batch's public id, "" when the claimed
    rows all failed, None when nothing was left to claim."""
    now = utcnow()
    token, rows = _claim(org_id, provider, now)
    if not rows:
        return None
    owners: dict[str, tuple[Principal, Hold]] = {}
    lines: list[batches.Line] = []
    failed: dict[str, str] = {}
    for r in rows:
        principal = sender(r)
        owners[r.request_id] = (principal, _hold(r, principal, now))
        line = batches.Line(len(lines) + 1, r.request_id, orjson.loads(unz(r.body_z)))
        try:  # a line whose model or route is gone since fails alone
            batches.plan_line(principal, line, "chat.completions", "openai")
        except GatewayError as e:
            failed[r.request_id] = orjson.dumps({"status": e.status, "code": e.code or "invalid_request",
                                                 "message": e.message}).decode()
            continue
        lines.append(line)
    batch = None
    if lines:
        kept = {line.custom_id: owners[line.custom_id] for line in lines}
        try:
            batch = batches.submit(kept[lines[0].custom_id][0], api="openai", endpoint="chat.completions",
                                   client_endpoint="/v1/chat/completions", lines=lines, input_file_id=None,
                                   metadata=None, idempotency_key=None, print_=new_id("arb_"),
                                   mechanism=MECHANISM, owners=kept)
        except GatewayError as e:  # the plan lost batch, or every route went: none submitted
            log.warning("arbitrage batch of %d requests not submitted: %s", len(lines), e.message)
            text = orjson.dumps({"status": e.status, "code": e.code or "batch_failed", "message": e.message}).decode()
            failed.update({line.custom_id: text for line in lines})
        except Exception:  # the database failed us midway: give the rows back (the next flush sends them)
            for request_id in _unclaim(rows):
                LOCAL[request_id] = owners[request_id][1]
            raise
    for request_id in failed:
        COUNTERS.settle(owners[request_id][1], 0, now)
    with db.write_lock, db.session_scope() as session:
        for r in session.scalars(select(DeferredRequest).where(DeferredRequest.claim_token == token)):
            if r.request_id in failed:
                r.status, r.error = "failed", failed[r.request_id]
            elif batch is not None:
                r.status, r.batch_id = "submitted", batch.id
    return batch.public_id if batch is not None else ""


def reclaim_stale(now: datetime) -> int:
    """Rows claimed by a flush that never finished (its process died): to `submitted` when their
    batch was stored, else back to `queued`. Returns how many."""
    cutoff = now - timedelta(seconds=CLAIM_LEASE_SECONDS)
    with db.session_scope() as session:
        stale = list(session.scalars(select(DeferredRequest).where(DeferredRequest.status == "claimed",
                                                                   DeferredRequest.claimed_at < cutoff)))
    return len(_unclaim(stale))


def _unclaim(rows: list[DeferredRequest]) -> set[str]:
    """Claimed rows given up: `submitted` if their batch was stored (their holds are the batch's),
    else `queued` again. Returns the request ids queued again."""
    if not rows:
        return set()
    with db.session_scope() as session:
        stored = dict(session.execute(select(BatchRequest.request_id, BatchRequest.batch_id).where(
            BatchRequest.request_id.in_([r.request_id for r in rows]))).tuples().all())
    with db.write_lock, db.session_scope() as session:
        for r in rows:
            values = ({"status": "submitted", "batch_id": stored[r.request_id]} if r.request_id in stored else
                      {"status": "queued", "claim_token": None, "claimed_by": None, "claimed_at": None})
            session.execute(update(DeferredRequest).where(DeferredRequest.id == r.id,
                                                          DeferredRequest.claim_token == r.claim_token).values(**values))
    return {r.request_id for r in rows if r.request_id not in stored}


def sweep() -> None:
    """Forget the holds of rows another process claimed: an in-memory one is released (the
    claimer holds it now), a shared one is the batch's own."""
    if not LOCAL:
        return
    ids = list(LOCAL)
    with db.session_scope() as session:
        seen = {rid: (status, by) for rid, status, by in session.execute(
            select(DeferredRequest.request_id, DeferredRequest.status, DeferredRequest.claimed_by)
            .where(DeferredRequest.request_id.in_(ids)))}
    now = utcnow()
    for rid in ids:
        status, by = seen.get(rid, ("queued", None))  # not there yet: its 202 is being written
        if status == "queued" or by == WORKER:
            continue
        hold = LOCAL.pop(rid, None)
        if hold is not None and hold.ref is None:
            COUNTERS.settle(hold, 0, now)


def restore(session) -> None:
    """At start: the holds of rows not yet in a batch, back in memory (counters start empty after
    a restart). Over Redis the shared holds outlive the process: the flush finds them by id."""
    LOCAL.clear()
    PENDING.clear()
    if not isinstance(COUNTERS.backend, MemoryCounters):
        return
    rows = list(session.scalars(select(DeferredRequest).where(DeferredRequest.status.in_(("queued", "claimed")))))
    stored = set(session.scalars(select(BatchRequest.request_id).where(
        BatchRequest.request_id.in_([r.request_id for r in rows])))) if rows else set()
    now = utcnow()
    for r in rows:
        if r.request_id in stored:  # its batch holds it (batch_settle.restore_holds)
            continue
        hold = COUNTERS.hold(r.org_id, r.held_micros, UNLIMITED, entities(sender(r)), [], now)
        if isinstance(hold, Hold):
            LOCAL[r.request_id] = hold


def prune(session, now: datetime) -> None:
    """Rows whose result is in and delivered (or not to be), past the batch retention: their result
    lives on the batch's request row, which batch retention prunes too."""
    cutoff = now - timedelta(days=CONFIG.retention_days)
    session.execute(delete(DeferredRequest).where(DeferredRequest.created_at < cutoff,
                                                  DeferredRequest.status.in_(("submitted", "failed")),
                                                  DeferredRequest.webhook_state != "pending"))


# ---- results ----------------------------------------------------------------------------------

@dataclass
class Outcome:
    """A deferred request as its client sees it: `state` queued | in_progress | done; when done,
    the HTTP status and body the synchronous call would have answered, and the cost figures."""

    request_id: str
    state: str
    status: str  # queued | in_progress | succeeded | errored | canceled | expired | failed
    status_code: int = 202
    body: dict | None = None
    figures: dict[str, str] | None = None
    batch_id: str | None = None


def outcome(session, org_id: int, request_id: str) -> Outcome | None:
    """The request's state and result, within the org (None: no such request in this org)."""
    rid = request_id[:64]
    d = session.scalar(select(DeferredRequest).where(DeferredRequest.request_id == rid,
                                                     DeferredRequest.org_id == org_id))
    if d is not None and d.status in ("queued", "claimed"):
        return Outcome(rid, "queued", "queued")
    if d is not None and d.status == "failed":
        err = orjson.loads(d.error) if d.error and d.error.startswith("{") else {"message": d.error or ""}
        code = int(err.get("status") or 502)
        return Outcome(rid, "done", "failed", code if 400 <= code < 600 else 502,
                       {"error": {"message": str(err.get("message") or "The request could not be submitted."),
                                  "type": "invalid_request_error" if code < 500 else "api_error", "param": None,
                                  "code": str(err.get("code") or "deferred_request_failed")}},
                       {"x-request-id": rid, "x-gateway-benchmark-cost": usd(0), "x-gateway-charge": usd(0),
                        "x-gateway-saved": usd(0)})
    r = session.scalar(select(BatchRequest).where(BatchRequest.request_id == rid, BatchRequest.org_id == org_id))
    if r is None:
        return None
    batch = session.get(Batch, r.batch_id)
    if r.status == "pending" or not batch.settled:
        return Outcome(rid, "in_progress", "in_progress", batch_id=batch.public_id)
    result = orjson.loads(unz(r.result_z)) if r.result_z else {}
    figures = {"x-request-id": rid, "x-gateway-benchmark-cost": usd(r.benchmark_micros),
               "x-gateway-charge": usd(r.charge_micros), "x-gateway-saved": usd(r.saved_micros)}
    if r.status == "succeeded":
        return Outcome(rid, "done", "succeeded", 200, result.get("body"), figures, batch.public_id)
    error = result.get("error") or {}
    body = result.get("body") if isinstance(result.get("body"), dict) and "error" in result["body"] else {
        "error": {"message": str(error.get("message") or f"The request was {r.status}."),
                  "type": "api_error", "param": None, "code": str(error.get("code") or r.status)}}
    status = result.get("status_code") or 502
    return Outcome(rid, "done", r.status, status if 400 <= status < 600 else 502, body, figures, batch.public_id)


# ---- the loop ---------------------------------------------------------------------------------

def _run() -> None:
    released = time.monotonic()
    while True:
        gevent.sleep(min(1.0, max(0.05, CONFIG.arbitrage_max_age_seconds / 4)))
        try:
            flush_due()
        except Exception:
            log.exception("arbitrage flush failed; retried")
        if time.monotonic() - released >= RELEASE_SECONDS:
            released = time.monotonic()
            try:  # holds of batches another process settled (every process, not only the poller)
                batch_settle.release_settled()
            except Exception:
                log.exception("releasing the holds of settled batches failed; retried")


def start() -> None:
    global _loop
    if _loop is None or _loop.dead:
        _loop = gevent.spawn(_run)


def stop() -> None:
    """Stop the loop. Queued rows stay in the database for the next process (or another worker);
    this process's in-memory holds end with it and are re-taken by whoever flushes them."""
    global _loop
    if _loop is not None:
        _loop.kill(block=True, timeout=5)
        _loop = None
    LOCAL.clear()
    PENDING.clear()

