"""Prompt size in any client dialect: the text a model reads, counted only where a decision needs it.

Two callers: the route stage refuses a request that cannot fit a route's context window, and the
meter estimates the prompt when an upstream's usage was malformed. `upper_bound` costs nothing (a
token is at least one byte, so the body's length bounds the prompt's tokens); `count` tokenises the
text pieces and stops as soon as it passes `limit`, so a huge prompt costs no more than the limit
it is checked against. Images, files and signatures are not text and are not counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gateway import tokens

PROMPT_FIELDS = ("system", "instructions", "messages", "input", "tools", "functions")
# Keys whose strings are not text the model reads as tokens: payloads, URLs, identifiers, markers.
SKIP = frozenset({"image_url", "source", "data", "file_data", "file_id", "url", "signature", "id", "type",
                  "role", "cache_control", "tool_call_id", "tool_use_id", "call_id", "media_type", "detail"})
PIECE = 256 * 1024  # characters tokenised at a time, so the limit can stop a huge string early
OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def texts(body: dict[str, Any], history: list[Any] | None = None) -> Iterator[str]:
    """Every string of the prompt (system, messages or input, tools), history of a Responses chain included."""
    stack: list[Any] = [body.get(f) for f in reversed(PROMPT_FIELDS)]
    if history:
        stack.append(history)
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            stack.extend(reversed(value))
        elif isinstance(value, dict):
            stack.extend(v for k, v in value.items() if k not in SKIP)


def count(body: dict[str, Any], limit: int | None = None, history: list[Any] | None = None) -> int:
    """Prompt tokens (a few per message of framing, as OpenAI counts); once past `limit`, a number
    above it (the exact figure is not needed)."""
    messages = body.get("messages") if isinstance(body.get("messages"), list) else ()
    total = 3 + 3 * len(messages)
    for text in texts(body, history):
        for start in range(0, len(text), PIECE):
            total += tokens.count(text[start:start + PIECE])
            if limit is not None and total > limit:
                return total
    return total


def upper_bound(raw: bytes, body: dict[str, Any]) -> int | None:
    """A bound on the prompt's tokens without tokenising: the body's byte length (None when the
    prompt holds more than the body, as a Responses chain's stored history)."""
    if body.get("previous_response_id"):
        return None
    return len(raw)


def requested_output(body: dict[str, Any]) -> int:
    """The output the client asked room for (max_tokens and its dialects' names), or 0."""
    for name in OUTPUT_FIELDS:
        value = body.get(name)
        if type(value) is int and value > 0:
            return value
    return 0
