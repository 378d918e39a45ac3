"""Exact cache: an identical eligible request is answered from a stored response, in the client's
dialect, stream or not, without calling a provider.

Advisory: a failure here skips the cache, never the request. The key and the eligibility rules
are in cache_keys.py; the store (memory first, persisted by the ledger writer) is gateway.stores.exact_cache.

A miss is captured without slowing the relay: a stream's chunks are forwarded as they come and
a copy is kept aside; at the end a cleanly completed stream (status 200, no error) is decoded
with the client dialect's `decode_stream` and assembled into a canonical ChatResponse, and a
whole body with `decode_response`. A hit is rendered with the dialect's `render` or
`render_stream(replay(resp))`, so an answer stored from a stream serves a non-stream request and
the other way round. Charge policy (`charge`): `free` (default) charges nothing; `full` charges
the stored usage at the price of the route the request would have taken.

Settings (savings.exact_cache): enabled, ttl_seconds, max_entries (per scope, LRU), charge,
shared_scope. Headers: `x-gateway-exact-cache: on|off`, `x-gateway-cache: force|bypass`,
`Cache-Control: no-store`; a hit answers with `x-gateway-cache: hit`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import orjson

from gateway import wire
from gateway.ledger import pricing
from gateway.pipeline import meter, savings
from gateway.pipeline.context import Reply, RequestContext, keep
from gateway.pipeline.savings import cache_keys
from gateway.stores.exact_cache import STORE
from gateway.wire.canonical import ChatResponse, assemble, replay

log = logging.getLogger(__name__)

name, enforcing = "exact_cache", False

MAX_CAPTURE_BYTES = 8 << 20  # a longer stream is relayed but not stored


def before(ctx: RequestContext) -> Reply | None:
    if not savings.enabled(ctx, name) or not cache_keys.eligible(ctx):
        return None
    state = ctx.extra[name] = {"scope": savings.scope(ctx, name), "key": cache_keys.request_key(ctx, name)}
    resp = STORE.get(state["scope"], state["key"])
    if resp is None:
        return None
    charge = 0
    if savings.settings(ctx, name).get("charge") == "full":
        charge = pricing.cost_micros(ctx.plan[0] if ctx.plan else None, resp.usage)
    return answer(ctx, resp, cache="hit", mechanism=name, charge_micros=charge)


def answer(ctx: RequestContext, resp: ChatResponse, *, cache: str, mechanism: str,
           charge_micros: int = 0) -> Reply:
    """Answer with a stored canonical response, in the client's dialect and framing.

    Sets what the meter needs (the replayed usage, so the benchmark is right; the mechanism; the
    charge) and prices at once: a replayed stream's headers carry final figures, not an estimate.
    """
    ctx.cache, ctx.cache_mechanism, ctx.charge_micros = cache, mechanism, charge_micros
    ctx.usage = dataclasses.replace(resp.usage)
    ctx.mark_first_byte()
    meter.price(ctx)
    headers = meter.cost_headers(ctx)
    codec = wire.codec(ctx.endpoint)
    if ctx.stream:
        return Reply(chunks=codec.render_stream(replay(resp), _slug(ctx), ctx.body),
                     content_type="text/event-stream", headers=headers)
    return Reply(body=orjson.dumps(codec.render(resp, _slug(ctx), ctx.body)), headers=headers)


def _slug(ctx: RequestContext) -> str:
    """The `model` a replayed answer names: the requested model's slug, as a served one would."""
    return ctx.model.slug if ctx.model is not None else ctx.requested_model


def on_reply(ctx: RequestContext, reply: Reply) -> Reply:
    return capture(ctx, reply, name)


def capture(ctx: RequestContext, reply: Reply, layer: str) -> Reply:
    """On a miss, keep a copy of what the client receives in `ctx.extra[layer]` (a stream is
    teed, never buffered). Shared by the caches that store answers."""
    state = ctx.extra.get(layer)
    if state is None or ctx.cache != "miss" or reply.status != 200:
        return reply
    return keep(reply, state, "stream", MAX_CAPTURE_BYTES)


def after(ctx: RequestContext, reply: Reply | None) -> None:
    """Store a clean miss (runs after metering, so ctx.usage is what the upstream reported)."""
    state = ctx.extra.get(name)
    if (state is None or reply is None or ctx.cache != "miss" or ctx.error is not None
            or reply.status != 200 or ctx.usage_estimated):
        return
    resp = captured(ctx, state)
    if resp is None:
        return
    # A relay may hide the usage chunk from a client that did not ask for it: the metered usage
    # is what the original cost, and what a hit's benchmark must be priced on.
    resp.usage = dataclasses.replace(ctx.usage)
    settings = savings.settings(ctx, name)
    assert ctx.principal is not None and ctx.model is not None
    STORE.put(state["scope"], state["key"], resp, org_id=ctx.principal.org_id, model=ctx.model.slug,
              ttl=float(settings["ttl_seconds"]), max_entries=int(settings["max_entries"]))


def captured(ctx: RequestContext, state: dict[str, Any]) -> ChatResponse | None:
    """What the client received, as a canonical response; None if it cannot be read back."""
    codec = wire.codec(ctx.endpoint)
    if "stream" in state:
        return assemble(codec.decode_stream(iter(state["stream"])))
    if state.get("body"):
        body = orjson.loads(state["body"])
        return codec.decode_response(body) if isinstance(body, dict) else None
    return None
