"""OpenAI's Files + Batches API as a provider batch adapter (see batch_api.py for the protocol).

`submit` uploads the lines as a JSONL file (purpose `batch`) and creates the batch, the gateway's
name for the part in its `metadata` (`gateway_part_id`); `find` lists the account's batches (`GET
/batches`, paginated) for the one carrying a name, so a part whose submission was cut short by a
crash is adopted rather than sent twice (services/batch_submit.py); `results` reads
the output and error files: a line with `response.status_code` 200 succeeded (its usage read as
chat completions report it), `error.code` batch_expired / batch_cancelled expired or was canceled,
anything else errored. A results file that is not JSONL of that shape is InvalidUpstreamResponse.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
import urllib3

from gateway import errors
from gateway.errors import InvalidUpstreamResponse, UpstreamError
from gateway.providers import http
from gateway.providers.batch_api import DEADLINE_SECONDS, Outcome, State, parse_lines
from gateway.routing.routes import ProviderInfo
from gateway.wire import openai_chat, openai_embeddings
from gateway.wire.canonical import Usage

kind = "openai"
METADATA_KEY = "gateway_part_id"  # the gateway's name for the part, on the provider's batch
MAX_LIST_PAGES = 50  # a recovery reads at most 5,000 of the account's newest batches


def _headers(provider: ProviderInfo, content_type: str | None = "application/json") -> dict[str, str]:
    h = {"Accept": "application/json"}
    if content_type:
        h["Content-Type"] = content_type
    if provider.api_key:
        h["Authorization"] = f"Bearer {provider.api_key}"
    return h


def _call(provider: ProviderInfo, method: str, path: str, data: bytes | None = None,
          content_type: str | None = "application/json") -> http.Response:
    base = provider.base_url
    resp = http.session_for(base).request(method, base + path, data=data, headers=_headers(provider, content_type),
                                          deadline=time.perf_counter() + DEADLINE_SECONDS)
    if resp.status_code >= 400:
        try:
            message, code = openai_chat.upstream_error_message(resp.content)
        except UpstreamError:
            message, code = None, None
        if isinstance(message, str) and provider.api_key:
            message = message.replace(provider.api_key, "***")
        raise errors.from_upstream_status(resp.status_code, message[:500] if isinstance(message, str) else None,
                                          code=code if isinstance(code, str) else None)
    return resp


def _object(resp: http.Response) -> dict[str, Any]:
    return _object_of(resp.json())


def state_of(obj: dict[str, Any]) -> State:
    status = obj.get("status")
    if not isinstance(status, str):
        raise InvalidUpstreamResponse()
    message = None
    errs = (obj.get("errors") or {}).get("data") if isinstance(obj.get("errors"), dict) else None
    if isinstance(errs, list) and errs and isinstance(errs[0], dict):
        message = str(errs[0].get("message") or errs[0].get("code"))[:500]
    return State(obj["id"], status, obj.get("input_file_id"), obj.get("output_file_id"), obj.get("error_file_id"),
                 message)


def submit(provider: ProviderInfo, lines: Iterable[tuple[str, dict[str, Any]]], endpoint: str,
           key: str | None = None) -> State:
    """Upload `lines` (custom_id, body with the upstream model) and create the batch, named `key` in
    its metadata (`find` looks for it)."""
    content = b"".join(orjson.dumps({"custom_id": cid, "method": "POST", "url": endpoint, "body": body}) + b"\n"
                       for cid, body in lines)
    payload, content_type = urllib3.encode_multipart_formdata(
        {"purpose": "batch", "file": ("batch.jsonl", content, "application/jsonl")})
    file_id = _object(_call(provider, "POST", "/files", payload, content_type))["id"]
    body: dict[str, Any] = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}
    if key:
        body["metadata"] = {METADATA_KEY: key}
    created = _object(_call(provider, "POST", "/batches", orjson.dumps(body)))
    state = state_of(created)
    state.file_id = file_id
    return state


def find(provider: ProviderInfo, key: str, since: datetime | None = None) -> State | None:
    """The provider's batch whose metadata names `key`, if it has one: the list (newest first) read
    page by page (`after` the last id) until a batch created before `since` (less a minute of clock
    skew) or the end. A list that is not the API's shape is InvalidUpstreamResponse."""
    oldest = since.replace(tzinfo=since.tzinfo or UTC).timestamp() - 60 if since is not None else None
    after: str | None = None
    for _ in range(MAX_LIST_PAGES):
        page = _call(provider, "GET", "/batches?" + urlencode({"limit": 100, **({"after": after} if after else {})}),
                     content_type=None).json()
        data = page.get("data") if isinstance(page, dict) else None
        if not isinstance(data, list):
            raise InvalidUpstreamResponse()
        for obj in data:
            if not isinstance(obj, dict):
                raise InvalidUpstreamResponse()
            meta = obj.get("metadata")
            if isinstance(meta, dict) and meta.get(METADATA_KEY) == key:
                return state_of(_object_of(obj))
            created = obj.get("created_at")
            if oldest is not None and isinstance(created, (int, float)) and created < oldest:
                return None
        if not page.get("has_more") or not data:
            return None
        after = data[-1].get("id")
        if not isinstance(after, str):
            raise InvalidUpstreamResponse()
    return None


def _object_of(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not 0 < len(obj["id"]) <= 128:
        raise InvalidUpstreamResponse()
    return obj


def poll(provider: ProviderInfo, upstream_id: str) -> State:
    return state_of(_object(_call(provider, "GET", f"/batches/{upstream_id}")))


def cancel(provider: ProviderInfo, upstream_id: str) -> State:
    return state_of(_object(_call(provider, "POST", f"/batches/{upstream_id}/cancel", b"")))


def results(provider: ProviderInfo, state: State) -> list[Outcome]:
    out: list[Outcome] = []
    for file_id in (state.output, state.errors):
        if file_id:
            content = _call(provider, "GET", f"/files/{file_id}/content", content_type=None).content
            out.extend(parse_results(content))
    return out


def parse_results(content: bytes) -> list[Outcome]:
    return parse_lines(content, _outcome)


def _outcome(line: Any) -> Outcome:
    custom_id = line["custom_id"]
    if not isinstance(custom_id, str):
        raise TypeError
    response, error = line.get("response"), line.get("error")
    if isinstance(response, dict) and response.get("status_code") == 200:
        body = response["body"]
        if not isinstance(body, dict):
            raise TypeError
        usage = openai_chat.usage_from(body.get("usage")) or Usage()
        if "choices" not in body and "data" in body:  # an embeddings line
            usage = openai_embeddings.usage_from(body.get("usage"))
        return Outcome(custom_id, "succeeded", 200, body, None, usage, body.get("id"))
    code = error.get("code") if isinstance(error, dict) else None
    if code == "batch_expired":
        return Outcome(custom_id, "expired", 0, None, error)
    if code == "batch_cancelled":
        return Outcome(custom_id, "canceled", 0, None, error)
    if isinstance(response, dict):
        return Outcome(custom_id, "errored", int(response.get("status_code") or 500), response.get("body"), error)
    if not isinstance(error, dict):
        raise TypeError
    return Outcome(custom_id, "errored", 0, None, error)
