"""Provider prompt caching: mark the stable prefix so the provider bills it at its cached price.

Anthropic-kind routes: `cache_control` breakpoints (5-minute, `{"type": "ephemeral"}`) on the last
tool, the end of the system prompt and the end of the earlier turns (everything before the last
message), each only once the prefix up to it is long enough for the model to cache it, and only
where the prefix is likely to be read again: the tools and system prompt once this key sent them
to this model before (a stable system prompt and tool set), the earlier turns once a prefix
holding a message was sent before (a conversation that goes on), both within the cache's
5 minutes (pipeline.prefixes). A prefix sent once is not written: a write costs 1.25x input and
pays only when read. A write that is never read within the lifetime is reported in the usage
summary (`prompt_cache_unread_writes`); its premium is already the negative part of prompt_cache's
saving on the row that wrote it. A request
in which the client placed any `cache_control` of its own is left alone (its breakpoints, and the
limit of four per request, are the client's). OpenAI-kind (and OpenRouter) routes:
`prompt_cache_key` per org (and app) on prompts long enough to be cached (1024 tokens), so OpenAI
routes one tenant's similar prompts to the same cache; a key the client set wins, and is kept.

The route is only chosen in dispatch, and a fallback may be of another kind, so both markups are
applied where each route will read them: the client's body for routes that pass it through (its
own dialect: Anthropic breakpoints on /v1/messages, the key on OpenAI endpoints) and the canonical
request for routes that translate (the Anthropic encoder emits `cache_control`, the OpenAI one
`prompt_cache_key`; each ignores the other's). Both describe the same request; neither sets
`ctx.changed`, so pass-through stays pass-through.

Savings show up in usage (cached tokens at the route's cached price, see meter.price): only what the
gateway's own breakpoints changed counts as prompt_cache's saving; OpenAI's automatic caching (and a
client's own breakpoints) is in the benchmark too, as a direct call would have had it. Nothing is
recorded in `removed_tokens`. Advisory: a failure leaves the request as the client sent it.
Settings (savings.prompt_cache): enabled, min_tokens (a floor over the model's own minimum).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

from gateway import tokens
from gateway.pipeline import prefixes, savings
from gateway.pipeline.context import Reply, RequestContext
from gateway.pipeline.dispatch import PASS, mode
from gateway.wire.canonical import ChatRequest, Message

name, enforcing = "prompt_cache", False

ENDPOINTS = frozenset({"chat.completions", "messages", "responses"})
OPENAI_ENDPOINTS = frozenset({"chat.completions", "responses"})
CACHE_KEY_KINDS = frozenset({"openai", "openrouter"})  # the kinds whose encoder sends prompt_cache_key
OPENAI_MINIMUM = 1024  # OpenAI caches prompts of 1024 tokens or more: a key on a shorter one is noise
MEDIA_TOKENS = 1500  # an image or document block, roughly (Anthropic: about width*height/750, capped)

# Anthropic's minimum cacheable prefix by model (prompt caching docs, "Cache limitations"); a shorter
# prefix is processed uncached, without an error. First match wins; the last entry is the default.
MINIMUMS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"opus-4-[56]|haiku-4"), 4096),
    (re.compile(r"haiku"), 2048),
    (re.compile(r""), 1024),
)


def before(ctx: RequestContext) -> Reply | None:
    if ctx.endpoint not in ENDPOINTS or ctx.principal is None or not savings.enabled(ctx, name):
        return None
    found = prefixes.of(ctx)  # hashed before any markup below changes the body
    allow = (found is not None and found.head_seen(), found is not None and found.history_seen())
    anthropic = [r for r in ctx.plan if r.provider.kind == "anthropic"]
    passes, translates = set(), set()  # kinds of the routes that pass the body through / translate
    for route in ctx.plan:
        (passes if mode(ctx, route) == PASS else translates).add(route.provider.kind)
    floor = int(savings.settings(ctx, name).get("min_tokens") or 0)
    minimum = max(floor, min((model_minimum(r.upstream_model) for r in anthropic), default=0))
    keyed = bool(CACHE_KEY_KINDS & (passes | translates)) and _long_enough(ctx, max(floor, OPENAI_MINIMUM))
    own = ctx.body.get("prompt_cache_key") if ctx.endpoint in OPENAI_ENDPOINTS else None
    ctx.extra[name] = state = {
        "cache_key": own or (cache_key(ctx) if keyed else None),
        # any cache_control in what the client sent means it manages its own breakpoints
        "anthropic": bool(anthropic) and len(ctx.raw) >= minimum and b"cache_control" not in ctx.raw,
        "minimum": minimum,
        "breakpoints": 0,
        "allow": allow,
    }
    if ctx.endpoint == "messages" and "anthropic" in passes and state["anthropic"]:
        state["breakpoints"] = mark_body(ctx.body, minimum, *allow)
    if keyed and passes & CACHE_KEY_KINDS and ctx.endpoint in OPENAI_ENDPOINTS:
        ctx.body.setdefault("prompt_cache_key", state["cache_key"])
    if translates or ctx.canonical is not None:
        canonical(ctx)
    return None


def _long_enough(ctx: RequestContext, minimum: int) -> bool:
    """Whether the prompt may reach `minimum` tokens, counted on the body's JSON (a slight
    overestimate: a key on a prompt a little short of the minimum does no harm). A body shorter
    than `minimum` bytes is never counted; a long one only as far as it takes to decide."""
    if len(ctx.raw) < minimum:
        return False
    return tokens.at_least(ctx.raw.decode(errors="ignore"), minimum)


def canonical(ctx: RequestContext) -> ChatRequest:
    """The canonical request with this layer's markup applied (once). Layers that rewrite the
    request take it from here, so the markup survives their `ctx.changed` re-encoding."""
    req = savings.canonical(ctx)
    state = ctx.extra.get(name)
    if state is None or state.get("canonical_done"):
        return req
    state["canonical_done"] = True
    if state["cache_key"]:
        req.extra.setdefault("prompt_cache_key", state["cache_key"])
    if state["anthropic"] and not has_cache_control(req):
        state["breakpoints"] = max(state["breakpoints"], mark_canonical(req, state["minimum"], *state["allow"]))
    return req


def cache_key(ctx: RequestContext) -> str:
    """One key per org (and app): the tenant's requests share OpenAI's cache routing, nobody else's."""
    p = ctx.principal
    assert p is not None
    return f"gw-org-{p.org_id}" + (f"-app-{p.app_id}" if p.app_id is not None else "")


def model_minimum(upstream_model: str) -> int:
    return next(floor for pattern, floor in MINIMUMS if pattern.search(upstream_model.lower()))


class Prefix:
    """The running token count of a prompt prefix; counting stops once it reached the minimum
    (every later breakpoint qualifies then), so a long conversation is not tokenized in full."""

    __slots__ = ("minimum", "total")

    def __init__(self, minimum: int) -> None:
        self.minimum, self.total = minimum, 0

    def add(self, counts: Iterator[int]) -> bool:
        """Add lazily computed counts; whether the prefix reached the minimum."""
        for n in counts:
            if self.total >= self.minimum:
                break
            self.total += n
        return self.total >= self.minimum


def _ephemeral() -> dict[str, str]:
    return {"type": "ephemeral"}  # a fresh dict per block: nothing shared between requests


# ---- the client's Anthropic body (routes that pass it through) --------------------------------

def mark_body(body: dict[str, Any], minimum: int, head: bool = True, history_ok: bool = True) -> int:
    """Place breakpoints on an Anthropic Messages body, in place; returns how many were placed.
    `head`, `history_ok`: whether the tools and system prompt, the earlier turns may be marked."""
    placed, prefix = 0, Prefix(minimum)
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[-1], dict):
        if prefix.add(tokens.count(orjson.dumps(t).decode()) for t in tools) and head:
            body["tools"] = [*tools[:-1], {**tools[-1], "cache_control": _ephemeral()}]
            placed += 1
    system = body.get("system")
    if system:
        blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
        if (prefix.add(_block_tokens(b) for b in blocks) and head
                and (i := _markable_block(blocks)) is not None):
            blocks[i] = {**blocks[i], "cache_control": _ephemeral()}
            body["system"] = blocks
            placed += 1
    messages = body.get("messages") or []
    history = messages[:-1]  # the last message is the new turn: it changes with every request
    if not history_ok or not prefix.add(3 + sum(_block_tokens(b) for b in _content_blocks(m)) for m in history):
        return placed
    for index in range(len(history) - 1, -1, -1):
        blocks = _content_blocks(history[index])
        if (i := _markable_block(blocks)) is not None:
            blocks[i] = {**blocks[i], "cache_control": _ephemeral()}
            messages[index] = {**history[index], "content": blocks}
            body["messages"] = messages
            return placed + 1
    return placed


def _content_blocks(message: Any) -> list[Any]:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content) if isinstance(content, list) else []


def _markable_block(blocks: list[Any]) -> int | None:
    """The last block that may carry cache_control (not thinking, not empty text)."""
    for i in range(len(blocks) - 1, -1, -1):
        b = blocks[i]
        if not isinstance(b, dict) or b.get("type") in ("thinking", "redacted_thinking"):
            continue
        if b.get("type") == "text" and not b.get("text"):
            continue
        return i
    return None


def _block_tokens(block: Any) -> int:
    if isinstance(block, str):
        return tokens.count(block)
    if not isinstance(block, dict):
        return 0
    kind = block.get("type")
    if kind == "text":
        return tokens.count(block.get("text") or "")
    if kind in ("image", "document"):
        return MEDIA_TOKENS
    if kind == "thinking":
        return tokens.count(block.get("thinking") or "")
    if kind == "tool_result":
        content = block.get("content")
        return sum(_block_tokens(b) for b in (content if isinstance(content, list) else [content or ""]))
    return tokens.count(orjson.dumps(block).decode())  # tool_use and the rest: their JSON, roughly


# ---- the canonical request (routes that translate) ---------------------------------------------

def has_cache_control(req: ChatRequest) -> bool:
    return any(t.cache_control for t in req.tools) or any(
        p.cache_control for m in req.messages for p in m.content)


def mark_canonical(req: ChatRequest, minimum: int, head: bool = True, history_ok: bool = True) -> int:
    """The same breakpoints on a canonical request (the Anthropic encoder emits them)."""
    placed, prefix = 0, Prefix(minimum)
    if req.tools:
        if prefix.add(tokens.count(orjson.dumps([t.name, t.description, t.parameters]).decode())
                      for t in req.tools) and head:
            req.tools[-1].cache_control = _ephemeral()
            placed += 1
    system = [m for m in req.messages if m.role == "system"]
    if system:
        text = [p for m in system for p in m.content if p.type == "text" and p.text]
        if prefix.add(message_tokens(m) for m in system) and text and head:
            text[-1].cache_control = _ephemeral()
            placed += 1
    history = [m for m in req.messages if m.role != "system"][:-1]
    if not history_ok or not prefix.add(message_tokens(m) for m in history):
        return placed
    for m in reversed(history):
        if m.role == "tool":  # a text-only tool result is sent as a string: no block to mark
            continue
        parts = [p for p in m.content if (p.type == "text" and p.text) or p.type in ("image", "document")]
        if parts:
            parts[-1].cache_control = _ephemeral()
            return placed + 1
    return placed


def message_tokens(m: Message) -> int:
    """About how many prompt tokens a canonical message costs (framing, text, calls, media)."""
    total = 3
    for p in m.content:
        if p.type in ("text", "thinking"):
            total += tokens.count(p.text or "")
        elif p.type in ("image", "document"):
            total += tokens.count(p.text) if p.text else MEDIA_TOKENS
    for call in m.tool_calls:
        total += tokens.count(call.name) + tokens.count(call.arguments)
    return total
