"""Responses API conversation state: the conversation in, the reply remembered out (enforcing).

`before` resolves `previous_response_id` within the caller's org (an id of another org is a 404,
as if it did not exist) and puts the conversation so far on the context, where dispatch hands it
to the codec (translation) or the adapter (pass-through). The reply is remembered for the org
unless the client sent `store: false`: a whole reply in `after`; a stream as its terminal
`response.completed` / `.incomplete` event passes (so a client that continues the conversation
right after reading it finds it), however the stream was produced (passed through, translated,
or replayed from a cache). The stage comes after dlp, so `on_reply` sees the reply before dlp
restores it: the conversation is kept in placeholder form. A pass-through reply is remembered as held by its provider too, so
the next turn to the same provider sends `previous_response_id` instead of the history.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from gateway.pipeline.context import Reply, RequestContext
from gateway.pipeline.dispatch import PASS
from gateway.stores import responses as store
from gateway.wire.openai_responses import StreamObserver

name, enforcing = "responses", True


def before(ctx: RequestContext) -> Reply | None:
    if ctx.endpoint != "responses":
        return None
    assert ctx.principal is not None
    conversation = store.conversation(ctx.principal.org_id, ctx.body.get("previous_response_id"))
    ctx.history, ctx.history_provider = conversation.history, conversation.provider
    return None


def on_reply(ctx: RequestContext, reply: Reply) -> Reply:
    """Sees the reply before dlp (earlier in STAGES) restores its placeholders: what is remembered
    is the placeholder form, like everything else the gateway keeps."""
    if ctx.endpoint != "responses" or ctx.body.get("store") is False:
        return reply
    if reply.chunks is not None:
        reply.chunks = _watched(ctx, reply.chunks)
    elif reply.body:
        try:
            obj = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            return reply
        if isinstance(obj, dict):
            ctx.extra[name] = obj
    return reply


def after(ctx: RequestContext, reply: Reply | None) -> None:
    response = ctx.extra.pop(name, None)
    if response is not None and ctx.error is None:
        _remember(ctx, response)


def _watched(ctx: RequestContext, chunks: Iterator[bytes]) -> Iterator[bytes]:
    observer = StreamObserver()
    try:
        for chunk in chunks:
            observer.feed(chunk)
            if observer.final is not None:
                _remember(ctx, observer.final)
                observer.final = None
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _remember(ctx: RequestContext, response: dict[str, Any]) -> None:
    assert ctx.principal is not None
    held = ctx.mode == PASS and ctx.cache == "miss" and ctx.route is not None
    store.remember(ctx.principal.org_id, ctx.body, ctx.history, response,
                   provider=ctx.route.provider.name if held else "", upstream_stored=held,
                   model="" if held else ctx.requested_model)
