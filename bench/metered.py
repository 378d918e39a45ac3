"""Metered replies of the fake upstream (models named `work-*`, used by bench/workload.py):
deterministic answers, real token counts, simulated Anthropic prompt caching, and a record of
every call with the usage it billed.

Answers depend only on the last paragraph of the last user message (a sha256 of it picks 12-40
words from a fixed vocabulary), so the same question always gets the same answer, whoever sends it,
even after the gateway rewrote the context before it (context dedupe, compression). Tokens are
counted with the gateway's own offline tokenizer (gateway.tokens, o200k), framed like OpenAI chat:
3 per request, 3 per message, plus the text; the output is the answer's tokens.

Anthropic prompt caching, simplified from Anthropic's documented behaviour: the prompt is read as
a sequence of blocks (tools, then system blocks, then message blocks); a block carrying
`cache_control` is a breakpoint, and counts only when the prefix up to it reaches 1024 tokens. The
longest breakpoint prefix seen before (exact match) is read from the cache
(`cache_read_input_tokens`); the rest, up to the last breakpoint, is written
(`cache_creation_input_tokens`) and remembered; `input_tokens` is what follows the last
breakpoint. No TTL (a run is minutes long). A request without `cache_control` is never cached.
A model name containing `slow` sleeps SLOW_SECONDS first (so identical concurrent calls overlap).
"""

from __future__ import annotations

import hashlib

import gevent
import orjson

from gateway import tokens

SLOW_SECONDS = 0.2
CACHE_MINIMUM = 1024  # Anthropic's minimum cacheable prefix for most models
VOCABULARY = ("the answer depends on context but in short you should check the configuration first then "
              "restart the service and verify the logs carefully because most problems come from small "
              "mistakes in paths permissions versions or network settings which are easy to fix once "
              "found").split()

_seen_prefixes: set[str] = set()
# Cumulative counters per upstream model, read by GET /_bench/usage; the workload diffs two snapshots.
TOTALS: dict[str, dict[str, int]] = {}


def snapshot() -> bytes:
    return orjson.dumps(TOTALS)


def _record(model: str, prompt: int, read: int, write: int, output: int) -> None:
    """`prompt` is every prompt token, cache reads and writes included."""
    counts = TOTALS.setdefault(model, {"calls": 0, "input_tokens": 0, "cache_read_tokens": 0,
                                       "cache_write_tokens": 0, "output_tokens": 0})
    counts["calls"] += 1  # one thread (gevent): no lock needed
    counts["input_tokens"] += prompt
    counts["cache_read_tokens"] += read
    counts["cache_write_tokens"] += write
    counts["output_tokens"] += output


def answer_for(message: str) -> str:
    question = message.strip().rsplit("\n\n", 1)[-1]
    digest = hashlib.sha256(question.encode()).digest()
    n = 12 + digest[0] % 29
    return " ".join(VOCABULARY[digest[1 + i % 31] % len(VOCABULARY)] for i in range(n)) + "."


def _reply(body: dict, messages: list) -> tuple[str, bool]:
    """(answer, cut short by the request's output limit)."""
    text = answer_for(_last_user(messages))
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(limit, int) or limit <= 0 or tokens.count(text) <= limit:
        return text, False
    words = text.split(" ")
    while len(words) > 1 and tokens.count(" ".join(words)) > limit:
        words.pop()
    return " ".join(words), True


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content or []
                    if isinstance(b, dict) and b.get("type") == "text")


def _last_user(messages: list) -> str:
    return next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


def _pause(model: str) -> None:
    if "slow" in model:
        gevent.sleep(SLOW_SECONDS)  # other requests go on meanwhile


# ---- OpenAI chat completions ---------------------------------------------------------------------

def openai(body: dict) -> tuple[dict | None, list[dict] | None]:
    """(completion, None) or (None, stream chunks); the usage is recorded either way."""
    model = str(body.get("model"))
    _pause(model)
    messages = body.get("messages") or []
    prompt = 3 + sum(3 + tokens.count(_text(m.get("content"))) for m in messages)
    text, cut = _reply(body, messages)
    finish = "length" if cut else "stop"
    output = tokens.count(text)
    _record(model, prompt, 0, 0, output)
    usage = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
             "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}}
    ident = "chatcmpl-" + hashlib.sha256(orjson.dumps(body)).hexdigest()[:24]
    head = {"id": ident, "created": 1700000000, "model": model, "system_fingerprint": "fp_bench"}
    if not body.get("stream"):
        return {**head, "object": "chat.completion", "usage": usage, "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
             "logprobs": None, "finish_reason": finish}]}, None
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    words = text.split(" ")
    pieces = [words[0]] + [" " + w for w in words[1:]]
    chunks = []
    for i, piece in enumerate(pieces):
        delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        chunks.append({**head, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": delta, "logprobs": None,
             "finish_reason": finish if i == len(pieces) - 1 else None}]})
        if include_usage:
            chunks[-1]["usage"] = None
    if include_usage:
        chunks.append({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
    return None, chunks


# ---- Anthropic Messages --------------------------------------------------------------------------

def _blocks(body: dict) -> list[tuple[str, int, bool]]:
    """The prompt as (identity, tokens, is a breakpoint) blocks, in cache order: tools, system, messages."""
    out = []
    for tool in body.get("tools") or []:
        t = {k: v for k, v in tool.items() if k != "cache_control"}
        text = orjson.dumps(t, option=orjson.OPT_SORT_KEYS).decode()
        out.append(("tool:" + text, 3 + tokens.count(text), "cache_control" in tool))
    system = body.get("system")
    if system:
        blocks = [{"type": "text", "text": system}] if isinstance(system, str) else system
        out += [("system:" + b.get("text", ""), 3 + tokens.count(b.get("text", "")), "cache_control" in b)
                for b in blocks]
    for m in body.get("messages") or []:
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for i, b in enumerate(blocks):
            text = b.get("text", "") if b.get("type") == "text" else orjson.dumps(
                {k: v for k, v in b.items() if k != "cache_control"}).decode()
            framing = 3 if i == 0 else 0
            out.append((f"{m.get('role')}:{text}", framing + tokens.count(text), "cache_control" in b))
    return out


def _cache(blocks: list[tuple[str, int, bool]]) -> tuple[int, int]:
    """(cache read tokens, cache write tokens) for a prompt, remembering what it wrote."""
    digest, total = hashlib.sha256(), 0
    breakpoints = []  # (prefix hash, prefix tokens)
    for ident, n, marked in blocks:
        digest.update(ident.encode() + b"\0")
        total += n
        if marked and total >= CACHE_MINIMUM:
            breakpoints.append((digest.copy().hexdigest(), total))
    if not breakpoints:
        return 0, 0
    read = max((n for h, n in breakpoints if h in _seen_prefixes), default=0)
    _seen_prefixes.update(h for h, _ in breakpoints)
    return read, breakpoints[-1][1] - read


def anthropic(body: dict) -> tuple[dict | None, list[tuple[str, dict]] | None]:
    """(message, None) or (None, [(event name, data)...]); the usage is recorded either way."""
    model = str(body.get("model"))
    _pause(model)
    blocks = _blocks(body)
    prompt = 3 + sum(n for _, n, _ in blocks)
    read, write = _cache(blocks)
    text, cut = _reply(body, body.get("messages") or [])
    stop = "max_tokens" if cut else "end_turn"
    output = tokens.count(text)
    _record(model, prompt, read, write, output)
    usage = {"input_tokens": prompt - read - write, "cache_creation_input_tokens": write,
             "cache_read_input_tokens": read, "output_tokens": output}
    ident = "msg_01" + hashlib.sha256(orjson.dumps(body)).hexdigest()[:22]
    if not body.get("stream"):
        return {"id": ident, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": stop, "stop_sequence": None,
                "usage": usage}, None
    words = text.split(" ")
    events = [("message_start", {"message": {
        "id": ident, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {})]
    events += [("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
               for piece in [words[0]] + [" " + w for w in words[1:]]]
    events += [("content_block_stop", {"index": 0}),
               ("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                  "usage": {"output_tokens": output}}),
               ("message_stop", {})]
    return None, events
