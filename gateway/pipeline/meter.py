"""Meter: price usage into benchmark / charge / saved, and enqueue the request's one ledger row."""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction

from gateway import tokens
from gateway.ledger import attribution, pricing
from gateway.ledger.rollups import MECHANISMS
from gateway.ledger.writer import WRITER
from gateway.memo import MEMO, NO_MONEY
from gateway.pipeline import prefixes
from gateway.pipeline.context import RequestContext
from gateway.scrub import scrub
from gateway.stores.prefixes import PREFIXES
from gateway.wire import sse
from gateway.wire.canonical import Usage

# Called by record() with the request's final charge, before its row is queued: the gate registers
# its hold settlement here (the gate imports the meter, never the other way round).
SETTLE: list[Callable[[RequestContext], None]] = []


def price(ctx: RequestContext, output_guess: int = 0) -> None:
    """Benchmark: what the request as the client sent it would have cost sent directly to the
    requested model's reference route, in the provider's tokens, with the caching the provider
    does by itself. Charge: the route used, as the provider billed it, or the answering layer's
    policy (a cache hit is free by default). Saved = benchmark - charge, split by mechanism so that
    the parts sum exactly (ledger.attribution); what no layer explains is `routing`.

    In the provider's tokens: the tokens a layer removed are counted locally, so they are scaled by
    this request's ratio of the provider's prompt count to the local count of what was sent. The
    provider's automatic caching (OpenAI) is in the benchmark: from the provider's report when the
    request went out as the client sent it, else estimated from the prefixes seen lately for this
    key and model (pipeline.prefixes). Either estimate flags the row `benchmark_estimated`.

    Every figure is after the org's pricing policy (list, markup, discount, byok), so what is saved
    is in the org's own money; a byok org's flat request fee is in the benchmark and the charge
    of a request that reached a provider. Usage the upstream reported malformed is estimated first
    (`output_guess`: what was relayed)."""
    if ctx.usage.unknown:
        settle_unknown(ctx, output_guess)
    money = MEMO.org_money(ctx.principal.org_id) if ctx.principal else NO_MONEY
    reference = ctx.model.reference if ctx.model else None
    fee = pricing.request_fee(money) if ctx.route is not None and ctx.cache == "miss" else 0
    found = prefixes.of(ctx)
    layer_costs = {m: c for m, c in ctx.extra.get("layer_costs", {}).items() if c and m in MECHANISMS}
    if "byok" in ctx.extra and ctx.cache == "miss":
        # The org's own key (BYOK) paid the provider: no token charge (the policy's request fee
        # only), and no saving claimed for it.
        ctx.benchmark_micros = ctx.charge_micros = fee
        ctx.saved = {}
        return
    if ctx.cache == "miss":
        miss, estimated = describe_miss(ctx, reference, found)
        ctx.benchmark_micros, ctx.charge_micros, ctx.saved = attribution.price_miss(money, miss, fee, layer_costs)
    else:
        # Replayed usage; the answering layer set its charge at list price (price() may run twice).
        u = ctx.usage
        cached = prefixes.auto_cached(reference, u.input_tokens, found)
        estimated = cached > 0
        direct = Usage(u.input_tokens, u.output_tokens, cached_tokens=cached)
        ctx.benchmark_micros = pricing.policy_micros(money, pricing.cost_micros(reference, direct))
        layer_charge = ctx.extra.setdefault("layer_charge", ctx.charge_micros)
        ctx.charge_micros = pricing.policy_micros(money, layer_charge) + sum(layer_costs.values())
        saved = ctx.benchmark_micros - ctx.charge_micros
        ctx.saved = {ctx.cache_mechanism: saved} if saved else {}
    ctx.extra["benchmark_estimated"] = estimated
    if ctx.error is None:
        prefixes.remember(ctx)
    if "cost_to" in ctx.extra:
        move_cost(ctx)


def move_cost(ctx: RequestContext) -> None:
    """A layer's own call (the semantic cache's verifier) is the layer's cost on the request it
    served: its charge moves there (`cost_to`: that request's layer_costs and the mechanism), once;
    this row keeps its usage, at no charge. Once the other row is recorded, the charge stays here."""
    costs, mechanism = ctx.extra["cost_to"]
    if not ctx.extra.get("cost_moved"):
        if costs.get("closed"):
            return
        ctx.extra["cost_moved"] = True
        costs[mechanism] = costs.get(mechanism, 0) + ctx.charge_micros
    ctx.benchmark_micros = ctx.charge_micros = 0
    ctx.saved = {}


def describe_miss(ctx: RequestContext, reference, found) -> tuple[attribution.Miss, bool]:
    """The usages of a provider-answered request (see ledger.attribution) and whether the
    benchmark side is an estimate."""
    sent, route = ctx.usage, ctx.route
    estimated = False
    kind = route.provider.kind if route else ""
    ref_kind = reference.provider.kind if reference else ""
    # Cache reads and writes the gateway caused: its own breakpoints on a route that reads them.
    state = ctx.extra.get("prompt_cache") or {}
    caused = bool(state.get("breakpoints")) and kind in pricing.CACHE_WRITE_PREMIUM
    plain = Usage(sent.input_tokens, sent.output_tokens) if caused else sent
    if route is not None and sent.cached_tokens and not caused:
        PREFIXES.saw_caching(route.id)  # this route caches by itself: estimates for it may assume so
    removed_local = {m: n for m, n in ctx.removed_tokens.items() if n > 0}
    removed: dict[str, int] = {}
    if removed_local:
        estimated = True
        local_sent = int(ctx.extra.get("prompt_local_tokens") or 0)
        for m, n in removed_local.items():
            if local_sent > 0 and sent.input_tokens > 0 and not ctx.usage_estimated:
                removed[m] = (n * sent.input_tokens * 2 + local_sent) // (2 * local_sent)  # rounded
            else:  # no ratio to scale by: the local count stands
                removed[m] = n
    asked = sent.input_tokens + sum(removed.values())
    same = bool(route and reference and kind == ref_kind)
    if same and not removed and not caused:
        direct = Usage(asked, sent.output_tokens, sent.cached_tokens, sent.cache_write_tokens)
    elif ref_kind in prefixes.AUTOMATIC:
        cached = prefixes.auto_cached(reference, asked, found)
        if same and not caused:  # the provider's own report on the sent prefix bounds it below
            cached = max(cached, min(sent.cached_tokens, asked))
        direct = Usage(asked, sent.output_tokens, cached_tokens=cached)
        estimated = estimated or cached > 0
    elif same and not caused:  # the client's own breakpoints: the direct call would have had them
        direct = Usage(asked, sent.output_tokens, sent.cached_tokens, sent.cache_write_tokens)
    else:
        direct = Usage(asked, sent.output_tokens)
    if caused:
        remember_writes(ctx, state, found)
    return attribution.Miss(reference, route, direct, plain, sent, removed), estimated


def remember_writes(ctx: RequestContext, state: dict, found) -> None:
    """Keep the gateway's cache writes until a later request reads them (see stores.prefixes)."""
    if found is None or not found.digests or ctx.principal is None or ctx.route is None:
        return
    u = ctx.usage
    if u.cached_tokens:
        PREFIXES.read(found.scope, found.digests)
    if u.cache_write_tokens and not ctx.extra.get("writes_kept"):
        ctx.extra["writes_kept"] = True
        money = MEMO.org_money(ctx.principal.org_id)
        exact = (pricing.exact_cost(ctx.route, Usage(u.cache_write_tokens, cache_write_tokens=u.cache_write_tokens))
                 - pricing.exact_cost(ctx.route, Usage(u.cache_write_tokens)))
        premium = int(exact + Fraction(1, 2))  # rounded half up, as prices are
        # where the breakpoints may sit: the end of the tools and system prompt, of the earlier turns
        at = {i for i in (found.heads - 1, len(found.digests) - 2) if 0 <= i < len(found.digests)}
        PREFIXES.wrote(found.scope, [found.digests[i] for i in sorted(at)], u.cache_write_tokens,
                       pricing.policy_micros(money, premium))


def cost_headers(ctx: RequestContext) -> dict[str, str]:
    """Final figures for a whole reply. A live stream's headers leave before its usage is known:
    they carry an estimate (`x-gateway-cost-status: estimate`) and the stream ends with the final
    figures in an SSE comment (see cost_trailer). `x-gateway-benchmark-estimated: true` when the
    benchmark holds an estimate (see price)."""
    extra = {"x-gateway-benchmark-estimated": "true"} if ctx.extra.get("benchmark_estimated") else {}
    return {
        **extra,
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
    ctx.extra.setdefault("layer_costs", {})["closed"] = True  # a layer's call finishing later keeps its charge
    if ctx.error is not None and ctx.usage.total == 0:
        # nothing from the provider; a layer's own call (a verifier) was still made and is charged
        costs = {m: c for m, c in ctx.extra.get("layer_costs", {}).items() if c and m in MECHANISMS}
        ctx.benchmark_micros, ctx.charge_micros = 0, sum(costs.values())
        ctx.saved = {m: -c for m, c in costs.items()}
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
        "benchmark_estimated": bool(ctx.extra.get("benchmark_estimated")),
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
        # the org's cache writes that expired unread since its last row: for the usage rollups
        "unread_writes": _unread(p.org_id),
    })


def _unread(org_id: int) -> tuple[int, int, int] | None:
    writes = PREFIXES.unread(org_id)
    if not writes:
        return None
    return len(writes), sum(w.tokens for w in writes), sum(w.premium_micros for w in writes)


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
