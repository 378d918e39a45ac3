"""Batch arbitrage: a synchronous chat request that can wait goes in its org's next provider batch.

`defer(headers, raw, deadline)` (called by the inference route for /v1/chat/completions when the
request sends `x-gateway-deadline: <seconds>`): when the deadline is at least
`batch_arbitrage_min_seconds`, the caller is authenticated, the request is planned as a batch line
(its route must be on a provider with a batch API, the org's plan must allow batch) and its worst
case is held at the batch price, all in memory; the answer is 202 with a request id. A request that
cannot be deferred (shorter deadline, a stream, no batch route, a plan without batch, a body the
pipeline would refuse) returns None and is served at once, as is every request without the header.

Queued requests are grouped per (org, provider) and flushed as one provider batch (services/batches.py,
mechanism `batch_arbitrage`) when `batch_arbitrage_max_requests` are waiting or the oldest has waited
`batch_arbitrage_max_age_seconds`. `GET /v1/requests/{id}/result` answers 202 until the result is in.

Failure mode: the queue is memory until its flush; a process that dies before it loses those
requests (their holds go with it) and their ids answer 404. With several workers each flushes its
own queue, and a queued id is known only to the worker that took it until the flush.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import gevent
import orjson

from gateway.errors import GatewayError, InvalidRequest
from gateway.memo import MEMO, Principal
from gateway.models import utcnow
from gateway.pipeline import auth, gate
from gateway.pipeline.context import RequestContext
from gateway.services import batch_runner, batches
from gateway.services.batch_common import CONFIG, new_id
from gateway.stores.counters import COUNTERS, Hold

log = logging.getLogger(__name__)

HEADER = "x-gateway-deadline"
MECHANISM = "batch_arbitrage"


@dataclass
class Deferred:
    request_id: str
    principal: Principal
    body: dict
    hold: Hold


@dataclass
class Group:
    org_id: int
    provider: str
    started: float = field(default_factory=time.monotonic)
    items: list[Deferred] = field(default_factory=list)


QUEUE: dict[tuple[int, str], Group] = {}
QUEUED: dict[str, int] = {}  # request id -> org, while in memory
_loop: gevent.Greenlet | None = None


def defer(headers: Mapping[str, str], raw: bytes, deadline: str) -> tuple[str, dict] | None:
    """(request id, the 202 body) for a deferred request; None to serve it now. Raises GatewayError
    (auth, credits, budgets, a malformed deadline) for the caller to render."""
    try:
        seconds = float(deadline)
    except ValueError:
        raise InvalidRequest(f"The {HEADER} header must be a number of seconds.", param=HEADER) from None
    if not seconds > 0:
        raise InvalidRequest(f"The {HEADER} header must be a positive number of seconds.", param=HEADER)
    if seconds < CONFIG.arbitrage_min_seconds:
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
    hold = gate.hold_for(principal, planned.held, utcnow())
    key = (principal.org_id, planned.route.provider.name)
    group = QUEUE.get(key)
    if group is None:
        group = QUEUE[key] = Group(principal.org_id, planned.route.provider.name)
    group.items.append(Deferred(request_id, principal, body, hold))
    QUEUED[request_id] = principal.org_id
    if len(group.items) >= CONFIG.arbitrage_max_requests:
        gevent.spawn(flush, key)
    return request_id, {"id": request_id, "object": "gateway.deferred_request", "status": "queued",
                        "result_url": f"/v1/requests/{request_id}/result"}


def flush(key: tuple[int, str]) -> str | None:
    """Submit one group as a provider batch; returns the batch's id (None if there was nothing)."""
    group = QUEUE.pop(key, None)
    if group is None or not group.items:
        return None
    owners = {d.request_id: (d.principal, d.hold) for d in group.items}
    lines = [batches.Line(i + 1, d.request_id, d.body) for i, d in enumerate(group.items)]
    first = group.items[0].principal
    try:
        batch = batches.submit(first, api="openai", endpoint="chat.completions",
                               client_endpoint="/v1/chat/completions", lines=lines, input_file_id=None,
                               metadata=None, idempotency_key=None, print_=new_id("arb_"),
                               mechanism=MECHANISM, owners=owners)
    except GatewayError:  # a route gone since: release the holds; the ids answer 404
        log.exception("arbitrage batch of %d requests could not be submitted", len(lines))
        now = utcnow()
        for d in group.items:
            COUNTERS.settle(d.hold, 0, now)
        batch = None
    for d in group.items:
        QUEUED.pop(d.request_id, None)
    return batch.public_id if batch else None


def flush_due(force: bool = False) -> list[str]:
    """Flush every group that is full or old enough (all of them with `force`)."""
    now = time.monotonic()
    due = [k for k, g in QUEUE.items()
           if force or len(g.items) >= CONFIG.arbitrage_max_requests
           or now - g.started >= CONFIG.arbitrage_max_age_seconds]
    return [b for b in (flush(k) for k in due) if b]


def _run() -> None:
    while True:
        gevent.sleep(min(1.0, max(0.05, CONFIG.arbitrage_max_age_seconds / 4)))
        try:
            flush_due()
        except Exception:
            log.exception("arbitrage flush failed; retried")


def start() -> None:
    global _loop
    if _loop is None or _loop.dead:
        _loop = gevent.spawn(_run)


def stop() -> None:
    """Flush what is queued (a graceful stop submits it), then stop the loop."""
    global _loop
    try:
        flush_due(force=True)
    finally:
        if _loop is not None:
            _loop.kill(block=True, timeout=5)
            _loop = None
