"""Client dialects: canonical types and per-dialect codecs, keyed by endpoint.

Each dialect module offers `check_request(body)`, `decode_request(body) -> ChatRequest`,
`render(resp, model, body) -> dict`, `render_stream(events, model, body) -> Iterator[bytes]`
and `error_event(err) -> bytes`, so dispatch can translate for any client. Codecs are pure: no
store, database or pipeline; state they need comes in as arguments (the Responses codec's
`decode_request(body, history)` takes the conversation so far).
"""

from __future__ import annotations

from types import ModuleType

from gateway.wire import anthropic_messages, openai_chat, openai_responses

CODECS: dict[str, ModuleType] = {
    "chat.completions": openai_chat,
    "messages": anthropic_messages,
    "responses": openai_responses,
    "compression.summary": openai_chat,  # the compression layer's summary call (savings/compress.py)
    "semantic_cache.verify": openai_chat,  # the semantic cache's verifier (savings/semantic_verifier.py)
}


def codec(endpoint: str) -> ModuleType:
    return CODECS[endpoint]
