"""Dispatch: the only caller of adapters, and the only writer of what they return into the context.

`mode(ctx, route)` is the one rule for pass through or translate: the client's body passes through
when its endpoint is native to the route's adapter, the routing setting `translate` does not name
the route's provider, and (for Responses) the upstream speaks Responses; everything else is
translated through the canonical types. Every caller asks it. A request a stage rewrote
(`ctx.changed`) still passes through: the client's body with only the fields the layer owns
replaced (wire/rewrite.py), so no parameter the client sent is lost or renamed.

`dispatch(ctx)` walks the plan's routes with retries and the fallback chain within the request's
deadline (`routing.deadline_seconds`): every attempt gets the deadline, and the adapters' connect
and read timeouts never reach past it. A stream is primed (its first chunk pulled) before the
reply leaves, so a stream that fails before its first byte still falls back. Usage, failure,
first-byte time, the upstream id and partial-usage estimates are written here, as bytes and
events pass; adapters only report them.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Iterator
from typing import Any

import gevent
import orjson

from gateway import tracing, wire
from gateway.errors import GatewayError, UpstreamError
from gateway.memo import RouteInfo
from gateway.pipeline import byok
from gateway.pipeline.context import Reply, RequestContext
from gateway.pipeline.meter import estimate_partial
from gateway.providers import registry
from gateway.providers.base import Call, Relay
from gateway.providers.openai_responses import speaks_responses
from gateway.routing import settings as routing_settings
from gateway.routing.health import HEALTH
from gateway.wire import anthropic_messages, openai_embeddings, served
from gateway.wire.canonical import ChatRequest, EventStream, StreamEvent, Usage
from gateway.wire.rewrite import rewritable, rewritten

log = logging.getLogger(__name__)
_rng = random.Random()
_sleep = gevent.sleep  # a seam for tests that check the backoff

PASS, TRANSLATE = "passthrough", "translate"


def mode(ctx: RequestContext, route: RouteInfo) -> str:
    """PASS when the client's bytes can go to `route` as received, else TRANSLATE."""
    provider = route.provider
    if ctx.endpoint not in registry.adapter(provider.kind).native:
        return TRANSLATE
    if ctx.changed and not rewritable(ctx.endpoint):
        return TRANSLATE
    if provider.name in routing_settings.current().translate:
        return TRANSLATE
    if ctx.endpoint == "responses" and not speaks_responses(route):
        return TRANSLATE  # served by translation onto chat
    return PASS


def dispatch(ctx: RequestContext) -> Reply:
    """Try the plan's routes in order, retrying each on retryable failures (backoff with jitter,
    `retry-after` honoured, within the request's deadline), skipping routes whose breaker is open.
    A non-retryable failure (the client's own 4xx) stops at once; when every route failed, the
    last failure is what the client sees."""
    policy = routing_settings.current().retry
    deadline = ctx.started + policy.deadline_seconds
    if ctx.deadline is not None:  # a layer's sub-request bounded tighter (the semantic cache's verifier)
        deadline = min(deadline, ctx.deadline)
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
            span = tracing.attempt(ctx, route, ctx.attempts) if ctx.trace is not None else None
            try:
                reply = byok.call(ctx, route, lambda c, r: call_route(c, r, deadline))  # the org's own key, or ours
                if reply.chunks is not None:
                    reply.chunks = _primed(ctx, reply.chunks)
            except UpstreamError as e:
                if span is not None:
                    tracing.attempt_done(span, ctx, e)
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
            except BaseException as e:
                if span is not None:
                    tracing.attempt_done(span, ctx, e)
                raise
            if span is not None:
                tracing.attempt_done(span, ctx)
            HEALTH.succeeded(route.id, (time.perf_counter() - began) * 1000, ctx.principal.org_id)
            return reply
        if time.perf_counter() > deadline:
            break
    assert last is not None
    raise last


def call_of(ctx: RequestContext, deadline: float | None = None) -> Call:
    """What an adapter may know of the request."""
    return Call(endpoint=ctx.endpoint, body=ctx.body, stream=ctx.stream, deadline=deadline, headers=ctx.headers,
                max_output_tokens=ctx.model.max_output_tokens if ctx.model else None,
                history=ctx.history, previous_provider=ctx.history_provider)


def call_route(ctx: RequestContext, route: RouteInfo, deadline: float | None = None) -> Reply:
    adapter = registry.adapter(route.provider.kind)
    call = call_of(ctx, deadline)
    if ctx.endpoint == "embeddings":  # not chat-shaped: the adapter's embeddings(), or a 400
        return _embed(ctx, adapter, route, call)
    ctx.mode = mode(ctx, route)
    if ctx.mode == PASS:
        return _passthrough(ctx, adapter, route, call)
    if ctx.endpoint == "messages.count_tokens":  # no upstream has it but Anthropic: count locally
        return Reply(body=orjson.dumps(anthropic_messages.count_tokens(ctx.body)))
    return translate(ctx, adapter, route, call)


def decode(ctx: RequestContext) -> ChatRequest:
    """The client's request as canonical chat (a Responses request with its conversation first)."""
    codec = wire.codec(ctx.endpoint)
    if ctx.endpoint == "responses":
        return codec.decode_request(ctx.body, ctx.history)
    return codec.decode_request(ctx.body)


def translate(ctx: RequestContext, adapter: Any, route: RouteInfo, call: Call) -> Reply:
    """Client dialect -> canonical -> provider, and the reply back into the client's dialect."""
    codec = wire.codec(ctx.endpoint)
    if ctx.canonical is not None:  # a savings layer decoded (and maybe edited) it already
        req = dataclasses.replace(ctx.canonical, model=route.upstream_model)
    else:
        req = decode(ctx)
        req.model = route.upstream_model
    if ctx.stream:
        events = adapter.chat_stream(req, route, call)
        return Reply(chunks=codec.render_stream(observe(ctx, events), route.model_slug, ctx.body),
                     content_type="text/event-stream")
    resp = adapter.chat(req, route, call)
    ctx.mark_first_byte()
    ctx.usage = resp.usage
    ctx.upstream_id = resp.id or None
    return Reply(body=orjson.dumps(codec.render(resp, route.model_slug, ctx.body)))


def _passthrough(ctx: RequestContext, adapter: Any, route: RouteInfo, call: Call) -> Reply:
    """The upstream's bytes as they come, but for `model`: the slug that served, as a translated
    reply says (README, "The model field"). A rewritten request sends the client's body with the
    rewritten fields in place (built once, whatever the number of attempts)."""
    if ctx.changed:
        call.body = rewritten_body(ctx)
    passed = adapter.passthrough(call, route)
    if passed.relay is not None:
        return Reply(chunks=relayed(ctx, passed.relay, route.model_slug),
                     content_type="text/event-stream")
    ctx.mark_first_byte()
    ctx.usage = passed.usage
    ctx.upstream_id = passed.upstream_id
    return Reply(body=served.body(passed.body, route.model_slug))


def rewritten_body(ctx: RequestContext) -> dict[str, Any]:
    """The client's body with the fields a savings layer rewrote taken from `ctx.canonical`."""
    body = ctx.extra.get("rewritten_body")
    if body is None:
        body = ctx.extra["rewritten_body"] = rewritten(ctx.endpoint, ctx.body, ctx.canonical)
    return body


def _embed(ctx: RequestContext, adapter: Any, route: RouteInfo, call: Call) -> Reply:
    """Embed with `route`'s adapter; the reply is OpenAI-shaped whatever the provider speaks.
    An adapter without embeddings raises a retryable 400, so a fallback route that can still serves."""
    embed = getattr(adapter, "embeddings", None)
    if embed is None:
        raise openai_embeddings.unsupported()
    body, usage = embed(call, route)
    ctx.mark_first_byte()
    ctx.usage = usage
    ctx.usage_estimated = usage.estimated
    return Reply(body=orjson.dumps(body))


def relayed(ctx: RequestContext, relay: Relay, slug: str) -> Iterator[bytes]:
    """A pass-through stream's bytes as they arrive, each event's `model` set to the serving `slug`;
    what the adapter saw is recorded as it goes (a failure before the chunk that reports it leaves,
    so `_primed` can still fall back) and at the end, however the stream ends."""
    chunks = relay.chunks
    rewrite = served.StreamRewrite(slug)
    try:
        for chunk in chunks:
            if ctx.first_byte_at is None:
                ctx.mark_first_byte()
            if relay.error is not None and ctx.error is None:
                ctx.fail(relay.error)
            if out := rewrite.feed(chunk):
                yield out
        if out := rewrite.tail():
            yield out
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        if relay.error is not None and ctx.error is None:
            ctx.fail(relay.error)
        if relay.estimate is not None:
            ctx.usage, ctx.usage_estimated = relay.estimate, True
        else:
            ctx.usage.merge(relay.usage)
        ctx.upstream_id = relay.upstream_id or ctx.upstream_id


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
    ctx.error, ctx.status, ctx.first_byte_at, ctx.upstream_id = None, 200, None, None
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
            elif ev.kind == "start" and ev.id:
                ctx.upstream_id = ev.id
            yield ev
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
        if ctx.usage.total == 0 and deltas:
            estimate_partial(ctx, deltas)
