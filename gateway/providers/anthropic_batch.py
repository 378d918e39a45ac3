"""Anthropic's Message Batches API as a provider batch adapter (see batch_api.py for the protocol).

`processing_status` maps onto the common vocabulary: in_progress -> in_progress, canceling ->
cancelling, ended -> cancelled (a cancel was initiated), expired (some requests expired) or
completed. Results are the JSONL at the batch's `results_url`: `result.type` succeeded (a message,
its usage read as /v1/messages reports it), errored, canceled or expired. A results body that is
not JSONL of that shape is InvalidUpstreamResponse.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway import errors
from gateway.errors import InvalidUpstreamResponse, UpstreamError
from gateway.providers import http
from gateway.providers.batch_api import DEADLINE_SECONDS, Outcome, State, parse_lines
from gateway.routing.routes import ProviderInfo
from gateway.wire import anthropic_messages
from gateway.wire.canonical import Usage

kind = "anthropic"


def _headers(provider: ProviderInfo) -> dict[str, str]:
    h = {"Content-Type": "application/json", "Accept": "application/json",
         "anthropic-version": anthropic_messages.DEFAULT_VERSION}
    if provider.api_key:
        h["x-api-key"] = provider.api_key
    return h


def _call(provider: ProviderInfo, method: str, path: str, data: bytes | None = None) -> http.Response:
    base = provider.base_url
    resp = http.session_for(base).request(method, base + path, data=data, headers=_headers(provider),
                                          deadline=time.perf_counter() + DEADLINE_SECONDS)
    if resp.status_code >= 400:
        try:
            message, code = anthropic_messages.upstream_error_message(resp.content)
        except UpstreamError:
            message, _code = None, None
        if isinstance(message, str) and provider.api_key:
            message = message.replace(provider.api_key, "***")
        raise errors.from_upstream_status(resp.status_code, message[:500] if isinstance(message, str) else None)
    return resp


def state_of(obj: Any) -> State:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not 0 < len(obj["id"]) <= 128:
        raise InvalidUpstreamResponse()
    processing = obj.get("processing_status")
    if processing == "in_progress":
        status = "in_progress"
    elif processing == "canceling":
        status = "cancelling"
    elif processing == "ended":
        counts = obj.get("request_counts") or {}
        status = ("cancelled" if obj.get("cancel_initiated_at") else
                  "expired" if isinstance(counts, dict) and counts.get("expired") else "completed")
    else:
        raise InvalidUpstreamResponse()
    return State(obj["id"], status, output=obj.get("results_url"))


def submit(provider: ProviderInfo, lines: Iterable[tuple[str, dict[str, Any]]], endpoint: str,
           key: str | None = None) -> State:
    """Create the batch. `key` is not sent: Message Batches carry no metadata to name them by."""
    payload = orjson.dumps({"requests": [{"custom_id": cid, "params": body} for cid, body in lines]})
    return state_of(_call(provider, "POST", "/v1/messages/batches", payload).json())


def find(provider: ProviderInfo, key: str, since=None) -> State | None:
    """None: a Message Batch carries no metadata, so a part cut short by a crash cannot be told
    apart from another batch of the account; it is submitted again (services/batch_submit.py)."""
    return None


def poll(provider: ProviderInfo, upstream_id: str) -> State:
    return state_of(_call(provider, "GET", f"/v1/messages/batches/{upstream_id}").json())


def cancel(provider: ProviderInfo, upstream_id: str) -> State:
    return state_of(_call(provider, "POST", f"/v1/messages/batches/{upstream_id}/cancel", b"").json())


def results(provider: ProviderInfo, state: State) -> list[Outcome]:
    """The results at `results_url`, fetched only from the provider's own host."""
    path = f"/v1/messages/batches/{state.upstream_id}/results"
    if state.output:
        parts = urlsplit(state.output)
        if parts.netloc and parts.netloc != urlsplit(provider.base_url).netloc:
            raise InvalidUpstreamResponse()
        path = parts.path.removeprefix(urlsplit(provider.base_url).path)
    content = _call(provider, "GET", path).content
    return parse_lines(content, _outcome)


def _outcome(line: Any) -> Outcome:
    custom_id, result = line["custom_id"], line["result"]
    if not isinstance(custom_id, str) or not isinstance(result, dict):
        raise TypeError
    kind_ = result["type"]
    if kind_ == "succeeded":
        message = result["message"]
        if not isinstance(message, dict):
            raise TypeError
        usage = anthropic_messages.usage_from(message.get("usage")) or Usage()
        return Outcome(custom_id, "succeeded", 200, message, None, usage, message.get("id"))
    if kind_ == "errored":
        return Outcome(custom_id, "errored", 0, None, result.get("error"))
    if kind_ in ("canceled", "expired"):
        return Outcome(custom_id, kind_, 0, None, None)
    raise TypeError
