"""The account API: what a key's org has, pays and would pay. OpenAI error shapes; the key's org only.

- `GET /v1/account`: the org, its balance and open holds, plan and limits, budgets with what is left.
- `GET /v1/account/pricing`: per model the org's price per million tokens (input, output, cached)
  after its pricing policy, the benchmark list price, and the route a request would take now.
- `POST /v1/account/quote`: a chat request (OpenAI's shape, or Anthropic's with `anthropic-version`
  or a top-level `system`) priced without calling any provider: estimated tokens, benchmark,
  charge and saving, and every route of its plan with its price and estimated cost.
- `GET /v1/account/credits`: the credit transaction log, newest first (`limit`, `before`).

Money is USD decimal strings. Everything is read from memory (memo.py, the counters) except the
credit log, which is one indexed query.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import request

from gateway import db
from gateway.api.blueprint import accepts, bp, error_response
from gateway.api.principals import as_json, json_object, principal
from gateway.errors import GatewayError, InvalidRequest
from gateway.ledger.pricing import usd
from gateway.memo import MEMO, Principal
from gateway.models import utcnow
from gateway.pipeline import gate
from gateway.pipeline.context import RequestContext
from gateway.services import credits, quotes
from gateway.stores.byok import KEYS as BYOK_KEYS
from gateway.stores.counters import COUNTERS

MAX_PAGE = 100


@bp.get("/account")
@accepts()
def account():
    try:
        p = principal()
    except GatewayError as e:
        return error_response(e, "openai")
    money = MEMO.org_money(p.org_id)
    balance = MEMO.balance(p.org_id)
    held = COUNTERS.held(("org", p.org_id))
    now = utcnow()
    plan = money.plan
    return as_json({
        "object": "account",
        "org": {"id": p.org_id, "name": p.org_name},
        "key": {"id": p.key_id, "name": p.key_name, "scope": p.scope, "user_id": p.user_id, "app_id": p.app_id},
        "currency": "USD",
        "balance": usd(balance),
        "open_holds": usd(held),
        "available": usd(balance - held),
        "pricing": {"policy": money.pricing, "percent": money.pricing_bps / 100,
                    "request_fee": usd(money.request_fee_micros)},
        "plan": None if plan is None else {
            "name": plan.name, "rpm": plan.rpm, "tpm": plan.tpm, "key_rpm": plan.key_rpm, "key_tpm": plan.key_tpm,
            "max_keys": plan.max_keys, "batch": plan.batch,
            "features": None if plan.features is None else sorted(plan.features)},
        "budgets": [{"entity": b.entity[0], "entity_id": b.entity[1], "window": b.window,
                     "amount": usd(b.amount_micros), "cap": usd(gate.cap_micros(b, now)), "hard": b.hard,
                     "rollover": b.rollover, "remaining": usd(gate.remaining_micros(b, now))}
                    for b in MEMO.budgets_for(p)],
        "byok_providers": sorted(prov for (org, prov) in BYOK_KEYS.keys if org == p.org_id),
    })


def _plan_for(p: Principal, model: str) -> RequestContext:
    return quotes.plan_for(p, model, request.headers)


@bp.get("/account/pricing")
@accepts("model")
def account_pricing():
    try:
        p = principal()
    except GatewayError as e:
        return error_response(e, "openai")
    money = MEMO.org_money(p.org_id)
    wanted = request.args.get("model")
    data = []
    for slug, model in sorted(MEMO.catalog.models.items()):
        if not model.routes or (wanted and slug != wanted):
            continue
        try:
            ctx = _plan_for(p, slug)
        except GatewayError:  # not allowed for this key, or no usable route now
            continue
        now, ref = (ctx.plan[0] if ctx.plan else None), model.reference
        data.append({
            "model": slug,
            "input_per_mtok": quotes.per_mtok(money, now.input_micros_per_mtok) if now else None,
            "output_per_mtok": quotes.per_mtok(money, now.output_micros_per_mtok) if now else None,
            "cached_input_per_mtok": quotes.per_mtok(money, now.cached_input_micros_per_mtok) if now else None,
            "byok": bool(now and quotes.byok(p, now)),
            "benchmark": {"input_per_mtok": usd(ref.input_micros_per_mtok) if ref else None,
                          "output_per_mtok": usd(ref.output_micros_per_mtok) if ref else None},
            "route": None if now is None else {"provider": now.provider.name, "upstream_model": now.upstream_model},
        })
    return as_json({"object": "list", "currency": "USD", "pricing_policy": money.pricing, "data": data})


@bp.post("/account/quote")
@accepts()
def account_quote():
    try:
        p = principal()
        return as_json(quotes.quote(p, json_object(), request.headers))
    except GatewayError as e:
        return error_response(e, "openai")


def epoch(moment: datetime) -> int:
    """A stored naive-UTC time as unix seconds."""
    return int(moment.replace(tzinfo=UTC).timestamp())


def page_limit(default: int = 20) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {MAX_PAGE}.", param="limit")
    return int(raw)


@bp.get("/account/credits")
@accepts("limit", "before")
def account_credits():
    try:
        p = principal()
        limit = page_limit()
        before = request.args.get("before")
        if before is not None and (not before.isdigit() or len(before) > 18):
            raise InvalidRequest("'before' must be a transaction id.", param="before")
    except GatewayError as e:
        return error_response(e, "openai")
    with db.session_scope() as session:
        rows = credits.transactions(session, p.org_id, limit=limit + 1,
                                    before_id=int(before) if before is not None else None)
    data = [{"id": t.id, "object": "credit.transaction", "kind": t.kind, "debit": t.debit, "credit": t.credit,
             "amount": usd(t.amount_micros),
             # signed, as the org's wallet sees it
             "change": usd(t.amount_micros if t.credit == "org" else -t.amount_micros),
             "requests": t.requests, "reason": t.reason, "actor": t.actor,
             "created_at": epoch(t.created_at)} for t in rows[:limit]]
    return as_json({"object": "list", "data": data, "has_more": len(rows) > limit,
                    "last_id": data[-1]["id"] if data else None})

