"""Responses pass-through for OpenAI-kind upstreams that speak `{base_url}/responses` (OpenAI does).

The client's body is forwarded as received with `model` rewritten. `previous_response_id` goes
upstream only when that upstream holds the response (it created it for this org; the decode
check already refused ids of other orgs); otherwise the stored conversation is sent as `input`.
Stream bytes are relayed as they arrive. The observer takes usage from the terminal
`response.completed` / `response.incomplete` event; a stream that ends without a terminal event
ends in an `error` + `response.failed` pair, never a clean end.

An upstream that does not speak Responses (many OpenAI-compatible servers) is served by
translation onto chat instead, so one OpenAI-kind adapter covers both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests

from gateway import tokens
from gateway.errors import StreamTruncated, UpstreamError
from gateway.memo import RouteInfo
from gateway.pipeline.context import Reply, RequestContext
from gateway.providers import openai as openai_adapter
from gateway.scrub import scrub_bytes
from gateway.stores.responses import STATE, input_items, remember, state_of
from gateway.wire import sse
from gateway.wire.canonical import Usage
from gateway.wire.openai_responses import failure_events, usage_from

TERMINAL = frozenset({b"response.completed", b"response.incomplete", b"response.failed", b"error"})
PARSED = TERMINAL | {b"response.created"}


def speaks_responses(route: RouteInfo) -> bool:
    """Whether the route's upstream serves `/responses`.

    A provider declares it with `responses_api: true|false` in the config; undeclared, only
    OpenAI's own API is assumed to (most OpenAI-compatible servers have chat completions only).
    """
    declared = getattr(route.provider, "responses_api", None)
    if declared is not None:
        return bool(declared)
    return urlsplit(route.provider.base_url).hostname == "api.openai.com"


def passthrough(ctx: RequestContext, route: RouteInfo) -> Reply:
    if not speaks_responses(route):
        from gateway.pipeline.dispatch import translate  # here: dispatch imports the adapters

        return translate(ctx, openai_adapter, route)
    resp = openai_adapter.post(route, "/responses", to_wire(ctx, route), openai_adapter.headers_for(route),
                               stream=ctx.stream)
    if resp.status_code >= 400:
        raise openai_adapter.error_from(resp, route)
    if not ctx.stream:
        content = resp.content
        ctx.mark_first_byte()
        try:
            obj = orjson.loads(content)
            ctx.usage = usage_from(obj.get("usage")) or Usage()
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            raise UpstreamError("The upstream provider returned an invalid response.") from None
        remember(ctx.body, obj, provider=route.provider.name, upstream_stored=True)
        return Reply(status=200, body=content)
    return Reply(status=200, chunks=relay(ctx, resp, route), content_type="text/event-stream")


def to_wire(ctx: RequestContext, route: RouteInfo) -> bytes:
    body = {k: v for k, v in ctx.body.items() if k != STATE}
    body["model"] = route.upstream_model
    state = state_of(ctx.body)
    if body.get("previous_response_id") and state.get("previous_provider") != route.provider.name:
        # The upstream never saw that id (built here, or by another provider): send the turns instead.
        del body["previous_response_id"]
        body["input"] = [_portable(i) for i in state.get("history", ()) if i.get("type") != "reasoning"]
        body["input"] += input_items(ctx.body)
    return orjson.dumps(body)


def _portable(item: dict[str, Any]) -> dict[str, Any]:
    """An item as input to an upstream that did not create it: without the id it would look up."""
    return {k: v for k, v in item.items() if k != "id"}


class StreamObserver:
    """Watches a Responses SSE stream as it is relayed: the created and final responses, usage,
    and whether a terminal event arrived. Only the few events it needs are parsed."""

    __slots__ = ("splitter", "events", "created", "final", "failed", "terminal", "usage")

    def __init__(self) -> None:
        self.splitter = sse.EventSplitter()
        self.events = 0  # the API numbers events from 0, one by one: ours continue from here
        self.created: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None  # the response of response.completed / .incomplete
        self.failed = False
        self.terminal = False
        self.usage = Usage()

    def feed(self, chunk: bytes) -> None:
        for ev in self.splitter.feed(chunk):
            self._observe(ev)

    def _observe(self, ev: bytes) -> None:
        data = sse.data_of(ev)
        if data is None:
            return
        self.events += 1
        name = sse.name_of(ev)
        if name is None:  # servers that send only `data:`: find the type without parsing every delta
            if not any(b'"' + n + b'"' in data for n in PARSED):
                return
        elif name not in PARSED:
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        kind = str(obj.get("type", "")).encode()
        response = obj.get("response") if isinstance(obj.get("response"), dict) else None
        if kind == b"response.created":
            self.created = response
        elif kind in TERMINAL:
            self.terminal = True
            self.failed = kind in (b"response.failed", b"error")
            if response is not None:
                self.usage.merge(usage_from(response.get("usage")))
                if not self.failed:
                    self.final = response


def relay(ctx: RequestContext, resp: requests.Response, route: RouteInfo) -> Iterator[bytes]:
    """Forward upstream bytes as they arrive; store the response once its final event passed."""
    observer = StreamObserver()
    try:
        for chunk in resp.iter_content(chunk_size=None):
            ctx.mark_first_byte()
            observer.feed(chunk)
            if observer.final is not None:
                remember(ctx.body, observer.final, provider=route.provider.name, upstream_stored=True)
                observer.final = None
            # From the failure on (error, response.failed), the upstream's message may echo our key.
            yield scrub_bytes(chunk) if observer.failed else chunk
        if not observer.terminal:
            yield from _truncated(ctx, observer)
        elif observer.failed:
            ctx.fail(UpstreamError("The upstream provider reported an error during the stream.",
                                   retryable=False))
    except requests.exceptions.RequestException:
        yield from _truncated(ctx, observer)
    finally:
        resp.close()
        ctx.usage.merge(observer.usage)
        if ctx.usage.total == 0 and observer.events:
            _estimate(ctx, observer.events)


def _truncated(ctx: RequestContext, observer: StreamObserver) -> Iterator[bytes]:
    err = StreamTruncated()
    ctx.fail(err)
    # A partial event may sit in the splitter: close it with a blank line so ours parse on their own.
    head = b"\n\n" if observer.splitter.pending else b""
    events = failure_events(err, observer.events, observer.created)
    yield head + b"".join(events)


def _estimate(ctx: RequestContext, events: int) -> None:
    """A cut stream never reported usage; the upstream still bills the prompt and what it sent."""
    state = state_of(ctx.body)
    items = [*state.get("history", ()), *input_items(ctx.body)]
    if ctx.body.get("instructions"):
        items.insert(0, {"role": "system", "content": str(ctx.body["instructions"])})
    ctx.usage = Usage(input_tokens=tokens.count_messages(items), output_tokens=max(events - 4, 0))
    ctx.usage_estimated = True
