"""Responses pass-through for OpenAI-kind upstreams that speak `{base_url}/responses` (OpenAI does):
the body sent and the stream relayed. The OpenAI adapter's passthrough posts it (providers/openai.py).

The client's body is forwarded as received with `model` rewritten. `previous_response_id` goes
upstream only when that upstream holds the response (`call.previous_provider`: the responses
stage found it stored from this provider for this org); otherwise the conversation so far
(`call.history`) is sent as `input`. Stream bytes are relayed as they arrive; the observer takes
usage from the terminal `response.completed` / `response.incomplete` event, and a stream that
ends without a terminal event ends in an `error` + `response.failed` pair, never a clean end.

Whether an upstream speaks Responses is `speaks_responses(route)`; dispatch's mode translates
onto chat for the ones that do not (many OpenAI-compatible servers have chat completions only).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway import errors, tokens
from gateway.errors import StreamTruncated, UpstreamError
from gateway.providers import http
from gateway.providers.base import Call, Relay
from gateway.routing.routes import RouteInfo
from gateway.scrub import scrub_bytes
from gateway.wire.canonical import Usage
from gateway.wire.openai_responses import StreamObserver, failure_events, input_items, usage_from


def speaks_responses(route: RouteInfo) -> bool:
    """Whether the route's upstream serves `/responses`.

    A provider declares it with `responses_api: true|false` in the config; undeclared, only
    OpenAI's own API is assumed to (most OpenAI-compatible servers have chat completions only).
    """
    declared = getattr(route.provider, "responses_api", None)
    if declared is not None:
        return bool(declared)
    return urlsplit(route.provider.base_url).hostname == "api.openai.com"


def id_and_usage(obj: Any) -> tuple[str | None, Usage]:
    """A whole Responses reply's id and usage."""
    rid = obj.get("id")
    return (rid if isinstance(rid, str) else None), usage_from(obj.get("usage")) or Usage()


def to_wire(call: Call, route: RouteInfo) -> bytes:
    body = dict(call.body)
    body["model"] = route.upstream_model
    if body.get("previous_response_id") and call.previous_provider != route.provider.name:
        # The upstream never saw that id (built here, or by another provider): send the turns instead.
        del body["previous_response_id"]
        body["input"] = [_portable(i) for i in call.history if i.get("type") != "reasoning"]
        body["input"] += input_items(call.body)
    return orjson.dumps(body)


def _portable(item: dict[str, Any]) -> dict[str, Any]:
    """An item as input to an upstream that did not create it: without the id it would look up."""
    return {k: v for k, v in item.items() if k != "id"}


def relay(resp: http.Response, call: Call) -> Relay:
    """Forward upstream bytes as they arrive, watching for the terminal event."""
    out = Relay()
    observer = StreamObserver()

    def chunks() -> Iterator[bytes]:
        try:
            for chunk in resp.iter_content(chunk_size=None):
                observer.feed(chunk)
                # From the failure on (error, response.failed), the upstream's message may echo our key.
                yield scrub_bytes(chunk) if observer.failed else chunk
            if not observer.terminal:
                yield _failed(out, observer, StreamTruncated())
            elif observer.failed:
                out.error = errors.stream_failed()
        except UpstreamError as e:
            yield _failed(out, observer, e)
        finally:
            resp.close()
            out.usage.merge(observer.usage)
            if observer.created is not None and isinstance(observer.created.get("id"), str):
                out.upstream_id = observer.created["id"]
            if out.usage.total == 0 and observer.events:
                out.estimate = _estimate(call, observer.events)

    out.chunks = chunks()
    return out


def _failed(out: Relay, observer: StreamObserver, err: UpstreamError) -> bytes:
    out.error = err
    # A partial event may sit in the splitter: close it with a blank line so ours parse on their own.
    head = b"\n\n" if observer.splitter.pending else b""
    return head + b"".join(failure_events(err, observer.events, observer.created))


def _estimate(call: Call, events: int) -> Usage:
    """A cut stream never reported usage; the upstream still bills the prompt and what it sent."""
    items = [*call.history, *input_items(call.body)]
    if call.body.get("instructions"):
        items.insert(0, {"role": "system", "content": str(call.body["instructions"])})
    return tokens.partial_usage(items, max(events - 4, 0))
