"""Decode: parse and check the body once, in the client's dialect (enforcing)."""

from __future__ import annotations

import orjson

from gateway.errors import InvalidJSON
from gateway.pipeline.context import Reply, RequestContext
from gateway.wire import anthropic_messages, depth, openai_chat, openai_embeddings, openai_responses

name, enforcing = "decode", True

CHECKS = {
    "chat.completions": openai_chat.check_request,
    "messages": anthropic_messages.check_request,
    "messages.count_tokens": anthropic_messages.check_count_request,
    "embeddings": openai_embeddings.check_request,
    "responses": openai_responses.check_request,
    "compression.summary": openai_chat.check_request,  # the compression layer's own summary call
    "semantic_cache.verify": openai_chat.check_request,  # the semantic cache's verifier call
}


def before(ctx: RequestContext) -> Reply | None:
    try:
        ctx.body = orjson.loads(ctx.raw)
    except orjson.JSONDecodeError:
        raise InvalidJSON(
            "We could not parse the JSON body of your request. The body must be valid JSON."
        ) from None
    depth.check(ctx.raw, ctx.body)
    CHECKS[ctx.endpoint](ctx.body)
    ctx.requested_model = ctx.body["model"]
    ctx.stream = bool(ctx.body.get("stream"))
    return None
