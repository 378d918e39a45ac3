"""Conversation compression (opt-in): a conversation over its token budget loses its older turns,
replaced by a note (mode `trim`, middle-out) or by a summary a cheap model wrote (mode `summary`).

What stays verbatim: the system prompt, the first user turn (wherever it is: an app's greeting may
come first), and the last `keep_last_turns` turns. A turn is one message, except that an assistant
message with tool calls and the tool results that answer it are one turn, so a call is never
separated from its result. Only as many of the oldest middle turns go as bring the conversation
under `budget_tokens`, the note included: `trim` never cuts more than that. `summary` rounds its cut
up to a multiple of `keep_last_turns` (at most that many turns more), so the next few requests of a
growing conversation drop the same turns and the same stored summary serves them.

The summary is a real upstream call, made through the gateway's own pipeline with the caller's key
(auth, routing, the gate, metering): it is billed to the same org as its own ledger row, endpoint
`compression.summary`, request id `<request id>.summary`. Summaries are kept per (org, prefix hash)
in memory and in the ConversationSummary table (written by the ledger writer, loaded at start), so
no org ever reads another's. `removed_tokens["compression"]` is the prompt tokens before minus
after, the note or summary included. Chat endpoints only (`responses` is left alone: rewriting it
would move it off the Responses API onto chat).

Advisory: any failure, the summary call's included, leaves the request as the client sent it.
Settings (savings.compression): enabled, budget_tokens, keep_last_turns, mode (trim|summary),
summary_model (a catalog slug or alias).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from hashlib import sha256
from typing import NamedTuple

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import tokens
from gateway.errors import GatewayError
from gateway.ledger.writer import WRITER
from gateway.models import ConversationSummary
from gateway.pipeline import savings, subrequest
from gateway.pipeline.context import Reply, RequestContext
from gateway.pipeline.savings import prompt_cache
from gateway.pipeline.savings.prompt_cache import message_tokens
from gateway.wire.canonical import ChatRequest, Message, Part

log = logging.getLogger(__name__)

name, enforcing = "compression", False

ENDPOINTS = frozenset({"chat.completions", "messages"})
SUMMARY_ENDPOINT = "compression.summary"  # decoded and translated as OpenAI chat (see decode/wire)
MAX_SUMMARIES = 10_000  # kept in memory, least recently used first out
SUMMARY_PROMPT = (
    "You condense the earlier part of a conversation so that it can continue without it. Write a "
    "concise summary of the transcript the user sends: the facts, decisions, open questions, names, "
    "numbers and tool results that later turns may rely on. Keep the conversation's language. "
    "Answer with the summary only."
)


@dataclass(frozen=True, slots=True)
class Summary:
    text: str
    tokens_before: int  # the dropped turns
    tokens_after: int  # the summary


SUMMARIES: OrderedDict[tuple[int, str], Summary] = OrderedDict()


def load(session: Session) -> None:
    """Fill the in-memory summaries from the table (at start; requests read memory only)."""
    rows = session.scalars(select(ConversationSummary).order_by(ConversationSummary.id.desc())
                           .limit(MAX_SUMMARIES)).all()
    SUMMARIES.clear()
    for row in reversed(rows):
        SUMMARIES[(row.org_id, row.prefix_hash)] = Summary(row.summary, row.tokens_before, row.tokens_after)


def before(ctx: RequestContext) -> Reply | None:
    if ctx.endpoint not in ENDPOINTS or ctx.principal is None or not savings.enabled(ctx, name):
        return None
    conf = savings.settings(ctx, name)
    keep = max(int(conf.get("keep_last_turns") or 1), 1)
    budget = int(conf.get("budget_tokens") or 0)
    if len(ctx.raw) <= budget:  # a token is at least a byte: surely within budget, no need to count
        return None
    req = prompt_cache.canonical(ctx)
    summary_mode = conf.get("mode") == "summary"
    plan = split(req, budget, keep, summary_mode)
    if plan is None:
        return None
    system, head, dropped, kept, before_tokens = plan
    dropped_tokens = sum(message_tokens(m) for m in dropped)
    if summary_mode:
        summary = summarize(ctx, conf, system + head, dropped, dropped_tokens)
        if summary is None:
            return None
        note = f"[Summary of {len(dropped)} earlier messages, to fit the conversation budget]\n{summary}"
    else:
        note = f"[{len(dropped)} earlier messages were omitted here to fit the conversation budget.]"
    note_message = Message("user", [Part("text", text=note)])
    after_tokens = before_tokens - dropped_tokens + message_tokens(note_message)
    if after_tokens >= before_tokens:
        return None
    req.messages = system + head + [note_message] + kept
    ctx.changed = True
    ctx.removed_tokens[name] = before_tokens - after_tokens
    ctx.extra["prompt_local_tokens"] = after_tokens  # the meter's local count of what is sent
    ctx.extra[name] = {"mode": conf.get("mode") or "trim", "dropped_messages": len(dropped),
                       "tokens_before": before_tokens, "tokens_after": after_tokens}
    return None


class Split(NamedTuple):
    system: list[Message]  # kept verbatim
    head: list[Message]  # through the first user turn, kept verbatim
    dropped: list[Message]  # the oldest middle turns: omitted, or summarised
    kept: list[Message]  # the rest, verbatim
    tokens_before: int


def split(req: ChatRequest, budget: int, keep: int, summary_mode: bool) -> Split | None:
    """Where to cut a conversation over `budget` prompt tokens, or None if it fits or cannot be cut."""
    leading = next((i for i, m in enumerate(req.messages) if m.role != "system"), len(req.messages))
    units = turns(req.messages[leading:])  # the system prompt leads; a later system message is a turn
    first_user = next((i for i, unit in enumerate(units) if unit[0].role == "user"), -1)
    head = units[:first_user + 1]  # through the first user turn (none: nothing is pinned)
    middle = units[len(head):]
    if len(middle) <= keep:
        return None
    tokens_before = prompt_tokens(req)
    if tokens_before <= budget:
        return None
    cut = cut_size(middle, keep, tokens_before - budget, summary_mode)
    return Split(req.messages[:leading], [m for unit in head for m in unit],
                 [m for unit in middle[:cut] for m in unit], [m for unit in middle[cut:] for m in unit], tokens_before)


NOTE_TOKENS = 24  # the trim note, about 15 tokens, with room to spare


def cut_size(middle: list[list[Message]], keep: int, excess: int, summary_mode: bool) -> int:
    """How many of the oldest middle turns to drop so that `excess` prompt tokens go, the note (and,
    in summary mode, a summary of up to a quarter of what it replaces) included; never one of the
    last `keep` turns. Summary mode rounds to a multiple of `keep` (up, or down when the last turns
    leave no room) so that a growing conversation keeps the same cut, and its summary, for a while."""
    limit = len(middle) - keep
    cut, freed = 0, 0
    while cut < limit:
        freed += sum(message_tokens(m) for m in middle[cut])
        cut += 1
        kept_back = NOTE_TOKENS + (min(1024, freed // 4) if summary_mode else 0)
        if freed - kept_back >= excess:
            break
    if summary_mode and cut % keep:
        up = cut + keep - cut % keep
        cut = up if up <= limit else (limit - limit % keep or limit)
    return cut


def turns(messages: list[Message]) -> list[list[Message]]:
    """Messages grouped into turns; a tool-calling assistant message and its results are one turn."""
    units: list[list[Message]] = []
    for m in messages:
        if m.role == "tool" and units and units[-1][0].role == "assistant" and units[-1][0].tool_calls:
            units[-1].append(m)
        else:
            units.append([m])
    return units


def prompt_tokens(req: ChatRequest) -> int:
    tools = sum(tokens.count(orjson.dumps([t.name, t.description, t.parameters]).decode()) for t in req.tools)
    return 3 + tools + sum(message_tokens(m) for m in req.messages)


def transcript(messages: list[Message]) -> str:
    """Messages as plain text, for the summary model (and the prefix hash)."""
    lines = []
    for m in messages:
        text = " ".join((p.text or "") if p.type == "text" else f"[{p.type}]" for p in m.content
                        if p.type in ("text", "image", "document"))  # reasoning stays out
        if m.role == "tool":
            lines.append(f"tool result ({m.tool_call_id}): {text}")
            continue
        if text:
            lines.append(f"{m.role}: {text}")
        for call in m.tool_calls:
            lines.append(f"{m.role} called tool {call.name} ({call.id}) with {call.arguments}")
    return "\n\n".join(lines)


def summarize(ctx: RequestContext, conf: dict, prefix: list[Message], dropped: list[Message],
              dropped_tokens: int) -> str | None:
    """The summary of `dropped` (cached per org and conversation prefix), or None if it failed."""
    model = conf.get("summary_model")
    assert ctx.principal is not None
    if not model:
        log.warning("compression mode 'summary' needs savings.compression.summary_model; skipped")
        return None
    text = transcript(dropped)
    digest = sha256(orjson.dumps([model, transcript(prefix), text])).hexdigest()
    key = (ctx.principal.org_id, digest)
    if (found := SUMMARIES.get(key)) is not None:
        SUMMARIES.move_to_end(key)
        return found.text
    summary = call_summary_model(ctx, model, text, max_tokens=min(1024, max(64, dropped_tokens // 4)))
    if not summary:
        return None
    found = Summary(summary, dropped_tokens, tokens.count(summary))
    SUMMARIES[key] = found
    while len(SUMMARIES) > MAX_SUMMARIES:
        SUMMARIES.popitem(last=False)
    WRITER.enqueue_record(ConversationSummary, {"org_id": key[0], "prefix_hash": digest, "summary": summary,
                                                "tokens_before": found.tokens_before,
                                                "tokens_after": found.tokens_after})
    return summary


def call_summary_model(ctx: RequestContext, model: str, text: str, max_tokens: int) -> str | None:
    """One chat call through the whole pipeline, as the caller (same key: same org, app, rules,
    credits); it gets its own ledger row. This layer is off for it, so it never recurses."""
    body = {"model": model, "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": SUMMARY_PROMPT}, {"role": "user", "content": text}]}
    sub = RequestContext(endpoint=SUMMARY_ENDPOINT, dialect="openai", raw=orjson.dumps(body),
                         headers={savings.HEADERS[name]: "off"}, raw_key=ctx.raw_key,
                         request_id=f"{ctx.request_id}.summary")
    try:
        reply = subrequest.run(sub)
    except GatewayError as e:
        log.warning("conversation summary by %s failed (%s); compression skipped", model, e)
        return None
    choice = (orjson.loads(reply.body or b"{}").get("choices") or [{}])[0]
    content = (choice.get("message") or {}).get("content")
    return content.strip() if isinstance(content, str) and content.strip() else None
