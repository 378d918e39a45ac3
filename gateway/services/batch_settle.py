"""Batch polling and settlement: provider states in, results recorded, ledger rows out, holds released.

`poll_due()` (the scheduler's `poll_batches`, one worker per tick through the job_run claim) asks
each open provider part whose time has come for its state, backing off (x2, from
`batch_poll_min_seconds` to `batch_poll_max_seconds`). A part in a terminal state has its results
fetched and recorded on its requests (outcome, usage, prices, the result compressed). A batch whose
parts are all done is settled: its counts and files are written, one ledger row per succeeded
request is queued (mechanism `batch`: benchmark = the requested model's list price, charge = the
route's batch price, saved = the difference), and its holds are released: the batch's own and the
top-up of any part that fell back to the gateway's run (services/batch_submit.py), each rebuilt by
its name after a restart or on another worker; the charge is counted once, on the first.
(The poll job first submits parts a stopped process stored but never submitted: batch_submit.)

Holds in several processes without Redis: each process counts its own. The one that accepted a
batch (or restored it at its start) keeps the batch's holds in `HOLDS` until the batch is settled,
wherever that happens: `release_settled`, run by every process's arbitrage loop, releases those of
batches the database says are settled. Until it runs (seconds), that process still counts them.

Exactly once, across restarts: everything lives in the database. Settlement queues only the rows
the ledger does not already hold (by request id), waits for the writer, then marks the batch
settled; a crash anywhere in between repeats the step without charging twice. Canceled, expired
and errored requests are not charged. A results download that breaks off (a reset, a timeout, a
5xx) is tried again at the next poll, nothing recorded meanwhile; results that are not the API's
shape at all fail their part (no charge). In results that are mostly right, a line that does not
parse is skipped (its request, if it was one, is errored `missing_result`, not charged), a line
for a custom_id the batch does not have is ignored, and a success with malformed usage counts is
charged on estimated counts (batch_common.record_one).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import db
from gateway.errors import InvalidUpstreamResponse, UpstreamError
from gateway.ledger.writer import WRITER
from gateway.memo import MEMO, Principal, entities
from gateway.models import Batch, BatchFile, BatchPart, BatchRequest, DeferredRequest, LedgerEntry, utcnow
from gateway.providers.batch_api import TERMINAL, Outcome
from gateway.routing.routes import ProviderInfo
from gateway.services import batch_common as batches
from gateway.services import batch_runner
from gateway.services.batch_common import CONFIG, unz, z
from gateway.stores.counters import COUNTERS, Hold, MemoryCounters

log = logging.getLogger(__name__)

# batch id -> its open holds in this process: (hold, None) for the whole batch, or (hold, request id)
# for each request of an arbitrage batch (each caller's own hold)
HOLDS: dict[int, list[tuple[Hold, str | None]]] = {}


def owner(batch: Batch) -> Principal:
    return Principal(key_id=batch.key_id or 0, org_id=batch.org_id, org_name="", scope="inference",
                     user_id=batch.user_id, app_id=batch.app_id)


def batch_hold(batch: Batch) -> Hold:
    """The batch's own hold, as its row names it (services/batch_common.hold_ref)."""
    return Hold(batch.org_id, batch.held_micros, entities(owner(batch)),
                ref=batches.hold_ref(batch.public_id, batch.held_micros), named=True)


def topup_hold(batch: Batch, part: BatchPart) -> Hold:
    """What a part that fell back to the gateway's run added to the batch's hold, by its name."""
    return Hold(batch.org_id, part.topup_micros, entities(owner(batch)),
                ref=batches.topup_ref(batch.public_id, part.id, part.topup_micros), named=True)


def named_holds(session: Session, batch: Batch) -> list[tuple[Hold, str | None]]:
    """Every hold the batch's row names: its own, and its parts' top-ups. An arbitrage batch over
    Redis is held by its requests' own shared holds (taken at their 202, still there after a
    restart): those, by their ids, and a batch-wide hold only for what none of them covers."""
    parts = session.scalars(select(BatchPart).where(BatchPart.batch_id == batch.id, BatchPart.topup_micros > 0))
    topups = [(topup_hold(batch, p), None) for p in parts]
    if batch.mechanism != "batch_arbitrage" or isinstance(COUNTERS.backend, MemoryCounters):
        return [(batch_hold(batch), None)] + topups
    holds: list[tuple[Hold, str | None]] = []
    for r in session.scalars(select(DeferredRequest).where(DeferredRequest.batch_id == batch.id,
                                                           DeferredRequest.hold_ref.is_not(None))):
        sender = Principal(key_id=r.key_id, org_id=r.org_id, org_name="", scope="inference", user_id=r.user_id,
                           app_id=r.app_id)
        holds.append((Hold(r.org_id, r.held_micros, entities(sender), ref=r.hold_ref, named=True), r.request_id))
    rest = batch.held_micros - sum(h.micros for h, _ in holds)
    if rest > 0:
        holds.append((Hold(batch.org_id, rest, entities(owner(batch)), ref=batches.hold_ref(batch.public_id, rest),
                           named=True), None))
    return holds + topups


def restore_holds(session: Session) -> None:
    """At start: the open batches' holds, back in the counters. In memory (one process) they start
    empty; in Redis the hold is still there unless Redis lost it (then it is put back) and its
    expiry moves on to the batch's window plus margin. A batch's hold lives until it is settled."""
    HOLDS.clear()
    now = utcnow()
    for batch in session.scalars(select(Batch).where(Batch.settled.is_(False))):
        HOLDS[batch.id] = named_holds(session, batch)
        for hold, _ in HOLDS[batch.id]:
            COUNTERS.restore(hold, now, batches.hold_ttl(batch.expires_at, now))


def release_settled() -> int:
    """Release this process's holds of batches settled elsewhere (another process's poll job). Cheap:
    one query over the batch ids this process holds, none when it holds nothing. Run in every
    process (the arbitrage loop, which also releases deferred requests another process flushed:
    arbitrage.sweep), not only by the poll job's worker: without Redis each process counts its own
    holds. The charge counted as window spend here is the batch's recorded one, as the settling
    process counts it."""
    if not HOLDS:
        return 0
    ids = list(HOLDS)
    with db.session_scope() as session:
        settled = set(session.scalars(select(Batch.id).where(Batch.id.in_(ids), Batch.settled.is_(True))))
        charges: dict[int, dict[str, int]] = {}
        if settled:
            for batch_id, request_id, charge in session.execute(
                    select(BatchRequest.batch_id, BatchRequest.request_id, BatchRequest.charge_micros)
                    .where(BatchRequest.batch_id.in_(settled), BatchRequest.status == "succeeded")):
                charges.setdefault(batch_id, {})[request_id] = charge or 0
    now = utcnow()
    # Over Redis the settling worker counted the charge in the shared counters: here the holds are
    # only released (a named one it settled already is a no-op), never charged a second time.
    local = isinstance(COUNTERS.backend, MemoryCounters)
    for batch_id in settled:
        _release(HOLDS.pop(batch_id, None) or [], charges.get(batch_id, {}) if local else {}, now)
    return len(settled)


def _release(holds: list[tuple[Hold, str | None]], charged: dict[str, int], now: datetime) -> None:
    """Settle the holds: one per request takes its request's charge; the rest of the charge goes to
    the first batch-wide hold (a top-up hold is released with none: it is counted once)."""
    covered = {request_id for _, request_id in holds if request_id}
    rest = sum(c for request_id, c in charged.items() if request_id not in covered)
    for hold, request_id in holds:
        if request_id:
            COUNTERS.settle(hold, charged.get(request_id, 0), now)
        else:
            COUNTERS.settle(hold, rest, now)
            rest = 0


# ---- polling ---------------------------------------------------------------------------------

def poll_due(now: datetime | None = None) -> int:
    """Poll every open part whose time has come, then settle the batches that are done. Returns
    how many parts were polled."""
    now = now or utcnow()
    with db.session_scope() as session:
        parts = list(session.scalars(select(BatchPart).join(Batch, Batch.id == BatchPart.batch_id).where(
            Batch.settled.is_(False), BatchPart.done.is_(False), BatchPart.upstream_id.is_not(None),
            (BatchPart.next_poll_at.is_(None)) | (BatchPart.next_poll_at <= now))))
        ready = list(session.scalars(select(Batch.id).where(Batch.settled.is_(False))))
    for part in parts:
        try:
            if part.kind == batch_runner.KIND:  # the gateway runs it: (re)start its runner here
                batch_runner.ensure_running(part.id)
                continue
            poll_part(part.id)
        except Exception:  # one bad part must not stop the others; it is retried next tick
            log.exception("batch part %s poll failed", part.id)
    for batch_id in ready:
        try:
            settle_if_done(batch_id)
        except Exception:
            log.exception("batch %s settlement failed; retried next tick", batch_id)
    return len(parts)


def _provider(name: str) -> ProviderInfo | None:
    return MEMO.catalog.providers.get(name)


def poll_part(part_id: int) -> None:
    with db.session_scope() as session:
        part = session.get(BatchPart, part_id)
    provider = _provider(part.provider)
    adapter = batches.ADAPTERS[part.kind]
    outcomes: list[Outcome] | None = None
    failure: str | None = None
    state = None
    try:
        if provider is None:
            raise UpstreamError(f"The provider {part.provider} is no longer configured.")
        state = adapter.poll(provider, part.upstream_id)
        if state.status in TERMINAL and state.status != "failed":
            outcomes = adapter.results(provider, state)
    except UpstreamError as e:
        if state is not None and state.status in TERMINAL and _lasting(e):
            failure = f"The provider's results could not be read: {e.message}"
        else:  # down now, or the download broke off (a reset, a timeout): back off and ask again
            if state is not None and state.status in TERMINAL:
                state = None  # not done until its results are read
            log.warning("batch part %s: provider %s did not answer (%s)", part.id, part.provider, e.message)
    now = utcnow()
    with db.write_lock, db.session_scope() as session:
        part = session.get(BatchPart, part_id)
        batch = session.get(Batch, part.batch_id)
        if state is not None:
            part.status = state.status
            # kept for the console (a results URL too long for the column is left out: the results
            # are fetched from the state of the same poll)
            part.output_upstream_file_id = state.output if isinstance(state.output, str) and len(
                state.output) <= 128 else None
            part.error_upstream_file_id = state.errors if isinstance(state.errors, str) and len(
                state.errors) <= 128 else None
        if failure is not None or (state is not None and state.status == "failed"):
            part.done = True
            part.error = failure or state.message or "The provider failed the batch."
            _fail_requests(session, part)
        elif outcomes is not None:
            _record(session, part, outcomes)
            part.done = True
        else:
            part.poll_seconds = int(min(CONFIG.poll_max_seconds, max(CONFIG.poll_min_seconds, part.poll_seconds * 2)))
            part.next_poll_at = now + timedelta(seconds=part.poll_seconds)
        batches.refresh_status(session, batch, now)


def _lasting(e: UpstreamError) -> bool:
    """A results download that will not work on a retry either: results that are not what the API
    promises, or a client error (the file is gone). A reset, a timeout, a 5xx or a 429 are passing."""
    if isinstance(e, InvalidUpstreamResponse):
        return True
    status = e.upstream_status
    return status is not None and 400 <= status < 500 and status not in (408, 429)


def _fail_requests(session: Session, part: BatchPart) -> None:
    for r in session.scalars(select(BatchRequest).where(BatchRequest.part_id == part.id)):
        r.status = "errored"
        r.charge_micros = r.benchmark_micros = r.saved_micros = 0
        r.result_z = z(orjson.dumps({"error": {"code": "batch_failed", "message": part.error}}))


def _record(session: Session, part: BatchPart, outcomes: list[Outcome]) -> None:
    """Each request's outcome, usage and price; a request the provider did not report is errored."""
    by_id = {o.custom_id: o for o in outcomes}
    money = MEMO.org_money(part.org_id)
    for r in session.scalars(select(BatchRequest).where(BatchRequest.part_id == part.id)):
        o = by_id.get(r.custom_id)
        if o is None:
            o = Outcome(r.custom_id, "errored", 0, None,
                        {"code": "missing_result", "message": "The provider returned no result for this request."})
        batches.record_one(r, o, money)


# ---- settlement ------------------------------------------------------------------------------

def settle_if_done(batch_id: int) -> bool:
    """Settle the batch once every part is done: counts, files, ledger rows, hold. Idempotent."""
    with db.session_scope() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.settled:
            return False
        parts = list(session.scalars(select(BatchPart).where(BatchPart.batch_id == batch_id)))
        if any(not p.done for p in parts):
            return False
        requests = batches.requests_of(session, batch_id)
    rows = _ledger_rows(batch, requests)
    with db.session_scope() as session:
        known = set(session.scalars(select(LedgerEntry.request_id).where(
            LedgerEntry.request_id.in_([row["request_id"] for row in rows])))) if rows else set()
    fresh = [row for row in rows if row["request_id"] not in known]
    for row in fresh:
        WRITER.enqueue(row)
    charged = {row["request_id"]: row["charge_micros"] for row in rows}
    holds = HOLDS.pop(batch_id, None)
    if holds is None and not isinstance(COUNTERS.backend, MemoryCounters):
        # Submitted on another worker (or before its start): the shared holds are settled by their names
        with db.session_scope() as session:
            holds = named_holds(session, batch)
    _release(holds or [], charged, utcnow())  # released; the charge counted as window spend, once
    if fresh:
        WRITER.flush()  # the rows are in the ledger before the batch says so
    now = utcnow()
    with db.write_lock, db.session_scope() as session:
        batch = session.get(Batch, batch_id)
        if batch.settled:
            return False
        _finish(session, batch, parts, batches.requests_of(session, batch_id), now)
        batch.settled = True
    return True


def _finish(session: Session, batch: Batch, parts: list[BatchPart], requests: list[BatchRequest],
            now: datetime) -> None:
    kinds = [r.status for r in requests]
    batch.succeeded, batch.errored = kinds.count("succeeded"), kinds.count("errored")
    batch.canceled, batch.expired = kinds.count("canceled"), kinds.count("expired")
    batch.input_tokens = sum(r.input_tokens for r in requests if r.status == "succeeded")
    batch.output_tokens = sum(r.output_tokens for r in requests if r.status == "succeeded")
    batch.charge_micros = sum(r.charge_micros for r in requests if r.status == "succeeded")
    batch.benchmark_micros = sum(r.benchmark_micros for r in requests if r.status == "succeeded")
    batch.saved_micros = batch.benchmark_micros - batch.charge_micros
    errors = [{"code": "provider_failed", "message": f"{p.provider}: {p.error}", "param": None, "line": None}
              for p in parts if p.error]
    if errors:
        batch.errors_json = orjson.dumps({"object": "list", "data": errors}).decode()
    statuses = {p.status for p in parts}
    if batch.cancelling_at is not None:
        batch.status, batch.cancelled_at = "cancelled", now
    elif all(p.error for p in parts):
        batch.status, batch.failed_at = "failed", now
    elif "expired" in statuses:
        batch.status, batch.expired_at = "expired", now
    else:
        batch.status, batch.completed_at = "completed", now
    batch.finalizing_at = batch.finalizing_at or now
    if batch.api == "openai" and batch.status != "failed":
        _write_files(session, batch, requests)


def _write_files(session: Session, batch: Batch, requests: list[BatchRequest]) -> None:
    """OpenAI's output file (succeeded lines) and error file (the rest), in OpenAI's line format."""
    out, err = [], []
    for r in requests:
        result = orjson.loads(unz(r.result_z)) if r.result_z else {}
        line_id = "batch_req_" + r.request_id.removeprefix("breq_")
        if r.status == "succeeded":
            out.append({"id": line_id, "custom_id": r.custom_id, "response": {
                "status_code": 200, "request_id": r.request_id, "body": result.get("body")}, "error": None})
            continue
        code = {"canceled": "batch_cancelled", "expired": "batch_expired"}.get(r.status)
        error = result.get("error") if isinstance(result.get("error"), dict) else None
        response = None
        if result.get("status_code"):
            response = {"status_code": result["status_code"], "request_id": r.request_id, "body": result.get("body")}
        if code:
            error = {"code": code, "message": "This request was cancelled." if code == "batch_cancelled" else
                     "This request could not be executed before the completion window expired."}
        out_error = None if response is not None and error is None else {
            "code": str((error or {}).get("code") or (error or {}).get("type") or "request_failed"),
            "message": str((error or {}).get("message") or "The request failed.")}
        err.append({"id": line_id, "custom_id": r.custom_id, "response": response, "error": out_error})
    if out:
        batch.output_file_id = batches.store_file(session, batch.org_id, "batch_output", "batch_output.jsonl",
                                                  batches.iter_lines(out), len(out)).public_id
    if err:
        batch.error_file_id = batches.store_file(session, batch.org_id, "batch_output", "batch_errors.jsonl",
                                                 batches.iter_lines(err), len(err)).public_id


def _ledger_rows(batch: Batch, requests: list[BatchRequest]) -> list[dict]:
    rows = []
    money = MEMO.org_money(batch.org_id)
    endpoint = "messages.batches" if batch.api == "anthropic" else "batches"
    latency = int(((batch.completed_at or utcnow()) - batch.created_at).total_seconds() * 1000)
    for r in requests:
        if r.status != "succeeded":
            continue
        _, _, saved = batches.price(r, batches.usage_of(r), money)
        # The shares sum to the row's saved even if the org's pricing changed since it was priced
        if (drift := (r.benchmark_micros - r.charge_micros) - sum(saved.values())) != 0:
            saved["batch"] = saved.get("batch", 0) + drift
        saved = {k: v for k, v in saved.items() if v}
        if batch.mechanism != "batch" and "batch" in saved:
            saved[batch.mechanism] = saved.pop("batch")
        rows.append({
            "request_id": r.request_id, "org_id": batch.org_id, "key_id": r.key_id or batch.key_id,
            "user_id": r.user_id or batch.user_id, "app_id": r.app_id or batch.app_id, "endpoint": endpoint,
            "requested_model": r.requested_model, "model": r.model,
            "provider": r.provider, "upstream_model": r.upstream_model, "stream": False,
            "input_tokens": r.input_tokens, "output_tokens": r.output_tokens, "cached_tokens": r.cached_tokens,
            "cache_write_tokens": r.cache_write_tokens or 0, "usage_estimated": bool(r.usage_estimated),
            "benchmark_micros": r.benchmark_micros,
            "charge_micros": r.charge_micros, "saved_micros": r.benchmark_micros - r.charge_micros,
            "saved_by": ",".join(f"{k}={v}" for k, v in saved.items())[:255], "saved_mechanisms": saved,
            "cache": "miss", "status": 200, "error_type": None, "error_message": None, "latency_ms": latency,
            "ttfb_ms": None, "attempts": 1, "upstream_id": r.upstream_id, "byok": False,
        })
    return rows


def prune(session: Session, now: datetime) -> None:
    """Files past their retention, and the results of settled batches as old."""
    from sqlalchemy import delete, update

    session.execute(delete(BatchFile).where(BatchFile.expires_at < now))
    cutoff = now - timedelta(days=CONFIG.retention_days)
    old = select(Batch.id).where(Batch.settled.is_(True), Batch.created_at < cutoff)
    session.execute(update(BatchRequest).where(BatchRequest.batch_id.in_(old)).values(result_z=None))

