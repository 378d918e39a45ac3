"""Dispatch: call the route's adapter, translating when dialects differ; walk the fallback chain."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Iterator

import gevent
import orjson

from gateway import wire
from gateway.errors import GatewayError, UpstreamError
from gateway.memo import RouteInfo
from gateway.pipeline.context import Reply, RequestContext
from gateway.pipeline.meter import estimate_partial
from gateway.routing import settings as routing_settings
from gateway.routing.health import HEALTH
from gateway.wire import anthropic_messages, openai_embeddings
from gateway.wire.canonical import EventStream, StreamEvent, Usage

log = logging.getLogger(__name__)
_rng = random.Random()
_sleep = gevent.sleep  # a seam for tests that check the backoff


def dispatch(ctx: RequestContext) -> Reply:
    """Try the plan's routes in order, retrying each on retryable failures (backoff with jitter,
    `retry-after` honoured, within the request's deadline), skipping routes whose breaker is open.
    A non-retryable failure (the client's own 4xx) stops at once; when every route failed, the
    last failure is what the client sees."""
    settings = routing_settings.current()
    policy = settings.retry
    deadline = ctx.started + policy.deadline_seconds
    last: GatewayError | None = None
    for route in ctx.plan:
        if not HEALTH.allow(route.id):
            last = last or UpstreamError("Every route for this model is failing; retry later.", status=503)
            continue
        for attempt in range(policy.retries + 1):
            ctx.route = route
            ctx.attempts += 1
            began = time.perf_counter()
            HEALTH.started(route.id)
            try:
                reply = call_route(ctx, route)
                if reply.chunks is not None:
                    reply.chunks = _primed(ctx, reply.chunks)
            except UpstreamError as e:
                last = e
                if not e.retryable:
                    HEALTH.released(route.id)
                    raise
                HEALTH.failed(route.id, (time.perf_counter() - began) * 1000, ctx.principal.org_id)
                log.warning("route %s/%s failed (%s)", route.provider.name, route.upstream_model, e.message)
                delay = policy.delay(attempt + 1, e.retry_after, _rng)
                if attempt == policy.retries or time.perf_counter() + delay > deadline:
                    break  # on to the next route
                _sleep(delay)
                continue
            HEALTH.succeeded(route.id, (time.perf_counter() - began) * 1000, ctx.principal.org_id)
            return reply
        if time.perf_counter() > deadline:
            break
    assert last is not None
    raise last


def _primed(ctx: RequestContext, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Pull a stream's first chunk before answering, so a stream that fails before its first byte
    reached the client can still fall back to the next route (raised as a retryable error)."""
    try:
        first = next(chunks)
    except StopIteration:
        first = None
    failed = first is None or (ctx.error is not None and ctx.error.retryable)
    if not failed:
        return _prepend(first, chunks)
    error = ctx.error or UpstreamError("The upstream provider ended the stream before it began.")
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
    ctx.error, ctx.status, ctx.first_byte_at = None, 200, None
    ctx.usage, ctx.usage_estimated = Usage(), False
    raise error if isinstance(error, UpstreamError) else UpstreamError(error.message)


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    """`first`, then the rest; closing this closes the rest (itertools.chain would not)."""
    try:
        yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()


def call_route(ctx: RequestContext, route: RouteInfo) -> Reply:
    from gateway.providers import registry  # adapters import pipeline modules: resolve at call time

    adapter = registry.adapter(route.provider.kind)
    if ctx.endpoint == "embeddings":  # not chat-shaped: the adapter's embeddings(), or a 400
        return openai_embeddings.call(ctx, adapter, route)
    if ctx.endpoint in adapter.native and not ctx.changed:
        return adapter.passthrough(ctx, route)
    if ctx.endpoint == "messages.count_tokens":  # no upstream has it but Anthropic: count locally
        return Reply(body=orjson.dumps(anthropic_messages.count_tokens(ctx.body)))
    return translate(ctx, adapter, route)


def translate(ctx: RequestContext, adapter, route: RouteInfo) -> Reply:
    """Client dialect -> canonical -> provider, and the reply back into the client's dialect."""
    codec = wire.codec(ctx.endpoint)
    if ctx.canonical is not None:  # a savings layer decoded (and maybe edited) it already
        req = dataclasses.replace(ctx.canonical, model=route.upstream_model)
    else:
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
