"""Anthropic-kind adapter: the Messages API (`{base_url}/v1/messages`), natively and by translation.

Same dialect in and out: the client's body is forwarded as received with only `model` rewritten
(and `max_tokens` filled when the client left it out, since Anthropic requires it), and stream
bytes are relayed as they arrive. Other dialects are translated through the canonical types.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import requests

from gateway import errors
from gateway.errors import StreamTruncated, UpstreamError, UpstreamTimeout
from gateway.memo import RouteInfo
from gateway.pipeline.context import Reply, RequestContext
from gateway.pipeline.meter import estimate_partial
from gateway.providers import http
from gateway.providers.openai import scrub
from gateway.wire import anthropic_messages as wire
from gateway.wire.canonical import ChatRequest, ChatResponse, EventStream, Usage

kind = "anthropic"
native = frozenset({"messages", "messages.count_tokens"})  # endpoints whose bytes pass through untouched

DEFAULT_MAX_TOKENS = 4096
PATHS = {"messages": "/v1/messages", "messages.count_tokens": "/v1/messages/count_tokens"}


def headers_for(ctx: RequestContext, route: RouteInfo) -> dict[str, str]:
    """Our key, and the client's API version and beta flags when it sent them."""
    h = {"Content-Type": "application/json", "Accept": "application/json",
         "anthropic-version": ctx.headers.get("anthropic-version") or wire.DEFAULT_VERSION}
    if route.provider.api_key:
        h["x-api-key"] = route.provider.api_key
    if beta := ctx.headers.get("anthropic-beta"):
        h["anthropic-beta"] = beta
    return h


def default_max_tokens(ctx: RequestContext) -> int:
    return (ctx.model.max_output_tokens if ctx.model else None) or DEFAULT_MAX_TOKENS


def passthrough(ctx: RequestContext, route: RouteInfo) -> Reply:
    body = dict(ctx.body)
    body["model"] = route.upstream_model
    if ctx.endpoint == "messages" and body.get("max_tokens") is None:
        body["max_tokens"] = default_max_tokens(ctx)
    resp = post(route, PATHS[ctx.endpoint], orjson.dumps(body), headers_for(ctx, route), stream=ctx.stream)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    if not ctx.stream:
        content = resp.content
        ctx.mark_first_byte()
        try:
            parsed = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamError("The upstream provider returned an invalid response.") from None
        if ctx.endpoint == "messages":  # counting tokens is free: no usage to charge
            ctx.usage = wire.usage_from(parsed.get("usage") if isinstance(parsed, dict) else None) or Usage()
        return Reply(status=200, body=content)
    return Reply(status=200, chunks=relay(ctx, resp, wire.StreamObserver()), content_type="text/event-stream")


def chat(ctx: RequestContext, req: ChatRequest, route: RouteInfo) -> ChatResponse:
    """Translated call: canonical request in, canonical response out."""
    req.stream = False
    payload = orjson.dumps(wire.encode_request(req, default_max_tokens(ctx)))
    resp = post(route, PATHS["messages"], payload, headers_for(ctx, route), stream=False)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    try:
        return wire.decode_response(orjson.loads(resp.content))
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        raise UpstreamError("The upstream provider returned an invalid response.") from None


def chat_stream(ctx: RequestContext, req: ChatRequest, route: RouteInfo) -> EventStream:
    """Translated stream: the request is made now (errors raise here), events are parsed lazily."""
    req.stream = True
    payload = orjson.dumps(wire.encode_request(req, default_max_tokens(ctx)))
    resp = post(route, PATHS["messages"], payload, headers_for(ctx, route), stream=True)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    return http.events(resp, wire.decode_stream)


def post(route: RouteInfo, path: str, payload: bytes, headers: dict[str, str],
         stream: bool) -> requests.Response:
    base = route.provider.base_url
    try:
        return http.session_for(base).post(base + path, data=payload, headers=headers, stream=stream,
                                           timeout=http.timeouts())
    except requests.exceptions.Timeout:
        raise UpstreamTimeout() from None
    except requests.exceptions.RequestException as e:
        raise UpstreamError(f"Could not reach the upstream provider ({type(e).__name__}).") from None


def relay(ctx: RequestContext, resp: requests.Response, observer: wire.StreamObserver) -> Iterator[bytes]:
    """Forward upstream bytes as they arrive; a stream that ends without `message_stop` ends in an
    Anthropic `error` event. An upstream `error` event is already in the client's framing: it is
    forwarded as is, and recorded."""
    try:
        for chunk in resp.iter_content(chunk_size=None):
            ctx.mark_first_byte()
            yield observer.feed(chunk)
        if observer.upstream_error is not None:
            ctx.fail(upstream_stream_error(observer.upstream_error))
        elif not observer.done:
            yield _truncated(ctx)
    except requests.exceptions.RequestException:
        yield _truncated(ctx)
    finally:
        resp.close()
        ctx.usage.merge(observer.usage)
        if not observer.done and observer.deltas > ctx.usage.output_tokens:
            # message_delta (the output count) never came: count what was relayed instead
            if ctx.usage.input_tokens:
                ctx.usage.output_tokens = observer.deltas
                ctx.usage_estimated = True
            else:
                estimate_partial(ctx, observer.deltas)


def _truncated(ctx: RequestContext) -> bytes:
    err = StreamTruncated()
    ctx.fail(err)
    return wire.error_event(err)


def error_from(resp: requests.Response, route: RouteInfo) -> UpstreamError:
    """Map an Anthropic error response onto the catalogue; the raw body is never passed on.

    529 (overloaded) is treated like a 503: retryable, so the next route may be tried.
    """
    status, retryable = errors.classify_upstream_status(resp.status_code)
    message, _type = wire.upstream_error_message(resp.content)
    resp.close()
    if status in (400, 413):
        text = scrub(message, route) if message else "The upstream provider rejected the request."
        return UpstreamError(text, status=status, retryable=False, upstream_status=resp.status_code,
                             type="invalid_request_error",
                             anthropic_type="request_too_large" if status == 413 else "invalid_request_error")
    if status == 429:
        return UpstreamError("The upstream provider is rate limiting requests; retry later.", status=429,
                             retryable=True, upstream_status=429, retry_after=_retry_after(resp),
                             type="rate_limit_error", anthropic_type="rate_limit_error",
                             code="rate_limit_exceeded")
    if status == 504:
        return UpstreamTimeout()
    what = "is overloaded" if resp.status_code == 529 else "returned an error"
    return UpstreamError(f"The upstream provider {what} (HTTP {resp.status_code}).", status=status,
                         retryable=retryable, upstream_status=resp.status_code)


def upstream_stream_error(err: dict) -> UpstreamError:
    return UpstreamError("The upstream provider reported an error during the stream.", retryable=False)


def _retry_after(resp: requests.Response) -> float | None:
    try:
        value = resp.headers.get("retry-after")
        return float(value) if value is not None else None
    except ValueError:
        return None
