"""A request's prompt prefixes, hashed once, and what the gateway has seen of them lately
(gateway.stores.prefixes, per org, key and model).

Two readers. prompt_cache places an Anthropic breakpoint only on a prefix seen before (the
system prompt and tools for its breakpoint, the conversation so far for the last history message):
a prefix sent once is rarely sent again, and a write nobody reads costs 1.25x for nothing. The
meter estimates what a client calling the provider directly would have had cached by the
provider's automatic prefix cache (OpenAI: the longest prefix of 1,024 tokens or more sent within
the cache's lifetime, in 128-token steps), where the provider's own report cannot say it: for a
request a layer rewrote (the report is about another prompt) and for an answer from a cache (no
report at all).

A prefix ends at a boundary: after the tools and system prompt (`head`), then after each message.
Its size is the bytes of its JSON; the meter turns bytes into the provider's tokens with the
request's own ratio (its reported prompt tokens over its bytes). Requests under MIN_BYTES are
never hashed: they are under every provider's cache minimum. The body is hashed before any layer
marks it (prompt_cache hashes first), so the gateway's own markup never changes a digest.
Failure mode: anything unexpected in the body yields no prefixes (treated as never seen).
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import sha256
from typing import Any

import orjson

from gateway.pipeline.context import RequestContext
from gateway.stores.prefixes import PREFIXES, Scope

MIN_BYTES = 1024  # a token is at least a byte: a shorter body is under every cache minimum
ENDPOINTS = frozenset({"chat.completions", "messages", "responses"})
# Providers that cache repeated prefixes without being asked, with their minimum and step (tokens).
AUTOMATIC = {"openai": (1024, 128), "openrouter": (1024, 128)}
HEAD_ROLES = frozenset({"system", "developer"})


@dataclass(slots=True)
class Prefixes:
    scope: Scope
    digests: list[bytes]  # shortest first
    ends: list[int]  # bytes up to each boundary
    heads: int  # how many boundaries are tools / system (the rest end a message)
    longest: int  # index of the longest prefix seen before this request, -1 for none

    @property
    def total(self) -> int:
        return self.ends[-1] if self.ends else 0

    def seen_bytes(self) -> int:
        return self.ends[self.longest] if self.longest >= 0 else 0

    def head_seen(self) -> bool:
        """The tools and system prompt (all of the head) were sent before."""
        return self.heads > 0 and self.longest >= self.heads - 1

    def history_seen(self) -> bool:
        """A prefix holding at least one message was sent before: the conversation goes on."""
        return self.longest >= self.heads


def of(ctx: RequestContext) -> Prefixes | None:
    """The request's prefixes (computed once per request), or None when not tracked."""
    if "prefixes" in ctx.extra:
        return ctx.extra["prefixes"]
    found = None
    p = ctx.principal
    if (ctx.endpoint in ENDPOINTS and p is not None and ctx.model is not None and len(ctx.raw) >= MIN_BYTES):
        try:
            found = _hash(ctx, (p.org_id, p.key_id, ctx.model.slug))
        except (TypeError, ValueError):  # a body orjson cannot serialise: untracked
            found = None
    ctx.extra["prefixes"] = found
    return found


def _pieces(endpoint: str, body: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """(head pieces, message pieces) in the order the provider reads them."""
    tools = body.get("tools")
    head = [tools] if tools else []
    if endpoint == "messages":
        if body.get("system"):
            head.append(body.get("system"))
        messages = body.get("messages")
        return head, messages if isinstance(messages, list) else []
    if endpoint == "responses":
        if body.get("instructions"):
            head.append(body.get("instructions"))
        items = body.get("input")
        return head, items if isinstance(items, list) else ([items] if items else [])
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    lead = 0
    while lead < len(messages) and isinstance(messages[lead], dict) and messages[lead].get("role") in HEAD_ROLES:
        lead += 1
    return head + messages[:lead], messages[lead:]


def _hash(ctx: RequestContext, scope: Scope) -> Prefixes:
    head, messages = _pieces(ctx.endpoint, ctx.body)
    h = sha256()
    digests: list[bytes] = []
    ends: list[int] = []
    size = 0
    for piece in (*head, *messages):
        data = orjson.dumps(piece, option=orjson.OPT_SORT_KEYS)
        h.update(data)
        h.update(b"\x1e")
        size += len(data)
        digests.append(h.copy().digest()[:16])
        ends.append(size)
    return Prefixes(scope, digests, ends, len(head), PREFIXES.longest(scope, digests))


def auto_cached(route, prompt_tokens: int, found: Prefixes | None) -> int:
    """Prompt tokens `route` (a RouteInfo) would have served from its automatic cache to a client
    sending this request directly: the seen prefix's share of the prompt, if over the minimum. Only
    for a provider kind that caches by itself, and a route whose reports showed it does (the
    provider's usage corrects the estimate: an upstream that never reports cached tokens gets none)."""
    kind = route.provider.kind if route is not None else ""
    if (found is None or kind not in AUTOMATIC or found.longest < 0 or not found.total
            or not PREFIXES.caches(route.id)):
        return 0
    minimum, step = AUTOMATIC[kind]
    tokens = prompt_tokens * found.seen_bytes() // found.total
    if tokens < minimum:
        return 0
    return min(prompt_tokens, minimum + (tokens - minimum) // step * step)


def remember(ctx: RequestContext) -> None:
    """The request was sent (or would have been, without a cache): its prefixes are now seen."""
    found = ctx.extra.get("prefixes")
    if found is None or ctx.extra.get("prefixes_kept"):
        return
    ctx.extra["prefixes_kept"] = True
    PREFIXES.add(found.scope, [d for d, end in zip(found.digests, found.ends, strict=True) if end >= MIN_BYTES])
