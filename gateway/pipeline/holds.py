"""Holds: settle a request's credit hold, and the budget arithmetic the gate and the settle share.

`settle(ctx)` is called by the meter as the request's ledger row is queued, exactly once on every
path (success, error, client gone, cache hit): it releases the hold, counts the actual charge as
window spend, corrects the token buckets and raises soft-budget alerts off the request path (a
spawned greenlet records the alert and posts the webhook). Nothing here yields to the hub before
the ledger enqueue, so the balance the gate sees never counts a request twice or not at all.
"""

from __future__ import annotations

import time
from datetime import datetime

import gevent

from gateway.memo import MEMO, BudgetInfo
from gateway.models import utcnow
from gateway.pipeline.context import RequestContext
from gateway.stores.counters import COUNTERS, Hold, previous_start, window_start

THRESHOLDS = (50, 80, 100)
ALERTED: set[tuple[int, datetime, int]] = set()  # (budget, window start, threshold) alerted here


def clock() -> float:
    return time.monotonic()


def cap_micros(b: BudgetInfo, now: datetime) -> int:
    """The budget's cap in the current window: with rollover, plus what the previous window left
    unused (at most one window's cap)."""
    if not b.rollover:
        return b.amount_micros
    prev = previous_start(b.window, window_start(b.window, now))
    unused = max(0, b.amount_micros - COUNTERS.spent(b.entity, b.window, prev))
    return b.amount_micros + min(b.amount_micros, unused)


def remaining_micros(b: BudgetInfo, now: datetime) -> int:
    spent = COUNTERS.spent(b.entity, b.window, window_start(b.window, now)) + COUNTERS.held(b.entity)
    return max(0, cap_micros(b, now) - spent)


def settle(ctx: RequestContext) -> None:
    """Release the request's hold and count its charge (no yield: atomic with the ledger enqueue)."""
    hold: Hold | None = ctx.extra.get("hold")
    if hold is None or hold.settled:
        return
    now = utcnow()
    COUNTERS.settle(hold, ctx.charge_micros, now)
    if hold.buckets:
        COUNTERS.adjust(hold.buckets, ctx.usage.total - hold.tokens, clock())
    if ctx.charge_micros and ctx.principal is not None:
        _soft_alerts(ctx, now)
def _soft_alerts(ctx: RequestContext, now: datetime) -> None:
    for b in MEMO.budgets_for(ctx.principal):
        if b.hard:
            continue
        start = window_start(b.window, now)
        cap = cap_micros(b, now)
        spent = COUNTERS.spent(b.entity, b.window, start)
        for threshold in THRESHOLDS:
            mark = (b.id, start, threshold)
            if cap > 0 and spent * 100 >= cap * threshold and mark not in ALERTED:
                ALERTED.add(mark)
                from gateway.services import budgets as budget_service

                gevent.spawn(budget_service.alert, b, start, threshold, spent, cap,
                             MEMO.org_money(b.org_id).webhook_url)
