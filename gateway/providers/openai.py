"""OpenAI-kind adapter: OpenAI itself and every OpenAI-compatible upstream (vLLM, Groq, Ollama's /v1 ...).

Same dialect in and out: the client's body is forwarded as received with only `model` rewritten
(and, for streams, `stream_options.include_usage` turned on so every stream can be metered; the
usage-only chunk is then hidden from a client that did not ask for it). Responses requests pass
through to `{base_url}/responses` (providers/openai_responses.py) when dispatch's mode says the
upstream speaks them. Embeddings are forwarded as received to `{base_url}/embeddings`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

from gateway import errors, tokens
from gateway.errors import StreamTruncated, UpstreamError
from gateway.providers import http, openai_responses
from gateway.providers.base import Call, Passed, Relay
from gateway.routing.routes import RouteInfo
from gateway.wire import openai_chat, openai_embeddings
from gateway.wire.canonical import ChatRequest, ChatResponse, EventStream, Usage

kind = "openai"
native = frozenset({"chat.completions", "responses"})  # endpoints whose bytes pass through untouched

SECRETISH = re.compile(r"(sk|gw|key|rk|pk)-[A-Za-z0-9_\-*]{6,}", re.IGNORECASE)


def headers_for(route: RouteInfo) -> dict[str, str]:
    h = {"Content-Type": "application/json", "Accept": "application/json"}
    if route.provider.api_key:
        h["Authorization"] = f"Bearer {route.provider.api_key}"
    return h


def to_wire(call: Call, route: RouteInfo) -> tuple[bytes, bool]:
    """The upstream body, and whether the usage chunk must be hidden from the client."""
    body = dict(call.body)
    body["model"] = route.upstream_model
    hide_usage = False
    if call.stream:
        options = body.get("stream_options") or {}
        if not options.get("include_usage"):
            body["stream_options"] = {**options, "include_usage": True}
            hide_usage = True
    return orjson.dumps(body), hide_usage


def post(route: RouteInfo, path: str, payload: bytes, headers: dict[str, str], *, stream: bool = False,
         deadline: float | None = None) -> http.Response:
    """POST `{base_url}{path}`; an error status raises, mapped (see error_from)."""
    base = route.provider.base_url
    resp = http.post(base, base + path, payload, headers, stream=stream, deadline=deadline)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    return resp


def passthrough(call: Call, route: RouteInfo) -> Passed:
    if call.endpoint == "responses":
        return _responses(call, route)
    payload, hide_usage = to_wire(call, route)
    resp = post(route, "/chat/completions", payload, headers_for(route), stream=call.stream,
                deadline=call.deadline)
    if call.stream:
        return Passed(relay=relay(resp, openai_chat.StreamObserver(hide_usage), call))
    content = resp.content
    parsed = http.parse(content, id_and_usage)
    return Passed(body=content, usage=parsed[1], upstream_id=parsed[0])


def _responses(call: Call, route: RouteInfo) -> Passed:
    """POST /v1/responses passed through (the body and the relay: providers/openai_responses.py)."""
    resp = post(route, "/responses", openai_responses.to_wire(call, route), headers_for(route),
                stream=call.stream, deadline=call.deadline)
    if call.stream:
        return Passed(relay=openai_responses.relay(resp, call))
    content = resp.content
    upstream_id, usage = http.parse(content, openai_responses.id_and_usage)
    return Passed(body=content, usage=usage, upstream_id=upstream_id)


def id_and_usage(obj: Any) -> tuple[str | None, Usage]:
    upstream_id = obj.get("id")
    return (upstream_id if isinstance(upstream_id, str) else None,
            openai_chat.usage_from(obj.get("usage")) or Usage())


def chat(req: ChatRequest, route: RouteInfo, call: Call) -> ChatResponse:
    """Translated call: canonical request in, canonical response out."""
    req.stream = False
    resp = post(route, "/chat/completions", orjson.dumps(openai_chat.encode_request(req)), headers_for(route),
                deadline=call.deadline)
    return http.parse(resp.content, openai_chat.decode_response)


def chat_stream(req: ChatRequest, route: RouteInfo, call: Call) -> EventStream:
    """Translated stream: the request is made now (errors raise here), events are parsed lazily."""
    req.stream = True
    resp = post(route, "/chat/completions", orjson.dumps(openai_chat.encode_request(req)), headers_for(route),
                stream=True, deadline=call.deadline)
    return http.events(resp, openai_chat.decode_stream)


def embeddings(call: Call, route: RouteInfo) -> tuple[dict[str, Any], Usage]:
    """The client's body as received (model rewritten) to `{base_url}/embeddings`."""
    resp = post(route, "/embeddings", embeddings_body(call, route), headers_for(route), deadline=call.deadline)
    return embeddings_reply(resp)


def embeddings_body(call: Call, route: RouteInfo) -> bytes:
    out = dict(call.body)
    out["model"] = route.upstream_model
    return orjson.dumps(out)


def embeddings_reply(resp: http.Response) -> tuple[dict[str, Any], Usage]:
    parsed = http.parse(resp.content, _embedding_list)
    return parsed, openai_embeddings.usage_from(parsed.get("usage"))


def _embedding_list(obj: Any) -> dict[str, Any]:
    if not isinstance(obj.get("data"), list):
        raise TypeError
    return obj


def relay(resp: http.Response, observer: openai_chat.StreamObserver, call: Call) -> Relay:
    """Upstream bytes forwarded as they arrive; a stream that ends without `[DONE]` ends in an error event."""
    out = Relay()

    def chunks() -> Iterator[bytes]:
        try:
            for chunk in resp.iter_content(chunk_size=None):
                piece = observer.feed(chunk)
                if piece:
                    yield piece
            if observer.upstream_error is not None:
                yield _failed(out, errors.stream_failed())
            elif not observer.done:
                yield _failed(out, StreamTruncated())
            elif observer.tail():
                yield observer.tail()
        except UpstreamError as e:
            yield _failed(out, e)
        finally:
            resp.close()
            out.usage.merge(observer.usage)
            out.upstream_id = observer.id
            if out.usage.total == 0 and observer.deltas:  # the first chunk only carries the role
                out.estimate = tokens.partial_usage(call.body.get("messages"), max(observer.deltas - 1, 0))

    out.chunks = chunks()
    return out


def _failed(out: Relay, err: UpstreamError) -> bytes:
    out.error = err
    return openai_chat.error_event(err)


def scrub(message: str, route: RouteInfo) -> str:
    """An upstream message, safe to show: no provider key, nothing that looks like a secret."""
    key = route.provider.api_key
    if key:
        message = message.replace(key, "***")
    return SECRETISH.sub("***", message)[:1000]


def error_from(resp: http.Response, route: RouteInfo) -> UpstreamError:
    """An OpenAI-shaped error response onto the catalogue; the raw body is never passed on."""
    try:
        message, code = openai_chat.upstream_error_message(resp.content)
    except UpstreamError:  # the error body itself broke off: the status says enough
        message, code = None, None
    resp.close()
    return errors.from_upstream_status(
        resp.status_code, scrub(message, route) if isinstance(message, str) and message else None,
        retry_after=errors.retry_after_seconds(resp.headers.get("retry-after")),
        code=code if isinstance(code, str) else None)
