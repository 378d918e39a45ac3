"""A rewritten request in the client's own dialect: the client's body with only the fields a layer
owns replaced, every other key going upstream byte for byte.

The savings layers that shorten a prompt (compression, context dedupe) edit the canonical
request's messages. Re-encoding the whole canonical request would emit only the keys the canonical
types model (dropping `frequency_penalty`, `logprobs`, `service_tier`, unknown vendor keys, and
turning `max_completion_tokens` into `max_tokens`), so a same-dialect upstream gets the client's
own body instead, with the owned fields taken from the rewritten request:

- chat.completions: `messages`;
- messages: `messages` and `system`.

Within `messages`, a message the layers left alone is the client's own JSON (its `name`,
`refusal`, audio parts, whatever the canonical types do not carry); only a message that changed
(or a note a layer inserted) is encoded from the canonical form. Unchanged is decided by encoding
the client's body through the same codec before and after: equal encodings are the same message.
When the client's messages do not map one to one onto their encoding (Anthropic merges
consecutive user turns), every message is the encoded one: still the owned field only.

Pure: no pipeline, no store. An endpoint without a rewriter here is translated by dispatch instead.
"""

from __future__ import annotations

from typing import Any

from gateway.wire import anthropic_messages, openai_chat
from gateway.wire.canonical import ChatRequest

_ANY_CAP = 1  # the Anthropic encoder's max_tokens fallback: never read here (max_tokens is not owned)


def _openai(req: ChatRequest) -> dict[str, Any]:
    return openai_chat.encode_request(req)


def _anthropic(req: ChatRequest) -> dict[str, Any]:
    return anthropic_messages.encode_request(req, _ANY_CAP)


# endpoint -> (decode, encode, the top-level fields a rewriting layer owns besides `messages`)
REWRITERS = {
    "chat.completions": (openai_chat.decode_request, _openai, ()),
    "messages": (anthropic_messages.decode_request, _anthropic, ("system",)),
}


def rewritable(endpoint: str) -> bool:
    return endpoint in REWRITERS


def rewritten(endpoint: str, body: dict[str, Any], req: ChatRequest) -> dict[str, Any]:
    """`body` (the client's, as checked) with its owned fields taken from `req` (the rewritten
    canonical request); every other key and value is `body`'s own."""
    decode, encode, owned = REWRITERS[endpoint]
    before, after = encode(decode(body)), encode(req)
    out = dict(body)
    out["messages"] = _messages(body.get("messages") or [], before["messages"], after["messages"])
    for key in owned:
        if before.get(key) == after.get(key):
            continue  # untouched: the client's own value (or absence) stays
        if after.get(key) is None:
            out.pop(key, None)
        else:
            out[key] = after[key]
    return out


def _messages(original: list[Any], before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[Any]:
    """`after`, with each message equal to one of `before` (in order) replaced by the client's own."""
    if len(original) != len(before):
        return after
    out: list[Any] = []
    cursor = 0
    for message in after:
        for k in range(cursor, len(before)):
            if before[k] == message:
                out.append(original[k])
                cursor = k + 1
                break
        else:
            out.append(message)
    return out
