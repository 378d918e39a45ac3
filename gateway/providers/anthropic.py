"""Anthropic-kind adapter: the Messages API (`{base_url}/v1/messages`), natively and by translation.

Same dialect in and out: the client's body is forwarded as received with only `model` rewritten
(and `max_tokens` filled when the client left it out, since Anthropic requires it), and stream
bytes are relayed as they arrive. Other dialects are translated through the canonical types.
The client's `anthropic-version` and `anthropic-beta` headers are forwarded; nothing else of its.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from gateway import errors
from gateway.errors import StreamTruncated, UpstreamError
from gateway.providers import http
from gateway.providers.base import Call, Passed, Relay
from gateway.providers.openai import scrub
from gateway.routing.routes import RouteInfo
from gateway.tokens import partial_usage
from gateway.wire import anthropic_messages as wire
from gateway.wire.canonical import ChatRequest, ChatResponse, EventStream, Usage

kind = "anthropic"
native = frozenset({"messages", "messages.count_tokens"})  # endpoints whose bytes pass through untouched

DEFAULT_MAX_TOKENS = 4096
PATHS = {"messages": "/v1/messages", "messages.count_tokens": "/v1/messages/count_tokens"}


def headers_for(call: Call, route: RouteInfo) -> dict[str, str]:
    """Our key, and the client's API version and beta flags when it sent them."""
    h = {"Content-Type": "application/json", "Accept": "application/json",
         "anthropic-version": call.headers.get("anthropic-version") or wire.DEFAULT_VERSION}
    if route.provider.api_key:
        h["x-api-key"] = route.provider.api_key
    if beta := call.headers.get("anthropic-beta"):
        h["anthropic-beta"] = beta
    return h


def default_max_tokens(call: Call) -> int:
    return call.max_output_tokens or DEFAULT_MAX_TOKENS


def post(route: RouteInfo, path: str, payload: bytes, call: Call, *, stream: bool = False) -> http.Response:
    base = route.provider.base_url
    resp = http.post(base, base + path, payload, headers_for(call, route), stream=stream, deadline=call.deadline)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    return resp


def passthrough(call: Call, route: RouteInfo) -> Passed:
    body = dict(call.body)
    body["model"] = route.upstream_model
    if call.endpoint == "messages" and body.get("max_tokens") is None:
        body["max_tokens"] = default_max_tokens(call)
    resp = post(route, PATHS[call.endpoint], orjson.dumps(body), call, stream=call.stream)
    if call.stream:
        return Passed(relay=relay(resp, wire.StreamObserver(), call))
    content = resp.content
    parsed = http.parse(content, lambda obj: obj)
    if call.endpoint != "messages" or not isinstance(parsed, dict):  # counting tokens is free
        return Passed(body=content)
    upstream_id = parsed.get("id")
    return Passed(body=content, usage=wire.usage_from(parsed.get("usage")) or Usage(),
                  upstream_id=upstream_id if isinstance(upstream_id, str) else None)


def chat(req: ChatRequest, route: RouteInfo, call: Call) -> ChatResponse:
    """Translated call: canonical request in, canonical response out."""
    req.stream = False
    payload = orjson.dumps(wire.encode_request(req, default_max_tokens(call)))
    return http.parse(post(route, PATHS["messages"], payload, call).content, wire.decode_response)


def chat_stream(req: ChatRequest, route: RouteInfo, call: Call) -> EventStream:
    """Translated stream: the request is made now (errors raise here), events are parsed lazily."""
    req.stream = True
    payload = orjson.dumps(wire.encode_request(req, default_max_tokens(call)))
    return http.events(post(route, PATHS["messages"], payload, call, stream=True), wire.decode_stream)


def relay(resp: http.Response, observer: wire.StreamObserver, call: Call) -> Relay:
    """Forward upstream bytes as they arrive; a stream that ends without `message_stop` ends in an
    Anthropic `error` event. An upstream `error` event is already in the client's framing: it is
    forwarded as is, and recorded."""
    out = Relay()

    def chunks() -> Iterator[bytes]:
        try:
            for chunk in resp.iter_content(chunk_size=None):
                yield observer.feed(chunk)
            if observer.upstream_error is not None:
                out.error = errors.stream_failed()
            elif not observer.done:
                yield _failed(out, StreamTruncated())
        except UpstreamError as e:
            yield _failed(out, e)
        finally:
            resp.close()
            out.usage.merge(observer.usage)
            if not observer.done and observer.deltas > out.usage.output_tokens:
                # message_delta (the output count) never came: count what was relayed instead
                if out.usage.input_tokens:
                    out.estimate = Usage(out.usage.input_tokens, observer.deltas, out.usage.cached_tokens,
                                         out.usage.cache_write_tokens)
                else:
                    out.estimate = partial_usage(call.body.get("messages"), observer.deltas)

    out.chunks = chunks()
    return out


def _failed(out: Relay, err: UpstreamError) -> bytes:
    out.error = err
    return wire.error_event(err)


def error_from(resp: http.Response, route: RouteInfo) -> UpstreamError:
    """An Anthropic error response onto the catalogue; the raw body is never passed on."""
    try:
        message, _type = wire.upstream_error_message(resp.content)
    except UpstreamError:
        message = None
    resp.close()
    return errors.from_upstream_status(
        resp.status_code, scrub(message, route) if isinstance(message, str) and message else None,
        retry_after=errors.retry_after_seconds(resp.headers.get("retry-after")))
