"""Context dedupe (opt-in): a block of text pasted into several messages of one request is sent
once; each later copy becomes a short reference to the message that holds it.

A block is a paragraph (text between blank lines) of at least `min_chars` characters, compared
after trimming surrounding whitespace. The first copy stays where it is; a later one, in the same
message or a later one, is replaced by `[same text as in message N above: "first words…"]`, N
counting the request's messages from 1 (system prompt included), the quote making it unambiguous
in any dialect. Only the request itself is read: nothing is stored, so nothing crosses orgs. The
rewrite depends only on earlier messages, so a growing conversation keeps a stable prefix for the
provider's prompt cache. `removed_tokens["context_dedupe"]` counts the tokens saved, references
subtracted. Chat endpoints only (`responses` is left alone, as in compression).

Advisory: any failure leaves the request as the client sent it.
Settings (savings.context_dedupe): enabled, min_chars.
"""

from __future__ import annotations

import re

from gateway import tokens
from gateway.pipeline import savings
from gateway.pipeline.context import Reply, RequestContext
from gateway.pipeline.savings import prompt_cache
from gateway.pipeline.savings.compress import prompt_tokens

name, enforcing = "context_dedupe", False

ENDPOINTS = frozenset({"chat.completions", "messages"})
BLOCK_BREAK = re.compile(r"(\n[ \t]*\n\s*)")  # kept by split(): the text around a block is unchanged
QUOTE_CHARS = 40


def before(ctx: RequestContext) -> Reply | None:
    if ctx.endpoint not in ENDPOINTS or not savings.enabled(ctx, name):
        return None
    min_chars = max(int(savings.settings(ctx, name).get("min_chars") or 1), 1)
    if len(ctx.raw) < 2 * min_chars:  # too short to hold two copies of anything
        return None
    req = prompt_cache.canonical(ctx)
    seen: dict[str, int] = {}  # block -> the message (1-based) that holds its first copy
    removed = replaced = 0
    rewrites = []  # applied at the end, all or nothing: a failure midway leaves the request whole
    for number, message in enumerate(req.messages, 1):
        for part in message.content:
            if part.type != "text" or not part.text or len(part.text) < min_chars:
                continue
            pieces = BLOCK_BREAK.split(part.text)
            changed = False
            for i in range(0, len(pieces), 2):  # even indexes are blocks, odd ones the breaks between
                block = pieces[i].strip()
                if len(block) < min_chars:
                    continue
                first = seen.get(block)
                if first is None:
                    seen[block] = number
                    continue
                ref = reference(first, number, block)
                removed += tokens.count(pieces[i]) - tokens.count(ref)
                pieces[i] = ref
                replaced += 1
                changed = True
            if changed:
                rewrites.append((part, "".join(pieces)))
    if removed <= 0:
        return None
    # the meter scales `removed` by the provider's count over the local count of what is sent
    local = ctx.extra.get("prompt_local_tokens") or prompt_tokens(req)
    ctx.extra["prompt_local_tokens"] = max(local - removed, 1)
    for part, text in rewrites:
        part.text = text
    ctx.changed = True
    ctx.removed_tokens[name] = removed
    ctx.extra[name] = {"blocks": replaced}
    return None


def reference(first: int, number: int, block: str) -> str:
    words = block[:QUOTE_CHARS].rsplit(" ", 1)[0] if len(block) > QUOTE_CHARS else block
    where = "earlier in this message" if first == number else f"in message {first} above"
    return f'[same text as {where}: "{words}…"]'
