"""The gateway's own batch, for routes whose provider has no batch API (OpenRouter, Ollama, Gemini,
Bedrock's on-demand models, or a dialect the provider's batch API does not speak).

A part of kind `gateway` is run here, request by request, at low priority: never more than
`batch_concurrency` requests at once across the process, and none started while
`batch_yield_in_flight` synchronous requests are waiting on their upstreams. Each request goes to its
route through dispatch's `call_route` (translation included) and its outcome is written to its row as
it finishes, so a restart resumes with the requests still pending (one that has its result is never
sent or charged again; one that was in flight when the process died is sent again). Charged at the
route's normal price (its batch percent is 100: no discount to claim). Cancel: requests not yet
started are canceled. The completion window holds here too: a request not started by the batch's
`expires_at` is `expired` (not charged), and so is the part; what was running finishes and is charged.
A request whose run failed inside the gateway stays pending for the next runner, until the window ends.

One runner per part across workers: the runner holds a lease (`next_poll_at`, renewed as it goes);
the poller starts a runner only for a part whose lease has run out and that runs nowhere here.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import gevent
import orjson
from gevent.lock import BoundedSemaphore
from sqlalchemy import select

from gateway import db
from gateway.errors import GatewayError
from gateway.memo import MEMO, Principal, RouteInfo
from gateway.models import Batch, BatchPart, BatchRequest, utcnow
from gateway.pipeline import dispatch, drain
from gateway.pipeline.context import RequestContext
from gateway.providers.batch_api import Outcome
from gateway.routing import settings as routing_settings
from gateway.services.batch_common import CONFIG, record_one, refresh_status, unz

log = logging.getLogger(__name__)

KIND = "gateway"
LEASE_SECONDS = 60
ENDPOINTS = {"/v1/chat/completions": "chat.completions", "/v1/embeddings": "embeddings", "/v1/messages": "messages"}
RUNNING: dict[int, gevent.Greenlet] = {}
_slots: BoundedSemaphore | None = None


def _semaphore() -> BoundedSemaphore:
    global _slots
    if _slots is None or _slots.counter > CONFIG.concurrency:  # (re)configured
        _slots = BoundedSemaphore(CONFIG.concurrency)
    return _slots


def ensure_running(part_id: int) -> None:
    """Start the part's runner here unless one runs already."""
    glet = RUNNING.get(part_id)
    if glet is not None and not glet.dead:
        return
    RUNNING[part_id] = gevent.spawn(run_part, part_id)


def stop() -> None:
    """Stop every runner (the server is stopping) and give up their leases: the parts resume with
    their pending requests at the next start, or on another worker."""
    stopped = [part_id for part_id, glet in RUNNING.items() if not glet.dead]
    for glet in list(RUNNING.values()):
        glet.kill(block=True, timeout=5)
    RUNNING.clear()
    if stopped:
        with db.write_lock, db.session_scope() as session:
            for part in session.scalars(select(BatchPart).where(BatchPart.id.in_(stopped),
                                                                BatchPart.done.is_(False))):
                part.next_poll_at = utcnow()


def wait(part_id: int, timeout: float | None = None) -> None:
    glet = RUNNING.get(part_id)
    if glet is not None:
        glet.join(timeout)


def _lease(part_id: int) -> None:
    with db.write_lock, db.session_scope() as session:
        part = session.get(BatchPart, part_id)
        part.next_poll_at = utcnow() + timedelta(seconds=LEASE_SECONDS)


def run_part(part_id: int) -> None:
    """Run the part's pending requests, then mark it done (the poller settles the batch)."""
    with db.session_scope() as session:
        part = session.get(BatchPart, part_id)
        batch = session.get(Batch, part.batch_id)
        pending = list(session.scalars(select(BatchRequest.id).where(
            BatchRequest.part_id == part_id, BatchRequest.status == "pending").order_by(BatchRequest.line)))
    _lease(part_id)
    owner = Principal(key_id=batch.key_id or 0, org_id=batch.org_id, org_name="", scope="inference",
                      user_id=batch.user_id, app_id=batch.app_id)
    slots = _semaphore()
    workers = []
    for request_id in pending:
        if not _slot(batch, slots):
            break
        workers.append(gevent.spawn(_run_one, batch, owner, request_id, slots))
    gevent.joinall(workers)
    now = utcnow()
    with db.write_lock, db.session_scope() as session:
        part = session.get(BatchPart, part_id)
        batch = session.get(Batch, part.batch_id)
        left = list(session.scalars(select(BatchRequest).where(BatchRequest.part_id == part_id,
                                                               BatchRequest.status == "pending")))
        if batch.cancelling_at is not None:
            for r in left:  # not started before the cancel
                r.status = "canceled"
            part.status = "cancelled"
        elif _past(batch, now):
            for r in left:  # not started within the completion window
                r.status = "expired"
            part.status = "expired" if left else "completed"
        elif left:  # their run failed here: the next runner (after this lease) tries them again
            return
        else:
            part.status = "completed"
        part.done = True
        refresh_status(session, batch, now)


def _slot(batch: Batch, slots: BoundedSemaphore) -> bool:
    """A slot for the next request, once synchronous traffic leaves room; False (no slot held) when
    the batch is being cancelled or its window ends first (checked again once the slot is ours)."""
    while drain.in_flight() >= CONFIG.yield_in_flight:  # synchronous traffic first
        if _past(batch):
            return False
        gevent.sleep(0.05)
    while not slots.acquire(timeout=1.0):
        if _past(batch):
            return False
    with db.session_scope() as session:
        cancelling, expires = session.execute(select(Batch.cancelling_at, Batch.expires_at)
                                              .where(Batch.id == batch.id)).one()
    batch.expires_at = expires
    if cancelling is not None or _past(batch):
        slots.release()
        return False
    return True


def _past(batch: Batch, now=None) -> bool:
    """The batch's completion window is over."""
    return batch.expires_at is not None and (now or utcnow()) >= batch.expires_at


def _route(r: BatchRequest) -> RouteInfo | None:
    model = MEMO.catalog.models.get(r.model)
    for route in model.routes if model else ():
        if route.provider.name == r.provider and route.upstream_model == r.upstream_model:
            return route
    return None


def _run_one(batch: Batch, owner: Principal, request_id: int, slots: BoundedSemaphore) -> None:
    try:
        with db.session_scope() as session:
            r = session.get(BatchRequest, request_id)
        body = orjson.loads(unz(r.body_z))
        outcome = _call(batch, owner, r, body)
        with db.write_lock, db.session_scope() as session:
            r = session.get(BatchRequest, request_id)
            if r.status == "pending":
                record_one(r, outcome, MEMO.org_money(batch.org_id))
            part = session.get(BatchPart, r.part_id)
            part.next_poll_at = utcnow() + timedelta(seconds=LEASE_SECONDS)
    except Exception:  # left pending: the next runner retries it
        log.exception("batch request %s failed to run", request_id)
    finally:
        slots.release()


def _call(batch: Batch, owner: Principal, r: BatchRequest, body: dict) -> Outcome:
    route = _route(r)
    if route is None:
        return Outcome(r.custom_id, "errored", 0, None, {"code": "route_gone",
                                                         "message": "The request's route is no longer configured."})
    endpoint = ENDPOINTS.get(batch.endpoint, "chat.completions")
    ctx = RequestContext(endpoint=endpoint, dialect="anthropic" if batch.api == "anthropic" else "openai",
                         raw=orjson.dumps(body), headers={}, raw_key=None)
    ctx.principal, ctx.body, ctx.requested_model = owner, body, r.requested_model
    ctx.model = MEMO.catalog.models.get(r.model)
    deadline = time.perf_counter() + routing_settings.current().retry.deadline_seconds
    try:
        reply = dispatch.call_route(ctx, route, deadline)
        return Outcome(r.custom_id, "succeeded", 200, orjson.loads(reply.body or b"{}"), None, ctx.usage,
                       ctx.upstream_id)
    except GatewayError as e:
        error = {"message": e.message, "type": e.type, "code": getattr(e, "code", None) or e.type}
        return Outcome(r.custom_id, "errored", e.status, {"error": error}, None)
