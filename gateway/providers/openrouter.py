"""OpenRouter-kind adapter: the OpenAI-compatible wire plus attribution headers and cost lookup.

Chat goes exactly as for the OpenAI kind (gateway/providers/openai.py: same body rewriting, relay,
usage hiding and error mapping), with OpenRouter's app attribution headers (`HTTP-Referer`,
`X-Title`) on every call. `generation_cost` asks OpenRouter what a finished generation really
cost, for reconciliation off the hot path. base_url is `https://openrouter.ai/api/v1`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from gateway.errors import UpstreamError
from gateway.ledger.pricing import usd_to_micros
from gateway.providers import http, openai
from gateway.providers.base import Call, Passed
from gateway.routing.routes import RouteInfo
from gateway.wire import openai_chat
from gateway.wire.canonical import ChatRequest, ChatResponse, EventStream, Usage

log = logging.getLogger(__name__)

kind = "openrouter"
native = frozenset({"chat.completions"})  # Responses requests are translated onto chat

# Defaults of settings `openrouter_referer` / `openrouter_title` (GATEWAY_OPENROUTER_REFERER / _TITLE):
# what OpenRouter's rankings show for traffic through the gateway.
DEFAULT_REFERER = "https://github.com/gateway"
DEFAULT_TITLE = "Gateway"


_attribution = {"HTTP-Referer": DEFAULT_REFERER, "X-Title": DEFAULT_TITLE}


def configure(settings) -> None:
    """OpenRouter's app attribution headers, from settings when they define them."""
    _attribution["HTTP-Referer"] = getattr(settings, "openrouter_referer", None) or DEFAULT_REFERER
    _attribution["X-Title"] = getattr(settings, "openrouter_title", None) or DEFAULT_TITLE


def attribution() -> dict[str, str]:
    return _attribution


def headers_for(route: RouteInfo) -> dict[str, str]:
    return {**openai.headers_for(route), **attribution()}


def error_from(resp: http.Response, route: RouteInfo) -> UpstreamError:
    """OpenAI's mapping, except 402: our OpenRouter account is out of credits, which is not the
    client's fault and another route may still serve (OpenRouter's error code is a number there)."""
    if resp.status_code == 402:
        resp.close()
        return UpstreamError("The upstream provider refused the request (HTTP 402).", retryable=True,
                             upstream_status=402)
    return openai.error_from(resp, route)


def post(route: RouteInfo, path: str, payload: bytes, *, stream: bool = False,
         deadline: float | None = None) -> http.Response:
    base = route.provider.base_url
    resp = http.post(base, base + path, payload, headers_for(route), stream=stream, deadline=deadline)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    return resp


# ---- chat and embeddings: the OpenAI wire, with our headers and 402 mapping ---------------------------

def passthrough(call: Call, route: RouteInfo) -> Passed:
    payload, hide_usage = openai.to_wire(call, route)
    resp = post(route, "/chat/completions", payload, stream=call.stream, deadline=call.deadline)
    if call.stream:
        return Passed(relay=openai.relay(resp, openai_chat.StreamObserver(hide_usage), call))
    content = resp.content
    generation_id, usage = http.parse(content, openai.id_and_usage)
    return Passed(body=content, usage=usage, upstream_id=generation_id)  # `gen-...`: see generation_cost


def chat(req: ChatRequest, route: RouteInfo, call: Call) -> ChatResponse:
    req.stream = False
    resp = post(route, "/chat/completions", orjson.dumps(openai_chat.encode_request(req)), deadline=call.deadline)
    return http.parse(resp.content, openai_chat.decode_response)


def chat_stream(req: ChatRequest, route: RouteInfo, call: Call) -> EventStream:
    req.stream = True
    resp = post(route, "/chat/completions", orjson.dumps(openai_chat.encode_request(req)), stream=True,
                deadline=call.deadline)
    return http.events(resp, openai_chat.decode_stream)


def embeddings(call: Call, route: RouteInfo) -> tuple[dict[str, Any], Usage]:
    """OpenRouter's `/embeddings` is OpenAI's: forwarded as received, with our headers."""
    resp = post(route, "/embeddings", openai.embeddings_body(call, route), deadline=call.deadline)
    return openai.embeddings_reply(resp)


# ---- reconciliation (not on the hot path) -----------------------------------------------------------

def generation_cost(route: RouteInfo, generation_id: str) -> int | None:
    """What OpenRouter charged for a generation, in micro-dollars (`GET /generation?id=`, `total_cost`).

    None when it is not known (yet): OpenRouter answers 404 until its accounting has caught up, so
    callers retry later. Other failures are logged and also give None; nothing here raises.
    """
    base = route.provider.base_url
    try:
        resp = http.session_for(base).get(base + "/generation", params={"id": generation_id},
                                          headers=headers_for(route))
    except UpstreamError as e:
        log.warning("openrouter generation %s: lookup failed (%s)", generation_id, e.message)
        return None
    if resp.status_code != 200:
        if resp.status_code != 404:
            log.warning("openrouter generation %s: HTTP %s", generation_id, resp.status_code)
        resp.close()
        return None
    try:
        cost = http.parse(resp.content, lambda obj: obj["data"]["total_cost"])
    except UpstreamError:
        log.warning("openrouter generation %s: unexpected response body", generation_id)
        return None
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        return None
    return usd_to_micros(cost)
