"""Request keys: the canonical form of a chat request, and whether a stored answer may serve it.

Shared by the exact cache and in-flight dedupe (same key, same eligibility); the semantic cache
may use `eligible` and `directive`. The API is three functions:

- `eligible(ctx) -> bool`: a chat request (chat.completions or messages) whose answer is
  reproducible: temperature 0 or a seed, and one choice (`n` absent or 1); or the caller forced
  it (`x-gateway-cache: force`). `x-gateway-cache: bypass` and `Cache-Control: no-store` make
  any request ineligible (no read, no write). Forcing does not lift the one-choice rule: a
  stored answer holds a single choice.
- `directive(ctx) -> "force" | "bypass" | ""`: what the caller asked of the caches.
- `request_key(ctx, layer) -> str`: sha256 over the endpoint, the layer's scope
  (`savings.scope`: the org, or a shared scope both orgs opted into) and the canonical request
  (the whole body, provider-specific fields included, `stream` and `stream_options` removed,
  `model` replaced by the resolved slug, keys sorted). Stable across processes and restarts.
"""

from __future__ import annotations

from hashlib import sha256

import orjson

from gateway.pipeline import savings
from gateway.pipeline.context import RequestContext

ENDPOINTS = frozenset({"chat.completions", "messages"})  # chat-shaped, answered by a ChatResponse
VOLATILE = ("stream", "stream_options")  # how the answer travels, not what it is


def directive(ctx: RequestContext) -> str:
    """`x-gateway-cache: force|bypass`; `Cache-Control: no-store` counts as bypass."""
    asked = (ctx.headers.get("x-gateway-cache") or "").strip().lower()
    if asked == "bypass":
        return "bypass"
    control = (ctx.headers.get("cache-control") or "").lower()
    if "no-store" in (token.strip() for token in control.split(",")):
        return "bypass"
    return "force" if asked == "force" else ""


def eligible(ctx: RequestContext) -> bool:
    """May a stored (or shared) answer serve this request? See the module docstring. Asked by
    each caching layer, decided once per request (what it reads, the layers never change)."""
    found = ctx.extra.get("cache_eligible")
    if found is None:
        found = ctx.extra["cache_eligible"] = _eligible(ctx)
    return found


def _eligible(ctx: RequestContext) -> bool:
    if ctx.endpoint not in ENDPOINTS:
        return False
    asked = directive(ctx)
    body = ctx.body
    if asked == "bypass" or body.get("n") not in (None, 1):
        return False
    if asked == "force":
        return True
    temperature = body.get("temperature")
    zero = temperature == 0 and not isinstance(temperature, bool)
    return zero or body.get("seed") is not None


def canonical_bytes(ctx: RequestContext) -> bytes:
    """The request as its key sees it: what it asks, not how the answer travels."""
    body = {k: v for k, v in ctx.body.items() if k not in VOLATILE}
    body["model"] = ctx.model.slug if ctx.model is not None else ctx.requested_model
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def request_key(ctx: RequestContext, layer: str = "exact_cache") -> str:
    """sha256 hex of endpoint + scope + canonical request; computed once per request and layer."""
    memo = ctx.extra.setdefault("keys", {})
    if layer not in memo:
        digest = sha256(ctx.endpoint.encode())
        digest.update(b"\0" + savings.scope(ctx, layer).encode() + b"\0")
        digest.update(canonical_bytes(ctx))
        memo[layer] = digest.hexdigest()
    return memo[layer]
