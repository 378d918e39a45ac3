"""Quotes: what a chat request would cost an org now, without calling any provider. One computation
for `POST /v1/account/quote` and the dashboard's pricing preview.

The request is decoded and routed as the pipeline would route it now (access rules, health,
strategy), its prompt counted offline and its output taken at the cap the gate would hold; each
route of the plan is priced under the org's pricing policy (a route paid by the org's own BYOK key
costs only the per-request fee). A request that cannot be routed raises the pipeline's GatewayError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway import tokens
from gateway.ledger import pricing
from gateway.ledger.pricing import usd
from gateway.memo import MEMO, OrgMoney, Principal, RouteInfo
from gateway.pipeline import decode, gate
from gateway.pipeline import route as routing
from gateway.pipeline.context import RequestContext
from gateway.stores.byok import KEYS as BYOK_KEYS
from gateway.wire.canonical import Usage


def plan_for(p: Principal, model: str, headers: Mapping[str, str], body: dict[str, Any] | None = None,
             endpoint: str = "chat.completions") -> RequestContext:
    """A context routed as the pipeline would route it now (access rules, health, strategy)."""
    raw = orjson.dumps(body or {"model": model, "messages": [{"role": "user", "content": ""}]})
    ctx = RequestContext(endpoint, "openai", raw, headers, None)
    ctx.principal = p
    decode.before(ctx)
    routing.before(ctx)
    return ctx


def per_mtok(money: OrgMoney, micros: int | None) -> str | None:
    return None if micros is None else usd(pricing.policy_micros(money, micros))


def byok(p: Principal, r: RouteInfo) -> bool:
    return BYOK_KEYS.get(p.org_id, r.provider.name) is not None


def cost(p: Principal, money: OrgMoney, r: RouteInfo, usage: Usage) -> int:
    fee = pricing.request_fee(money)
    return fee if byok(p, r) else pricing.policy_micros(money, pricing.cost_micros(r, usage)) + fee


def quote(p: Principal, body: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """The quote object of POST /v1/account/quote for `body` (OpenAI's chat shape, or Anthropic's
    with `anthropic-version` or a top-level `system`)."""
    anthropic = bool(headers.get("anthropic-version")) or "system" in body
    ctx = plan_for(p, "", headers, body, "messages" if anthropic else "chat.completions")
    money = MEMO.org_money(p.org_id)
    messages = body.get("messages") or []
    prompt = tokens.count_messages(messages)
    system = body.get("system")
    if isinstance(system, str):
        prompt += tokens.count(system)
    elif isinstance(system, list):
        prompt += tokens.count(" ".join(b.get("text", "") for b in system if isinstance(b, dict)
                                        and isinstance(b.get("text"), str)))
    output = gate.output_cap(ctx)
    usage = Usage(prompt, output)
    reference = ctx.model.reference if ctx.model else None
    fee = pricing.request_fee(money)
    benchmark = pricing.policy_micros(money, pricing.list_price_micros(reference, usage)) + fee
    routes = [{"provider": r.provider.name, "upstream_model": r.upstream_model, "byok": byok(p, r),
               "input_per_mtok": per_mtok(money, r.input_micros_per_mtok),
               "output_per_mtok": per_mtok(money, r.output_micros_per_mtok),
               "estimated_cost_usd": usd(cost(p, money, r, usage))} for r in ctx.plan]
    charge = cost(p, money, ctx.plan[0], usage) if ctx.plan else 0
    return {
        "object": "quote", "model": ctx.model.slug if ctx.model else ctx.requested_model,
        "estimated_input_tokens": prompt, "estimated_output_tokens": output,
        "benchmark_cost_usd": usd(benchmark), "estimated_charge_usd": usd(charge),
        "estimated_saved_usd": usd(benchmark - charge), "routes": routes,
    }
