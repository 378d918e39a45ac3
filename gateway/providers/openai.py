"""OpenAI-kind adapter: OpenAI itself and every OpenAI-compatible upstream (vLLM, Groq, Ollama's /v1 ...).

Same dialect in and out: the client's body is forwarded as received with only `model` rewritten
(and, for streams, `stream_options.include_usage` turned on so every stream can be metered; the
usage-only chunk is then hidden from a client that did not ask for it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import orjson
import requests

from gateway import errors
from gateway.errors import StreamTruncated, UpstreamError, UpstreamTimeout
from gateway.memo import RouteInfo
from gateway.pipeline.context import Reply, RequestContext
from gateway.pipeline.meter import estimate_partial
from gateway.providers import http
from gateway.wire import openai_chat
from gateway.wire.canonical import ChatRequest, ChatResponse, EventStream, Usage

kind = "openai"
native = frozenset({"chat.completions", "responses"})  # endpoints whose bytes pass through untouched

SECRETISH = re.compile(r"(sk|gw|key|rk|pk)-[A-Za-z0-9_\-*]{6,}", re.IGNORECASE)


def headers_for(route: RouteInfo) -> dict[str, str]:
    h = {"Content-Type": "application/json", "Accept": "application/json"}
    if route.provider.api_key:
        h["Authorization"] = f"Bearer {route.provider.api_key}"
    return h


def to_wire(ctx: RequestContext, route: RouteInfo) -> tuple[bytes, bool]:
    """The upstream body, and whether the usage chunk must be hidden from the client."""
    body = dict(ctx.body)
    body["model"] = route.upstream_model
    hide_usage = False
    if ctx.stream:
        options = body.get("stream_options") or {}
        if not options.get("include_usage"):
            body["stream_options"] = {**options, "include_usage": True}
            hide_usage = True
    return orjson.dumps(body), hide_usage


def passthrough(ctx: RequestContext, route: RouteInfo) -> Reply:
    if ctx.endpoint == "responses":
        from gateway.providers import openai_responses  # it builds on this module

        return openai_responses.passthrough(ctx, route)
    payload, hide_usage = to_wire(ctx, route)
    resp = post(route, "/chat/completions", payload, headers_for(route), stream=ctx.stream)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    if not ctx.stream:
        content = resp.content
        ctx.mark_first_byte()
        try:
            ctx.usage = openai_chat.usage_from(orjson.loads(content).get("usage")) or Usage()
        except (orjson.JSONDecodeError, AttributeError):
            raise UpstreamError("The upstream provider returned an invalid response.") from None
        return Reply(status=200, body=content)
    return Reply(status=200, chunks=relay(ctx, resp, openai_chat.StreamObserver(hide_usage)),
                 content_type="text/event-stream")


def chat(ctx: RequestContext, req: ChatRequest, route: RouteInfo) -> ChatResponse:
    """Translated call: canonical request in, canonical response out."""
    req.stream = False
    resp = post(route, "/chat/completions", orjson.dumps(openai_chat.encode_request(req)), headers_for(route),
                stream=False)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    try:
        return openai_chat.decode_response(orjson.loads(resp.content))
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        raise UpstreamError("The upstream provider returned an invalid response.") from None


def chat_stream(ctx: RequestContext, req: ChatRequest, route: RouteInfo) -> EventStream:
    """Translated stream: the request is made now (errors raise here), events are parsed lazily."""
    req.stream = True
    resp = post(route, "/chat/completions", orjson.dumps(openai_chat.encode_request(req)), headers_for(route),
                stream=True)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    return http.events(resp, openai_chat.decode_stream)


def post(route: RouteInfo, path: str, payload: bytes, headers: dict[str, str],
         stream: bool) -> http.Response:
    base = route.provider.base_url
    try:
        return http.session_for(base).post(
            base + path, data=payload, headers=headers, stream=stream, timeout=http.timeouts()
        )
    except requests.exceptions.Timeout:
        raise UpstreamTimeout() from None
    except requests.exceptions.RequestException as e:
        raise UpstreamError(f"Could not reach the upstream provider ({type(e).__name__}).") from None


def relay(ctx: RequestContext, resp: http.Response,
          observer: openai_chat.StreamObserver) -> Iterator[bytes]:
    """Forward upstream bytes as they arrive; a stream that ends without `[DONE]` ends in an error event."""
    try:
        for chunk in resp.iter_content(chunk_size=None):
            ctx.mark_first_byte()
            out = observer.feed(chunk)
            if out:
                yield out
        if observer.upstream_error is not None:
            err = upstream_stream_error(observer.upstream_error)
            ctx.fail(err)
            yield openai_chat.error_event(err)
        elif not observer.done:
            yield from _truncated(ctx, observer)
        elif observer.tail():
            yield observer.tail()
    except requests.exceptions.RequestException:
        yield from _truncated(ctx, observer)
    finally:
        resp.close()
        ctx.usage.merge(observer.usage)
        if ctx.usage.total == 0 and observer.deltas:
            estimate_partial(ctx, max(observer.deltas - 1, 0))  # the first chunk only carries the role


def _truncated(ctx: RequestContext, observer: openai_chat.StreamObserver) -> Iterator[bytes]:
    err = StreamTruncated()
    ctx.fail(err)
    yield openai_chat.error_event(err)


def scrub(message: str, route: RouteInfo) -> str:
    """An upstream message, safe to show: no provider key, nothing that looks like a secret."""
    key = route.provider.api_key
    if key:
        message = message.replace(key, "***")
    return SECRETISH.sub("***", message)[:1000]


def error_from(resp: requests.Response, route: RouteInfo) -> UpstreamError:
    """Map an upstream error response onto the catalogue; the raw body is never passed on."""
    status, retryable = errors.classify_upstream_status(resp.status_code)
    message, code = openai_chat.upstream_error_message(resp.content)
    resp.close()
    retry_after = _retry_after(resp.headers.get("retry-after"))
    if status == 400 or status == 413:
        text = scrub(message, route) if message else "The upstream provider rejected the request."
        return UpstreamError(text, status=status, retryable=False, upstream_status=resp.status_code,
                             type="invalid_request_error", anthropic_type="invalid_request_error",
                             code=code if isinstance(code, str) else None)
    if status == 429:
        return UpstreamError("The upstream provider is rate limiting requests; retry later.", status=429,
                             retryable=True, upstream_status=429, retry_after=retry_after,
                             type="rate_limit_error", anthropic_type="rate_limit_error",
                             code="rate_limit_exceeded")
    if status == 504:
        return UpstreamTimeout()
    return UpstreamError(f"The upstream provider returned an error (HTTP {resp.status_code}).",
                         status=status, retryable=retryable, upstream_status=resp.status_code)


def upstream_stream_error(err: dict) -> UpstreamError:
    return UpstreamError("The upstream provider reported an error during the stream.", retryable=False)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
