"""Batch parts to their providers: the first submission, the fallback to the gateway's own run, and
the recovery of parts a process stored but never got to submit.

`submit_parts(batch_id)` sends each stored part that has no provider id yet to its provider (the
lines' model rewritten to the route's upstream model). A refusal fails that part, with the
provider's message, and its requests are errored (never charged). A provider that answers the batch
endpoints 404, 405 or 501 has no batch API after all: its part is run by the gateway instead
(logged), at the route's normal price. Its hold grows by the difference first: a hold taken through
the gate (`gate.hold_for`, so credits and hard budgets count it), named after the part
(batch_common.topup_ref) and recorded on it (`topup_micros`), settled with the batch. If the credits
or a hard budget cannot cover it, the part fails with that reason (nothing charged).

Recovery (`recover_due`, from the poller): a part is stored with a lease (`next_poll_at`,
SUBMIT_LEASE_SECONDS, longer than the two provider calls a submission makes) held by the process
that stores it. A process that dies before its provider accepted the part (or before it recorded
the provider's id) leaves the part without a provider id; once its lease has run out, whichever
worker claims it (`UPDATE ... WHERE upstream_id IS NULL AND lease ran out`, one winner however many
workers poll) submits it again, once. The batch's hold is the batch row's (restored at start:
batch_settle.restore_holds), so nothing else is needed for the money.

Duplicates at the provider: OpenAI batches carry `metadata`, where the gateway puts the part's name
(batch_common.part_key); a recovery first lists the provider's batches (newest first, every page back
to the batch's creation) and adopts the one that carries it, submitting only if none does. Anthropic
Message Batches carry no metadata, so a part whose first submission the provider accepted just
before the crash is submitted again: the provider runs (and bills) both, but the gateway polls and
charges only the second, once per request, as its ledger rows are keyed by the gateway's request ids.
A submission that outlives its lease (a provider slower than SUBMIT_LEASE_SECONDS) may race a
recovery: the first to record a provider id wins; the other's provider batch is cancelled.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import orjson
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway import db
from gateway.errors import GatewayError, UpstreamError
from gateway.memo import MEMO, Principal
from gateway.models import Batch, BatchPart, BatchRequest, utcnow
from gateway.pipeline import gate
from gateway.providers.batch_api import NO_BATCH_API_STATUSES, State
from gateway.services import batch_runner, batch_settle
from gateway.services.batch_common import ADAPTERS, CONFIG, hold_ttl, part_key, refresh_status, topup_ref, unz, z
from gateway.stores.counters import COUNTERS, Hold

log = logging.getLogger(__name__)

SUBMIT_LEASE_SECONDS = 300  # a submission's two provider calls (120 s each at most), with margin
RUN_HERE = State("gateway", "in_progress")  # a part whose provider turned out to have no batch API


def owner(batch: Batch) -> Principal:
    return Principal(key_id=batch.key_id or 0, org_id=batch.org_id, org_name=MEMO.org_names.get(batch.org_id, ""),
                     scope="inference", user_id=batch.user_id, app_id=batch.app_id)


def submit_parts(batch_id: int, only: set[int] | None = None, recovering: bool = False) -> list[tuple[Hold, None]]:
    """Submit the batch's parts that have no provider id (those in `only`, if given); returns the
    top-up holds taken for parts that fell back to the gateway's run (the caller keeps them with the
    batch's holds: batch_settle.HOLDS)."""
    with db.session_scope() as session:
        batch = session.get(Batch, batch_id)
        parts = [p for p in session.scalars(select(BatchPart).where(
            BatchPart.batch_id == batch_id, BatchPart.done.is_(False), BatchPart.upstream_id.is_(None)))
            if only is None or p.id in only]
        requests = list(session.scalars(select(BatchRequest).where(BatchRequest.batch_id == batch_id)
                                        .order_by(BatchRequest.line)))
    results: dict[int, State | str] = {}
    topups: dict[int, Hold] = {}
    for part in parts:
        provider = MEMO.catalog.providers.get(part.provider)
        mine = [r for r in requests if r.part_id == part.id]
        try:
            if provider is None:
                raise UpstreamError(f"The provider {part.provider} is no longer configured.")
            if part.kind == batch_runner.KIND:  # run here, request by request (services/batch_runner.py)
                results[part.id] = State("gateway", "in_progress")
                continue
            adapter, key = ADAPTERS[part.kind], part_key(batch.public_id, part.id)
            found = adapter.find(provider, key, batch.created_at) if recovering else None
            if found is not None:
                log.warning("batch %s: part %s was accepted by %s before a crash; adopting %s", batch.public_id,
                            part.id, part.provider, found.upstream_id)
            results[part.id] = found or adapter.submit(provider, _lines(mine), batch.endpoint, key=key)
        except UpstreamError as e:
            results[part.id] = e.message or "The provider refused the batch."
            if e.upstream_status in NO_BATCH_API_STATUSES:
                results[part.id] = _fallback(batch, part, mine, e, topups)
    now = utcnow()
    kept: list[tuple[Hold, None]] = []
    late: list[tuple[BatchPart, State]] = []
    with db.write_lock, db.session_scope() as session:
        for part in session.scalars(select(BatchPart).where(BatchPart.id.in_(list(results)))):
            outcome = results[part.id]
            if part.upstream_id is not None or part.done:  # another worker recorded it first
                if isinstance(outcome, State) and outcome is not RUN_HERE and outcome.upstream_id != part.upstream_id:
                    late.append((part, outcome))
                if part.id in topups:
                    COUNTERS.settle(topups.pop(part.id), 0, now)
                continue
            if outcome is RUN_HERE:
                _run_here(session, part, topups[part.id].micros)
                kept.append((topups[part.id], None))
                outcome = State("gateway", "in_progress")
            if isinstance(outcome, State):
                part.upstream_id, part.upstream_file_id, part.status = outcome.upstream_id, outcome.file_id, \
                    outcome.status
                part.poll_seconds = int(CONFIG.poll_min_seconds)
                part.next_poll_at = now + timedelta(seconds=CONFIG.poll_min_seconds)
            else:
                part.status, part.done, part.error = "failed", True, str(outcome)[:1000]
                for r in session.scalars(select(BatchRequest).where(BatchRequest.part_id == part.id)):
                    r.status = "errored"
                    r.result_z = z(orjson.dumps({"error": {"code": "batch_failed", "message": part.error}}))
        refresh_status(session, session.get(Batch, batch_id), now)
    for part, state in late:
        _cancel_duplicate(part, state)
    return kept


def _lines(requests: list[BatchRequest]) -> list[tuple[str, dict]]:
    lines = []
    for r in requests:
        body = orjson.loads(unz(r.body_z))
        body["model"] = r.upstream_model
        lines.append((r.custom_id, body))
    return lines


def _cancel_duplicate(part: BatchPart, state: State) -> None:
    provider = MEMO.catalog.providers.get(part.provider)
    log.warning("batch part %s: a second provider batch %s was created; cancelling it", part.id, state.upstream_id)
    try:
        ADAPTERS[part.kind].cancel(provider, state.upstream_id)
    except (UpstreamError, KeyError, AttributeError):
        log.exception("batch part %s: the duplicate provider batch %s could not be cancelled", part.id,
                      state.upstream_id)


def _fallback(batch: Batch, part: BatchPart, requests: list[BatchRequest], e: UpstreamError,
              topups: dict[int, Hold]) -> State | str:
    """The gateway runs the part instead, its hold topped up to the normal price; else why not."""
    extra = sum(max(0, orjson.loads(r.prices_json).get("worst", r.held_micros) - r.held_micros) for r in requests)
    now = utcnow()
    try:
        topups[part.id] = gate.hold_for(owner(batch), extra, now, ref=topup_ref(batch.public_id, part.id, extra),
                                        ttl_seconds=hold_ttl(batch.expires_at, now))
    except GatewayError as refused:
        return (f"The provider has no batch API (HTTP {e.upstream_status}), and the organization's credits or "
                f"budgets cannot cover running these requests at the normal price: {refused.message}")
    log.warning("batch %s: provider %s has no batch API (HTTP %s); the gateway runs its %d requests",
                batch.public_id, part.provider, e.upstream_status, len(requests))
    return RUN_HERE


def _run_here(session: Session, part: BatchPart, topup: int) -> None:
    """The part becomes the gateway's own: normal price (batch percent 100), its hold share that price."""
    part.kind = batch_runner.KIND
    part.topup_micros = topup
    for r in session.scalars(select(BatchRequest).where(BatchRequest.part_id == part.id)):
        prices = orjson.loads(r.prices_json)
        prices["pct"] = 100
        r.prices_json = orjson.dumps(prices).decode()
        r.held_micros = max(r.held_micros, prices.get("worst", 0))


# ---- recovery ----------------------------------------------------------------------------------

def recover_due(now: datetime | None = None) -> int:
    """Submit again the parts stored without a provider id whose submitter's lease has run out;
    each is claimed first, so one worker does it. Returns how many were claimed here."""
    now = now or utcnow()
    with db.session_scope() as session:
        stranded = session.execute(select(BatchPart.id, BatchPart.batch_id).join(Batch, Batch.id == BatchPart.batch_id)
                                   .where(Batch.settled.is_(False), BatchPart.done.is_(False),
                                          BatchPart.upstream_id.is_(None),
                                          (BatchPart.next_poll_at.is_(None)) | (BatchPart.next_poll_at <= now))).all()
    claimed = 0
    for part_id, batch_id in stranded:
        if not _claim(part_id, now):
            continue  # another worker has it
        claimed += 1
        log.warning("batch part %s was stored but never submitted (its process stopped); submitting it", part_id)
        try:
            topups = submit_parts(batch_id, {part_id}, recovering=True)
            batch_settle.HOLDS.setdefault(batch_id, []).extend(topups)
            with db.session_scope() as session:
                part = session.get(BatchPart, part_id)
            if part.kind == batch_runner.KIND and not part.done:
                batch_runner.ensure_running(part_id)
            batch_settle.settle_if_done(batch_id)  # refused: failed now, the hold released
        except Exception:  # tried again once the new lease runs out
            log.exception("batch part %s could not be submitted; retried after its lease", part_id)
    return claimed


def _claim(part_id: int, now: datetime) -> bool:
    with db.write_lock, db.session_scope() as session:
        return session.execute(update(BatchPart).where(
            BatchPart.id == part_id, BatchPart.upstream_id.is_(None), BatchPart.done.is_(False),
            (BatchPart.next_poll_at.is_(None)) | (BatchPart.next_poll_at <= now))
            .values(next_poll_at=now + timedelta(seconds=SUBMIT_LEASE_SECONDS))
            .execution_options(synchronize_session=False)).rowcount == 1
