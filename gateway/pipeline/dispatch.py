"""Dispatch: call the route's adapter, translating when dialects differ; walk the fallback chain."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson

from gateway import wire
from gateway.errors import GatewayError, UpstreamError
from gateway.memo import RouteInfo
from gateway.pipeline.context import Reply, RequestContext
from gateway.providers import registry
from gateway.pipeline.meter import estimate_partial
from gateway.wire.canonical import EventStream, StreamEvent

log = logging.getLogger(__name__)


def dispatch(ctx: RequestContext) -> Reply:
    """Try the plan's routes in order; a retryable failure moves on, anything else stops.

    The last failure is what the client sees when every route failed.
    """
    last: GatewayError | None = None
    for route in ctx.plan:
        ctx.route = route
        ctx.attempts += 1
        try:
            return call_route(ctx, route)
        except UpstreamError as e:
            last = e
            if not e.retryable:
                raise
            log.warning("route %s/%s failed (%s); trying the next", route.provider.name, route.upstream_model,
                        e.message)
    assert last is not None
    raise last


def call_route(ctx: RequestContext, route: RouteInfo) -> Reply:
    adapter = registry.adapter(route.provider.kind)
    if ctx.endpoint in adapter.native and not ctx.changed:
        return adapter.passthrough(ctx, route)
    return translate(ctx, adapter, route)


def translate(ctx: RequestContext, adapter, route: RouteInfo) -> Reply:
    """Client dialect -> canonical -> provider, and the reply back into the client's dialect."""
    codec = wire.codec(ctx.endpoint)
    req = codec.decode_request(ctx.body)
    req.model = route.upstream_model
    if ctx.stream:
        events = adapter.chat_stream(ctx, req, route)
        return Reply(chunks=codec.render_stream(observe(ctx, events), ctx.requested_model, ctx.body),
                     content_type="text/event-stream")
    resp = adapter.chat(ctx, req, route)
    ctx.mark_first_byte()
    ctx.usage = resp.usage
    return Reply(body=orjson.dumps(codec.render(resp, ctx.requested_model, ctx.body)))


def observe(ctx: RequestContext, events: EventStream) -> Iterator[StreamEvent]:
    """Meter a translated stream as it passes: first byte, usage, failure; estimate if cut short."""
    deltas = 0
    try:
        for ev in events:
            ctx.mark_first_byte()
            if ev.kind == "usage":
                ctx.usage.merge(ev.usage)
            elif ev.kind == "error":
                ctx.fail(ev.error)
            elif ev.kind in ("text", "tool_args", "thinking"):
                deltas += 1
            yield ev
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
        if ctx.usage.total == 0 and deltas:
            estimate_partial(ctx, deltas)
