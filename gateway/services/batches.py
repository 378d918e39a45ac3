"""Batches: input files, submission, reads and cancel, for every org, scoped to it.

Submission (`submit`) checks the plan's batch permission, resolves every line's model through the
gateway's routing (aliases, access rules, capabilities, context windows) onto a route whose
provider has a batch API of the client's dialect (the catalog's `batch_api`, else the gateway runs
that line: services/batch_runner.py), holds the batch's worst-case cost at the batch price against
the org's credits and hard budgets (the gate's hold, named after the batch and kept for its
completion window), stores the batch, its provider parts (each under this process's submission
lease) and its requests, then submits each part to its provider (services/batch_submit.py). An
`Idempotency-Key` names the batch within the org: the same key and content returns the same batch,
another content is 422.

Failure modes: any bad line is a 400 naming the line, before anything is held or stored; a
provider that refuses a part leaves that part failed with its message and its requests errored
(not charged), except a 404/405/501 on the batch endpoints (no batch API after all), which moves
the part to the gateway's own run once its hold is topped up to the normal price (else the part
fails, saying why); the hold stays until the poller settles the batch (services/batch_settle.py).
A process that stops between storing the batch and its provider's answer leaves parts without a
provider id: the poller submits them once the lease runs out, adopting an OpenAI batch the provider
already accepted (batch_submit.recover_due); the client, whose call broke off, finds the batch by
listing its batches (or retries with its Idempotency-Key, which returns it).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway import db, tokens
from gateway.errors import (
    Conflict,
    GatewayError,
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    UpstreamError,
)
from gateway.ledger import pricing
from gateway.memo import MEMO, Principal, RouteInfo
from gateway.models import Batch, BatchFile, BatchPart, BatchRequest, utcnow
from gateway.pipeline import gate
from gateway.pipeline import route as routing
from gateway.pipeline.context import RequestContext
from gateway.providers.batch_api import OPEN, State, has_batch_api
from gateway.services import batch_runner, batch_settle, batch_submit
from gateway.services.batch_common import (  # noqa: F401  (re-exported for the API modules)
    ADAPTERS,
    CONFIG,
    at_pct,
    configure,
    epoch,
    hold_ref,
    hold_ttl,
    iter_lines,
    new_id,
    refresh_status,
    requests_of,
    store_file,
    unz,
    z,
)
from gateway.stores.counters import COUNTERS, Hold
from gateway.wire import anthropic_messages, openai_chat

log = logging.getLogger(__name__)

# The client's dialect -> the provider kind its lines can be proxied to.
DIALECT_KIND = {"openai": "openai", "anthropic": "anthropic"}
DEFAULT_BATCH_PCT = 50  # both OpenAI and Anthropic bill batch work at half the list price
OPENAI_ENDPOINTS = {"/v1/chat/completions": "chat.completions", "/v1/embeddings": "embeddings"}
MAX_CUSTOM_ID = 512


@dataclass
class Line:
    """One request of a batch, checked: its place, custom id and body."""

    number: int
    custom_id: str
    body: dict[str, Any]


# ---- files -----------------------------------------------------------------------------------

def parse_openai_jsonl(content: bytes) -> list[Line]:
    """OpenAI's batch input format, checked line by line: a JSON object with a unique `custom_id`,
    `method` POST, a supported `url` (the same on every line) and a `body` object with a `model`."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The file is not UTF-8 text (JSONL expected).", param="file") from None
    lines: list[Line] = []
    seen: set[str] = set()
    url = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(lines) >= CONFIG.max_lines:
            raise InvalidRequest(f"The file has more than {CONFIG.max_lines} requests.", param="file")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest(f"Line {number}: not valid JSON.", param="file") from None
        if not isinstance(obj, dict):
            raise InvalidRequest(f"Line {number}: each line must be a JSON object.", param="file")
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
            raise InvalidRequest(f"Line {number}: 'custom_id' must be a non-empty string of at most "
                                 f"{MAX_CUSTOM_ID} characters.", param="file")
        if custom_id in seen:
            raise InvalidRequest(f"Line {number}: duplicate custom_id '{custom_id[:100]}'; every custom_id "
                                 "in a batch must be unique.", param="file")
        seen.add(custom_id)
        if obj.get("method") != "POST":
            raise InvalidRequest(f"Line {number}: 'method' must be 'POST'.", param="file")
        if obj.get("url") not in OPENAI_ENDPOINTS:
            raise InvalidRequest(f"Line {number}: 'url' must be one of {', '.join(OPENAI_ENDPOINTS)}.", param="file")
        if url is not None and obj["url"] != url:
            raise InvalidRequest(f"Line {number}: every line must have the same 'url' ({url}).", param="file")
        url = obj["url"]
        body = obj.get("body")
        if not isinstance(body, dict):
            raise InvalidRequest(f"Line {number}: 'body' must be a JSON object.", param="file")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise InvalidRequest(f"Line {number}: 'body.model' must be a non-empty string.", param="file")
        if body.get("stream") is True:
            raise InvalidRequest(f"Line {number}: batch requests cannot stream.", param="file")
        lines.append(Line(number, custom_id, body))
    if not lines:
        raise InvalidRequest("The file has no requests.", param="file")
    return lines


def upload(principal: Principal, purpose: str, filename: str, content: bytes) -> BatchFile:
    """An input file for a batch (purpose `batch`, JSONL checked now, so a bad line is a 400 here)."""
    if purpose != "batch":
        raise InvalidRequest("Only files with purpose 'batch' are accepted here.", param="purpose")
    lines = parse_openai_jsonl(content)
    with db.write_lock, db.session_scope() as session:
        return store_file(session, principal.org_id, "batch", filename, content, len(lines))


def get_file(session: Session, org_id: int, public_id: str) -> BatchFile:
    f = session.scalar(select(BatchFile).where(BatchFile.public_id == public_id, BatchFile.org_id == org_id))
    if f is None:
        raise NotFound(f"No such File object: {public_id}", param="file_id")
    return f


# ---- submission ------------------------------------------------------------------------------

@dataclass
class Planned:
    line: Line
    route: RouteInfo
    reference: RouteInfo | None
    slug: str
    pct: int
    held: int
    kind: str  # the provider's kind (its batch API), or "gateway" (the gateway runs it)
    worst: int = 0  # the worst case at the route's normal price (what a gateway run may cost)


def batch_pct(route: RouteInfo) -> int:
    return route.batch_price_pct if route.batch_price_pct is not None else DEFAULT_BATCH_PCT


def plan_line(principal: Principal, line: Line, endpoint: str, dialect: str) -> Planned:
    """The line's route (the first of its plan whose provider has a batch API for `dialect`, as the
    catalog says: providers/batch_api.has_batch_api; else the first route, run by the gateway) and
    its worst-case cost at that route's batch price; 400 naming the line otherwise."""
    where = f"Line {line.number} (custom_id '{line.custom_id[:100]}')"
    raw = orjson.dumps(line.body)
    try:
        if endpoint == "chat.completions":
            openai_chat.check_request(line.body)
        elif endpoint == "messages":
            anthropic_messages.check_request(line.body)
        ctx = RequestContext(endpoint=endpoint, dialect=dialect, raw=raw, headers={}, raw_key=None)
        ctx.principal, ctx.body, ctx.requested_model = principal, dict(line.body), line.body["model"]
        routing.before(ctx)
    except GatewayError as e:
        raise InvalidRequest(f"{where}: {e.message}", param=e.param) from None
    kind = DIALECT_KIND[dialect]
    route = next((r for r in ctx.plan if r.provider.kind == kind and has_batch_api(r.provider)), None)
    pct = batch_pct(route) if route is not None else 100
    if route is None:  # no batch API of this dialect on any route: the gateway runs it, at the normal price
        if not ctx.plan:
            raise InvalidRequest(f"{where}: the model `{line.body['model']}` has no route.", param="model")
        route, kind = ctx.plan[0], batch_runner.KIND
    money = MEMO.org_money(principal.org_id)
    output = 0 if endpoint == "embeddings" else gate.output_cap(ctx)
    worst = pricing.worst_case_micros([route], tokens.bound(raw), output, money)
    return Planned(line, route, ctx.model.reference if ctx.model else None, route.model_slug, pct,
                   at_pct(worst, pct), kind, worst)


def fingerprint(api: str, endpoint: str, content: bytes, extra: Any = None) -> str:
    h = hashlib.sha256(f"{api}\0{endpoint}\0".encode())
    h.update(content)
    h.update(orjson.dumps(extra, option=orjson.OPT_SORT_KEYS))
    return h.hexdigest()


def _replay(principal: Principal, key: str | None, print_: str) -> Batch | None:
    if not key:
        return None
    with db.session_scope() as session:
        found = session.scalar(select(Batch).where(Batch.org_id == principal.org_id, Batch.idempotency_key == key))
    if found is not None and found.fingerprint != print_:
        raise IdempotencyKeyReused("This Idempotency-Key was used with another batch; use a new key for a "
                                   "different request.")
    return found


def submit(principal: Principal, *, api: str, endpoint: str, client_endpoint: str, lines: list[Line],
           input_file_id: str | None, metadata: dict | None, idempotency_key: str | None,
           print_: str, mechanism: str = "batch", owners: dict[str, tuple[Principal, Hold]] | None = None) -> Batch:
    """Plan, hold, store and submit a batch; returns the stored batch (its parts submitted or failed).
    `owners` (arbitrage): custom_id -> the caller who sent that request and the hold it already
    took; those requests keep the caller's request id as theirs."""
    if idempotency_key is not None and (not idempotency_key or len(idempotency_key) > 255):
        raise InvalidRequest("The Idempotency-Key header must be 1 to 255 characters.", param="Idempotency-Key")
    if (found := _replay(principal, idempotency_key, print_)) is not None:
        return found
    plan = MEMO.org_money(principal.org_id).plan
    if plan is not None and not plan.batch:
        raise PermissionDenied(f"Your organization's plan ({plan.name}) does not include batch processing.")
    if principal.scope not in gate.INFERENCE_SCOPES:
        raise PermissionDenied(f"This API key has the '{principal.scope}' scope and cannot make inference calls.")
    dialect = "anthropic" if api == "anthropic" else "openai"
    planned = [plan_line(principal, line, endpoint, dialect) for line in lines]
    now = utcnow()
    public_id = new_id("msgbatch_" if api == "anthropic" else "batch_")
    expires_at = now + timedelta(seconds=CONFIG.window_seconds)
    if owners is None:
        held = sum(p.held for p in planned)
        # Named, and kept for the whole window: settled from any worker, rebuilt after a restart
        holds: list[tuple[Hold, str | None]] = [(gate.hold_for(
            principal, held, now, ref=hold_ref(public_id, held), ttl_seconds=hold_ttl(expires_at, now)), None)]
    else:
        holds = [(hold, custom_id) for custom_id, (_, hold) in owners.items()]
        held = sum(hold.micros for hold, _ in holds)
    try:
        batch = _store(principal, public_id, api, mechanism, client_endpoint, planned, input_file_id, metadata,
                       idempotency_key, print_, held, now, expires_at, owners)
    except IntegrityError:  # the same Idempotency-Key raced us: the other one's batch wins
        for hold, _ in holds:
            COUNTERS.settle(hold, 0, now)
        found = _replay(principal, idempotency_key, print_)
        if found is None:
            raise
        return found
    batch_settle.HOLDS[batch.id] = holds
    holds.extend(batch_submit.submit_parts(batch.id))  # a crash before this: batch_submit.recover_due
    batch_settle.settle_if_done(batch.id)  # every part refused: failed now, the hold released
    with db.session_scope() as session:
        local = list(session.scalars(select(BatchPart.id).where(BatchPart.batch_id == batch.id,
                                                                BatchPart.kind == batch_runner.KIND)))
    for part_id in local:  # the gateway's own parts start now, at low priority
        batch_runner.ensure_running(part_id)
    with db.session_scope() as session:
        return session.get(Batch, batch.id)


def _store(principal: Principal, public_id: str, api: str, mechanism: str, endpoint: str, planned: list[Planned],
           input_file_id: str | None, metadata: dict | None, idempotency_key: str | None, print_: str,
           held: int, now: datetime, expires_at: datetime, owners: dict[str, tuple[Principal, Hold]] | None) -> Batch:
    with db.write_lock, db.session_scope() as session:
        batch = Batch(public_id=public_id, org_id=principal.org_id,
                      key_id=principal.key_id, user_id=principal.user_id, app_id=principal.app_id, api=api,
                      mechanism=mechanism, endpoint=endpoint, input_file_id=input_file_id, status="validating",
                      metadata_json=orjson.dumps(metadata).decode() if metadata else None,
                      idempotency_key=idempotency_key, fingerprint=print_, total=len(planned), held_micros=held,
                      created_at=now, expires_at=expires_at)
        session.add(batch)
        session.flush()
        parts: dict[str, BatchPart] = {}
        for p in planned:
            part = parts.get(p.route.provider.name)
            if part is None:
                part = parts[p.route.provider.name] = BatchPart(
                    batch_id=batch.id, org_id=batch.org_id, provider=p.route.provider.name,
                    kind=p.kind, status="validating", done=False, poll_seconds=0,
                    # this process's lease on submitting it; past it, the poller submits it
                    next_poll_at=now + timedelta(seconds=batch_submit.SUBMIT_LEASE_SECONDS))
                session.add(part)
                session.flush()
            ref = p.reference or p.route
            prices = {"in": p.route.input_micros_per_mtok, "out": p.route.output_micros_per_mtok,
                      "cached": p.route.cached_input_micros_per_mtok, "kind": p.route.provider.kind,
                      "ref_in": ref.input_micros_per_mtok, "ref_out": ref.output_micros_per_mtok,
                      "ref_cached": ref.cached_input_micros_per_mtok, "pct": p.pct,
                      "worst": p.worst}
            sender = owners[p.line.custom_id][0] if owners else None
            session.add(BatchRequest(
                batch_id=batch.id, part_id=part.id, org_id=batch.org_id,
                request_id=p.line.custom_id if sender else new_id("breq_"),
                key_id=sender.key_id if sender else None, user_id=sender.user_id if sender else None,
                app_id=sender.app_id if sender else None,
                custom_id=p.line.custom_id, line=p.line.number, requested_model=p.line.body["model"][:160],
                model=p.slug, provider=p.route.provider.name, upstream_model=p.route.upstream_model,
                prices_json=orjson.dumps(prices).decode(), body_z=z(orjson.dumps(p.line.body)),
                held_micros=p.held, status="pending"))
        return batch


# ---- reads and cancel ------------------------------------------------------------------------

def get(session: Session, org_id: int | None, public_id: str, api: str | None = None) -> Batch:
    """The batch, within the org (None: any org, for the console's super-admin); 404 otherwise."""
    q = select(Batch).where(Batch.public_id == public_id)
    if org_id is not None:
        q = q.where(Batch.org_id == org_id)
    if api is not None:
        q = q.where(Batch.api == api)
    batch = session.scalar(q)
    if batch is None:
        raise NotFound(f"No batch found with id '{public_id}'.", param="batch_id")
    return batch


def page(session: Session, org_id: int, api: str, limit: int, after: str | None,
         before: str | None = None) -> tuple[list[Batch], bool]:
    """Newest first, `limit` at a time after (or before) the batch named."""
    q = select(Batch).where(Batch.org_id == org_id, Batch.api == api)
    if after:
        anchor = get(session, org_id, after, api)
        q = q.where(Batch.id < anchor.id)
    if before:
        anchor = get(session, org_id, before, api)
        q = q.where(Batch.id > anchor.id)
    rows = list(session.scalars(q.order_by(Batch.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def cancel(org_id: int | None, public_id: str, api: str | None = None) -> Batch:
    """Ask each open part's provider to cancel; the batch is `cancelling` until the poller sees
    them end (requests that finished first are still charged). A finished batch is 409."""
    with db.session_scope() as session:
        batch = get(session, org_id, public_id, api)
        if batch.status not in OPEN:
            raise Conflict(f"Cannot cancel a batch with status '{batch.status}'.")
        parts = list(session.scalars(select(BatchPart).where(BatchPart.batch_id == batch.id,
                                                             BatchPart.done.is_(False))))
    states: dict[int, State] = {}
    for part in parts:
        provider = MEMO.catalog.providers.get(part.provider)
        if provider is not None and part.upstream_id and part.kind in ADAPTERS:
            try:
                states[part.id] = ADAPTERS[part.kind].cancel(provider, part.upstream_id)
            except UpstreamError:  # the poller will see what the provider did
                pass
    now = utcnow()
    with db.write_lock, db.session_scope() as session:
        batch = session.get(Batch, batch.id)
        if batch.status in OPEN:
            batch.status, batch.cancelling_at = "cancelling", now
        for part in session.scalars(select(BatchPart).where(BatchPart.batch_id == batch.id)):
            if part.id in states:
                part.status = states[part.id].status
            if part.kind != batch_runner.KIND:  # a runner's lease is its own: it sees the cancel itself
                part.poll_seconds = int(CONFIG.poll_min_seconds)
                part.next_poll_at = now
    with db.session_scope() as session:
        return session.get(Batch, batch.id)


def counts(batch: Batch) -> dict[str, int]:
    return {"total": batch.total, "succeeded": batch.succeeded, "errored": batch.errored,
            "canceled": batch.canceled, "expired": batch.expired,
            "processing": max(0, batch.total - batch.succeeded - batch.errored - batch.canceled - batch.expired)}




def console_cancel(actor, public_id: str) -> Batch:
    """Cancel from the console: an org's admins for their org's batches, super-admins for any;
    audited. Another org's batch is NotFound (it is not shown to exist)."""
    from gateway.services.errors import Forbidden, may_edit
    from gateway.services.tenancy import audit

    with db.session_scope() as session:
        batch = get(session, None, public_id)
    if not may_edit(actor, batch.org_id):
        raise NotFound(f"No batch found with id '{public_id}'.")
    if not actor.is_superadmin and getattr(actor, "role", "member") != "org-admin":
        raise Forbidden("Only an org admin can cancel a batch.")
    batch = cancel(None, public_id)
    with db.write_lock, db.session_scope() as session:
        audit(session, actor.email, "batch.cancel", public_id, f"status {batch.status}", org_id=batch.org_id)
    return batch
