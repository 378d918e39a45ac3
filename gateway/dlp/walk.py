"""Every text the provider would see in a request body, per endpoint, rewritten in place.

Walked, in document order (so placeholder numbers are stable across resent history):
- chat completions: each message's `content` (a string, or its `text` parts), tool call
  `function.arguments` and legacy `function_call.arguments`; tool results are `tool` messages.
- messages (and count_tokens): `system` (string or text blocks); each message's `content`
  (string, `text` blocks, `tool_use.input` strings, `tool_result.content` string or text blocks).
- responses: `instructions`; `input` (a string, or items: message `content` string or
  input_text/output_text parts, `function_call.arguments`, `function_call_output.output`).
- embeddings: `input` strings (token-id arrays are left alone).
Never images, audio, files or documents, thinking blocks (they are signed) or tool definitions.
Every other field of the body is left exactly as the client sent it.

Tool call arguments are JSON text: they are parsed, their string values redacted, and the JSON
re-serialised only when something changed (when they do not parse, the text is scanned as is).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson

Slot = tuple[Any, Any, str]  # (container, key, mode): mode "text" | "json" | "object"
CHAT_PART_TYPES = frozenset({"text", "input_text", "output_text"})


def slots(endpoint: str, body: dict[str, Any]) -> list[Slot]:
    walker = WALKERS.get(endpoint)
    return list(walker(body)) if walker else []


def rewrite(body_slots: list[Slot], redact: Callable[[str], str]) -> None:
    """Apply `redact` to every slot's text, in order."""
    for container, key, mode in body_slots:
        value = container[key]
        if mode == "text":
            container[key] = redact(value)
        elif mode == "object":
            container[key] = _redact_tree(value, redact)[0]
        else:  # json text
            try:
                tree = orjson.loads(value)
            except orjson.JSONDecodeError:
                container[key] = redact(value)
                continue
            tree, changed = _redact_tree(tree, redact)
            if changed:
                container[key] = orjson.dumps(tree).decode()


def texts(body_slots: list[Slot]) -> Iterator[str]:
    """The raw texts of the slots (for reserving placeholder numbers before any rewrite)."""
    for container, key, _mode in body_slots:
        value = container[key]
        if isinstance(value, str):
            yield value
        else:
            yield orjson.dumps(value).decode()


def _redact_tree(value: Any, redact: Callable[[str], str]) -> tuple[Any, bool]:
    if isinstance(value, str):
        new = redact(value)
        return new, new != value
    changed = False
    if isinstance(value, dict):
        for k, v in value.items():
            value[k], c = _redact_tree(v, redact)
            changed |= c
    elif isinstance(value, list):
        for i, v in enumerate(value):
            value[i], c = _redact_tree(v, redact)
            changed |= c
    return value, changed


def _content(container: dict, key: str, part_types=CHAT_PART_TYPES) -> Iterator[Slot]:
    value = container.get(key)
    if isinstance(value, str):
        yield container, key, "text"
    elif isinstance(value, list):
        for part in value:
            if isinstance(part, dict) and part.get("type") in part_types and isinstance(part.get("text"), str):
                yield part, "text", "text"


def _args(holder: Any) -> Iterator[Slot]:
    if isinstance(holder, dict) and isinstance(holder.get("arguments"), str):
        yield holder, "arguments", "json"


def chat(body: dict) -> Iterator[Slot]:
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        yield from _content(message, "content")
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict):
                yield from _args(call.get("function"))
        yield from _args(message.get("function_call"))


def messages(body: dict) -> Iterator[Slot]:
    yield from _content(body, "system")
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield message, "content", "text"
            continue
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                yield block, "text", "text"
            elif kind == "tool_use" and isinstance(block.get("input"), (dict, list)):
                yield block, "input", "object"
            elif kind == "tool_result":
                yield from _content(block, "content")


def responses(body: dict) -> Iterator[Slot]:
    if isinstance(body.get("instructions"), str):
        yield body, "instructions", "text"
    items = body.get("input")
    if isinstance(items, str):
        yield body, "input", "text"
        return
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "function_call":
            yield from _args(item)
        elif kind == "function_call_output":
            yield from _content(item, "output")
        elif kind in (None, "message"):
            yield from _content(item, "content")


def embeddings(body: dict) -> Iterator[Slot]:
    value = body.get("input")
    if isinstance(value, str):
        yield body, "input", "text"
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, str):
                yield value, i, "text"


WALKERS: dict[str, Callable[[dict], Iterator[Slot]]] = {
    "chat.completions": chat, "messages": messages, "messages.count_tokens": messages,
    "responses": responses, "embeddings": embeddings,
}
