"""Gate: scope, plan rate limits, hard budgets and the credit hold, before any answer (enforcing).

Reads memory only (memo.py for keys, plans, budgets and balances; stores/counters.py for holds,
window spend and token buckets). In order:

1. scope: the key may make inference calls;
2. rate limits: the org's plan (rpm, tpm per org; key_rpm, key_tpm per key), token buckets;
   over a limit -> 429 with `retry-after` and the dialect's rate-limit headers;
3. hold: the request's worst-case cost (prompt tokens bounded from the body size, plus the output
   cap: the client's limit, else the output budget, else the model's max output, else 4096 tokens
   or the context window if smaller) at the dearest route it may take, after the org's pricing policy. Refused when
   the balance minus open holds cannot cover it (402), or when a hard budget of the org, user, app
   or key cannot (429 `budget_exceeded`, counting open holds).

`settle(ctx)` (called by the meter as the request's ledger row is queued, exactly once on every
path: success, error, client gone, cache hit) releases the hold, counts the actual charge as window
spend, corrects the token buckets and raises soft-budget alerts off the request path.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

import gevent

from gateway import tokens
from gateway.errors import BudgetExceeded, InsufficientCredits, PermissionDenied, RateLimited
from gateway.ledger import pricing
from gateway.memo import MEMO, BudgetInfo, entities
from gateway.models import utcnow
from gateway.pipeline import byok, meter, savings
from gateway.pipeline.context import Reply, RequestContext
from gateway.pipeline.savings import output_budget
from gateway.stores.counters import (
    COUNTERS,
    BudgetCheck,
    Hold,
    Limit,
    LimitState,
    Refusal,
    next_start,
    previous_start,
    window_start,
)

log = logging.getLogger(__name__)

name, enforcing = "gate", True

INFERENCE_SCOPES = frozenset({"inference", "admin"})
OUTPUT_FIELDS = {"chat.completions": ("max_completion_tokens", "max_tokens"), "messages": ("max_tokens",),
                 "responses": ("max_output_tokens",)}
NO_OUTPUT = frozenset({"embeddings", "messages.count_tokens"})
FREE = frozenset({"messages.count_tokens"})  # answered without a charge
DEFAULT_OUTPUT_CAP = 4096  # a model with no declared output or context limit
THRESHOLDS = (50, 80, 100)


def before(ctx: RequestContext) -> Reply | None:
    principal = ctx.principal
    assert principal is not None
    if principal.scope not in INFERENCE_SCOPES:
        raise PermissionDenied(f"This API key has the '{principal.scope}' scope and cannot make inference calls.")
    money = MEMO.org_money(principal.org_id)
    prompt = tokens.bound(ctx.raw)
    output = 0 if ctx.endpoint in NO_OUTPUT else output_cap(ctx)
    if money.plan is not None:
        _limit(ctx, money.plan, prompt + output)
    micros = 0 if ctx.endpoint in FREE else pricing.worst_case_micros(
        byok.paid_routes(principal.org_id,  # a route on the org's own key costs it no tokens
                         ctx.plan or ((ctx.model.reference,) if ctx.model and ctx.model.reference else ())),
        prompt, output, money)
    result = hold_for(principal, micros, utcnow())
    result.tokens = prompt + output
    result.buckets = ctx.extra.get("limit_keys", ())
    ctx.extra["hold"] = result
    return None


def hold_for(principal, micros: int, now: datetime, *, ref: str | None = None,
             ttl_seconds: float | None = None) -> Hold:
    """Hold `micros` for the principal against its credits and hard budgets (every request, and a
    batch submission, whose hold is named and lives its window: `ref`, `ttl_seconds`); raises 402
    or 429 budget_exceeded when they cannot cover it."""
    budgets = MEMO.budgets_for(principal)
    checks = [BudgetCheck(b.id, b.entity, b.window, cap_micros(b, now)) for b in budgets if b.hard]
    result = COUNTERS.hold(principal.org_id, micros, MEMO.balance(principal.org_id), entities(principal),
                           checks, now, ref=ref, ttl_seconds=ttl_seconds)
    if isinstance(result, Refusal):
        refuse(result, principal, budgets, micros, now)
    return result


def refuse(result: Refusal, principal, budgets: list[BudgetInfo], micros: int, now: datetime):
    """The error for a refused hold: 429 budget_exceeded (with retry-after) or 402."""
    if result.reason == "budget":
        b = next(b for b in budgets if b.id == result.budget_id)
        wait = (next_start(b.window, window_start(b.window, now)) - now).total_seconds()
        e = BudgetExceeded(f"The {b.entity[0]}'s {b.window}ly budget of ${pricing.usd(cap_micros(b, now))} "
                           "is used up (open requests count). It resets at the start of the next "
                           f"{b.window} (UTC).")
        e.retry_after = math.ceil(wait)
        raise e
    raise InsufficientCredits(
        f"Your organization '{principal.org_name}' does not have enough credits for this request "
        f"(at most ${pricing.usd(micros)} with its output limit). Add credits, or lower max_tokens."
        if micros > 0 and MEMO.balance(principal.org_id) > 0 else
        f"Your organization '{principal.org_name}' has no credits left. Add credits to continue."
    )


def output_cap(ctx: RequestContext) -> int:
    """The most output tokens the upstream may produce for this request."""
    asked = [v for f in OUTPUT_FIELDS.get(ctx.endpoint, ()) if isinstance(v := ctx.body.get(f), int) and v > 0]
    if asked:
        return max(asked)
    try:  # the layer is advisory: if it fails it sets nothing, and the bounds below apply
        if ctx.endpoint in OUTPUT_FIELDS and savings.enabled(ctx, output_budget.name):
            cap = output_budget.budget(ctx)
            if cap:
                return max(cap, output_budget.MINIMUM.get(ctx.endpoint, 1))
    except Exception:
        log.warning("output budget unavailable for the hold; using the model's bound", exc_info=True)
    model = ctx.model
    if model is not None and model.max_output_tokens:
        return model.max_output_tokens
    # No declared output limit: assume a common one rather than the whole context window, which
    # would hold more than most balances for every request.
    windows = [r.context_window for r in ctx.plan if r.context_window]
    return min(DEFAULT_OUTPUT_CAP, max(windows)) if windows else DEFAULT_OUTPUT_CAP


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


# ---- rate limits ---------------------------------------------------------------------------------

def _limit(ctx: RequestContext, plan, tokens_estimate: int) -> None:
    p = ctx.principal
    limits = []
    for per_minute, key, amount in ((plan.rpm, f"org:{p.org_id}:rpm", 1),
                                    (plan.tpm, f"org:{p.org_id}:tpm", tokens_estimate),
                                    (plan.key_rpm, f"key:{p.key_id}:rpm", 1),
                                    (plan.key_tpm, f"key:{p.key_id}:tpm", tokens_estimate)):
        if per_minute:
            limits.append(Limit(key, per_minute, amount))
    if not limits:
        return
    states = COUNTERS.take(limits, _clock())
    ctx.extra["limits"] = states
    refused = [s for s in states if s.retry_after > 0]
    if refused:
        worst = max(refused, key=lambda s: s.retry_after)
        kind = "requests" if worst.key.endswith("rpm") else "tokens"
        who = "organization" if worst.key.startswith("org:") else "API key"
        e = RateLimited(f"Rate limit reached for your {who}: {worst.limit} {kind} per minute. "
                        f"Please try again in {_duration(worst.retry_after)}.",
                        headers=limit_headers(ctx.dialect, states))
        e.retry_after = max(1, math.ceil(worst.retry_after))
        raise e
    ctx.extra["limit_keys"] = tuple(s.key for s in states if s.key.endswith("tpm"))


def _clock() -> float:
    import time

    return time.monotonic()


def _duration(seconds: float) -> str:
    """OpenAI's reset format: 120ms, 1s, 6m0s."""
    if seconds < 1:
        return f"{max(1, int(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _tightest(states: list[LimitState], suffix: str) -> LimitState | None:
    found = [s for s in states if s.key.endswith(suffix)]
    return min(found, key=lambda s: (s.remaining, -s.reset_seconds)) if found else None


def limit_headers(dialect: str, states: list[LimitState]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* trio per requests and tokens, or Anthropic's anthropic-ratelimit-*;
    where both the org and the key are limited, the tighter one."""
    out: dict[str, str] = {}
    for suffix, kind in (("rpm", "requests"), ("tpm", "tokens")):
        s = _tightest(states, suffix)
        if s is None:
            continue
        if dialect == "anthropic":
            reset = (datetime.now(UTC) + timedelta(seconds=s.reset_seconds)).replace(microsecond=0)
            out[f"anthropic-ratelimit-{kind}-limit"] = str(s.limit)
            out[f"anthropic-ratelimit-{kind}-remaining"] = str(s.remaining)
            out[f"anthropic-ratelimit-{kind}-reset"] = reset.isoformat().replace("+00:00", "Z")
        else:
            out[f"x-ratelimit-limit-{kind}"] = str(s.limit)
            out[f"x-ratelimit-remaining-{kind}"] = str(s.remaining)
            out[f"x-ratelimit-reset-{kind}"] = _duration(s.reset_seconds) if s.reset_seconds else "0s"
    return out


def headers(ctx: RequestContext) -> dict[str, str]:
    """Response headers: the rate-limit state and the tightest budget's remaining USD."""
    out: dict[str, str] = {}
    if states := ctx.extra.get("limits"):
        out.update(limit_headers(ctx.dialect, states))
    if ctx.principal is not None and (budgets := MEMO.budgets_for(ctx.principal)):
        now = utcnow()
        out["x-gateway-budget-remaining"] = pricing.usd(min(remaining_micros(b, now) for b in budgets))
    return out


# ---- settle --------------------------------------------------------------------------------------

def settle(ctx: RequestContext) -> None:
    """Release the request's hold and count its charge (no yield: atomic with the ledger enqueue)."""
    hold: Hold | None = ctx.extra.get("hold")
    if hold is None or hold.settled:
        return
    now = utcnow()
    COUNTERS.settle(hold, ctx.charge_micros, now)
    if hold.buckets:
        COUNTERS.adjust(hold.buckets, ctx.usage.total - hold.tokens, _clock())
    if ctx.charge_micros and ctx.principal is not None:
        _soft_alerts(ctx, now)


ALERTED: set[tuple[int, datetime, int]] = set()  # (budget, window start, threshold) alerted here


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


meter.SETTLE.append(settle)
