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
import requests

from gateway.errors import UpstreamError
from gateway.ledger.pricing import usd_to_micros
from gateway.memo import RouteInfo
from gateway.pipeline.context import Reply, RequestContext
from gateway.providers import http, openai
from gateway.wire import openai_chat, openai_embeddings
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


def error_from(resp: requests.Response, route: RouteInfo) -> UpstreamError:
    """OpenAI's mapping, except 402: our OpenRouter account is out of credits, which is not the
    client's fault and another route may still serve (OpenRouter's error code is a number there)."""
    if resp.status_code == 402:
        resp.close()
        return UpstreamError("The upstream provider refused the request (HTTP 402).", retryable=True,
                             upstream_status=402)
    return openai.error_from(resp, route)


# ---- chat: the OpenAI adapter's steps, with our headers ----------------------------------------------

def passthrough(ctx: RequestContext, route: RouteInfo) -> Reply:
    payload, hide_usage = openai.to_wire(ctx, route)
    resp = openai.post(route, "/chat/completions", payload, headers_for(route), stream=ctx.stream)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    if ctx.stream:
        return Reply(status=200, chunks=openai.relay(ctx, resp, openai_chat.StreamObserver(hide_usage)),
                     content_type="text/event-stream")
    content = resp.content
    ctx.mark_first_byte()
    try:
        parsed = orjson.loads(content)
        ctx.usage = openai_chat.usage_from(parsed.get("usage")) or Usage()
    except (orjson.JSONDecodeError, AttributeError):
        raise UpstreamError("The upstream provider returned an invalid response.") from None
    _remember(ctx, parsed.get("id"))
    return Reply(status=200, body=content)


def chat(ctx: RequestContext, req: ChatRequest, route: RouteInfo) -> ChatResponse:
    req.stream = False
    resp = openai.post(route, "/chat/completions", orjson.dumps(openai_chat.encode_request(req)),
                       headers_for(route), stream=False)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    try:
        out = openai_chat.decode_response(orjson.loads(resp.content))
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        raise UpstreamError("The upstream provider returned an invalid response.") from None
    _remember(ctx, out.id)
    return out


def chat_stream(ctx: RequestContext, req: ChatRequest, route: RouteInfo) -> EventStream:
    req.stream = True
    resp = openai.post(route, "/chat/completions", orjson.dumps(openai_chat.encode_request(req)),
                       headers_for(route), stream=True)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    return http.events(resp, openai_chat.decode_stream)


def embeddings(ctx: RequestContext, body: dict[str, Any], route: RouteInfo) -> tuple[dict[str, Any], Usage]:
    """OpenRouter's `/embeddings` is OpenAI's: forwarded as received, with our headers."""
    return openai_embeddings.forward(ctx, body, route, openai, headers_for(route))


def _remember(ctx: RequestContext, generation_id: Any) -> None:
    """The generation id (`gen-...`) that generation_cost takes, kept for whoever records it."""
    if isinstance(generation_id, str) and generation_id:
        ctx.extra["upstream_id"] = generation_id


# ---- reconciliation (not on the hot path) -----------------------------------------------------------

def generation_cost(route: RouteInfo, generation_id: str) -> int | None:
    """What OpenRouter charged for a generation, in micro-dollars (`GET /generation?id=`, `total_cost`).

    None when it is not known (yet): OpenRouter answers 404 until its accounting has caught up, so
    callers retry later. Other failures are logged and also give None; nothing here raises.
    """
    base = route.provider.base_url
    try:
        resp = http.session_for(base).get(base + "/generation", params={"id": generation_id},
                                          headers=headers_for(route), timeout=http.timeouts())
    except requests.exceptions.RequestException as e:
        log.warning("openrouter generation %s: lookup failed (%s)", generation_id, type(e).__name__)
        return None
    if resp.status_code != 200:
        if resp.status_code != 404:
            log.warning("openrouter generation %s: HTTP %s", generation_id, resp.status_code)
        resp.close()
        return None
    try:
        cost = orjson.loads(resp.content)["data"]["total_cost"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        log.warning("openrouter generation %s: unexpected response body", generation_id)
        return None
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        return None
    return usd_to_micros(cost)
