"""Responses API conversation state: the conversation in, the reply remembered out (enforcing).

`before` resolves `previous_response_id` within the caller's org (an id of another org is a 404,
as if it did not exist) and puts the conversation so far on the context, where dispatch hands it
to the codec (translation) or the adapter (pass-through). The reply is remembered for the org
unless the client sent `store: false`: a whole reply in `after`; a stream as its terminal
`response.completed` / `.incomplete` event passes (so a client that continues the conversation
right after reading it finds it), however the stream was produced (passed through, translated,
or replayed from a cache). A pass-through reply is remembered as held by its provider too, so
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
    if ctx.endpoint == "responses" and reply.chunks is not None and ctx.body.get("store") is not False:
        reply.chunks = _watched(ctx, reply.chunks)
    return reply


def after(ctx: RequestContext, reply: Reply | None) -> None:
    if ctx.endpoint != "responses" or reply is None or reply.body is None or ctx.error is not None:
        return
    try:
        obj = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        return
    if isinstance(obj, dict):
        _remember(ctx, obj)


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
