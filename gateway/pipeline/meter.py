"""Meter: price usage into benchmark / charge / saved, and enqueue the request's one ledger row."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway import tokens
from gateway.ledger import pricing
from gateway.ledger.writer import WRITER
from gateway.memo import MEMO, NO_MONEY
from gateway.pipeline.context import RequestContext
from gateway.scrub import scrub
from gateway.wire import sse
from gateway.wire.canonical import Usage

# Called by record() with the request's final charge, before its row is queued: the gate registers
# its hold settlement here (the gate imports the meter, never the other way round).
SETTLE: list[Callable[[RequestContext], None]] = []

def price(ctx: RequestContext, output_guess: int = 0) -> None:
    """Benchmark: the requested model's reference route at list price, for the request as the
    client sent it (tokens a savings layer removed are added back). Charge: the route used, or
    the answering layer's policy (a cache hit is free by default). Saved = benchmark - charge,
    attributed by mechanism; what no layer explains is `routing` (a fallback or a cheaper route).

    Every figure is after the org's pricing policy (list, markup, discount, byok), so what is saved
    is in the org's own money; a byok org's flat request fee is in the benchmark and the charge
    of a request that reached a provider. Usage the upstream reported malformed is estimated first
    (`output_guess`: what was relayed)."""
    if ctx.usage.unknown:
        settle_unknown(ctx, output_guess)
    money = MEMO.org_money(ctx.principal.org_id) if ctx.principal else NO_MONEY
    reference = ctx.model.reference if ctx.model else None
    removed = sum(ctx.removed_tokens.values())
    asked = Usage(ctx.usage.input_tokens + removed, ctx.usage.output_tokens)
    fee = pricing.request_fee(money) if ctx.route is not None and ctx.cache == "miss" else 0
    ctx.benchmark_micros = pricing.policy_micros(money, pricing.list_price_micros(reference, asked)) + fee
    saved: dict[str, int] = {}
    if "byok" in ctx.extra and ctx.cache == "miss":
        # The org's own key (BYOK) paid the provider: no token charge (the policy's request fee
        # only), and no saving claimed for it.
        ctx.benchmark_micros = ctx.charge_micros = fee
        ctx.saved = {}
        return
    if ctx.cache == "miss":
        ctx.charge_micros = pricing.policy_micros(money, pricing.cost_micros(ctx.route, ctx.usage)) + fee
        listed = pricing.policy_micros(money, pricing.list_price_micros(ctx.route, ctx.usage)) + fee
        if prompt_cache := listed - ctx.charge_micros:
            saved["prompt_cache"] = prompt_cache
        for mechanism, tokens_removed in ctx.removed_tokens.items():
            if tokens_removed:
                saved[mechanism] = pricing.policy_micros(
                    money, pricing.list_price_micros(reference, Usage(tokens_removed, 0)))
    else:
        # The answering layer set its charge at list price; price() may run twice, so keep that.
        layer_charge = ctx.extra.setdefault("layer_charge", ctx.charge_micros)
        ctx.charge_micros = pricing.policy_micros(money, layer_charge)
        saved[ctx.cache_mechanism] = ctx.benchmark_micros - ctx.charge_micros
    if routing := ctx.benchmark_micros - ctx.charge_micros - sum(saved.values()):
        saved["routing"] = routing
    ctx.saved = saved


def cost_headers(ctx: RequestContext) -> dict[str, str]:
    """Final figures for a whole reply. A live stream's headers leave before its usage is known:
    they carry an estimate (`x-gateway-cost-status: estimate`) and the stream ends with the final
    figures in an SSE comment (see cost_trailer)."""
    return {
        "x-gateway-cost-status": "final",
        "x-request-id": ctx.request_id,
        "x-gateway-benchmark-cost": pricing.usd(ctx.benchmark_micros),
        "x-gateway-charge": pricing.usd(ctx.charge_micros),
        "x-gateway-saved": pricing.usd(ctx.saved_micros),
        "x-gateway-cache": ctx.cache,
    }


def estimate(ctx: RequestContext) -> dict[str, str]:
    """Headers for a live stream: the prompt side priced from a byte-count estimate."""
    money = MEMO.org_money(ctx.principal.org_id) if ctx.principal else NO_MONEY
    usage = Usage(input_tokens=len(ctx.raw) // 4)
    reference = ctx.model.reference if ctx.model else None
    fee = pricing.request_fee(money) if ctx.route is not None else 0
    benchmark = pricing.policy_micros(money, pricing.list_price_micros(reference, usage)) + fee
    charge = pricing.policy_micros(money, pricing.cost_micros(ctx.route, usage)) + fee
    return {
        "x-gateway-cost-status": "estimate",
        "x-request-id": ctx.request_id,
        "x-gateway-benchmark-cost": pricing.usd(benchmark),
        "x-gateway-charge": pricing.usd(charge),
        "x-gateway-saved": pricing.usd(benchmark - charge),
        "x-gateway-cache": ctx.cache,
    }


def cost_trailer(ctx: RequestContext) -> bytes:
    return sse.comment(
        f"gateway-cost request_id={ctx.request_id} benchmark={pricing.usd(ctx.benchmark_micros)} "
        f"charge={pricing.usd(ctx.charge_micros)} saved={pricing.usd(ctx.saved_micros)} cache={ctx.cache}"
    )


def record(ctx: RequestContext) -> None:
    """Queue exactly one ledger row for an authenticated request (no-op on a second call), and
    settle the request's credit hold with its charge in the same step (no yield in between, so the
    balance the gate sees never counts the request twice or not at all)."""
    if ctx.recorded or ctx.principal is None:
        return
    ctx.recorded = True
    if ctx.error is not None and ctx.usage.total == 0:
        ctx.benchmark_micros = ctx.charge_micros = 0
        ctx.saved.clear()
    p = ctx.principal
    now = time.perf_counter()
    route = ctx.route
    err = ctx.error
    for settle in SETTLE:  # the gate's hold: released with the charge counted, before any yield
        settle(ctx)
    WRITER.enqueue({
        "request_id": ctx.request_id,
        "org_id": p.org_id,
        "key_id": p.key_id,
        "user_id": p.user_id,
        "app_id": p.app_id,
        "endpoint": ctx.endpoint,
        "requested_model": ctx.requested_model[:160],
        "model": ctx.model.slug if ctx.model else "",
        "provider": route.provider.name if route else "",
        "upstream_model": route.upstream_model if route else "",
        "stream": ctx.stream,
        "input_tokens": ctx.usage.input_tokens,
        "output_tokens": ctx.usage.output_tokens,
        "cached_tokens": ctx.usage.cached_tokens,
        "cache_write_tokens": ctx.usage.cache_write_tokens,
        "usage_estimated": ctx.usage_estimated,
        "benchmark_micros": ctx.benchmark_micros,
        "charge_micros": ctx.charge_micros,
        "saved_micros": ctx.saved_micros,
        "saved_by": ",".join(f"{k}={v}" for k, v in ctx.saved.items() if v)[:255],
        "saved_mechanisms": {k: v for k, v in ctx.saved.items() if v},  # for the usage rollups
        "cache": ctx.cache,
        "status": ctx.status,
        "error_type": err.type if err else None,
        "error_message": scrub(err.message)[:500] if err else None,
        "latency_ms": int((now - ctx.started) * 1000),
        "ttfb_ms": int((ctx.first_byte_at - ctx.started) * 1000) if ctx.first_byte_at else None,
        "attempts": ctx.attempts,
        "upstream_id": upstream_id(ctx),
        "byok": "byok" in ctx.extra,
    })


def upstream_id(ctx: RequestContext) -> str | None:
    """The provider's request or generation id, for reconciliation (None when it gave none)."""
    value = getattr(ctx, "upstream_id", None) or ctx.extra.get("upstream_id")
    return str(value)[:128] if value else None


def settle_unknown(ctx: RequestContext, output_guess: int) -> None:
    """An upstream answered but its usage counts were malformed (a string, a list, negative): the
    counts it got right are kept, the others estimated (the prompt counted, the output guessed from
    what was relayed), and the row is flagged `usage_estimated`."""
    from gateway.pipeline import prompt

    u = ctx.usage
    ctx.usage = Usage(input_tokens=u.input_tokens or prompt.count(ctx.body, history=ctx.history),
                      output_tokens=u.output_tokens or max(output_guess, 1),
                      cached_tokens=min(u.cached_tokens, u.input_tokens),
                      cache_write_tokens=min(u.cache_write_tokens, u.input_tokens))
    ctx.usage_estimated = True


def estimate_partial(ctx: RequestContext, deltas: int) -> None:
    """A stream cut short (client gone, upstream reset) never got its usage; the upstream still
    bills the prompt and what it generated, so the row carries an estimate of both."""
    ctx.usage = tokens.partial_usage(ctx.body.get("messages") or [], deltas)
    ctx.usage_estimated = True
