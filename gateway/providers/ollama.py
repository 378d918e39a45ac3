"""Ollama-kind adapter: Ollama's native API (`/api/chat`, `/api/embed`, `/api/tags`), always translated.

No client speaks Ollama's dialect, so nothing passes through: requests go canonical -> Ollama and
replies come back canonical. The base URL is what Ollama's own clients take (`http://localhost:11434`).
Streams are NDJSON (one JSON object a line; the last has `done: true` and the token counts); a
stream that ends without it ends in an error event. Prices are the catalog's (zero for local models).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from gateway import errors, tokens
from gateway.errors import InvalidRequest, InvalidUpstreamResponse, StreamTruncated, UpstreamError
from gateway.providers import http, openai
from gateway.providers.base import Call
from gateway.routing.routes import ProviderInfo, RouteInfo
from gateway.wire import openai_embeddings
from gateway.wire.canonical import (
    ChatRequest,
    ChatResponse,
    EventStream,
    FinishReason,
    Message,
    Part,
    StreamEvent,
    ToolCall,
    Usage,
)

kind = "ollama"
native: frozenset[str] = frozenset()  # Ollama's format is no client's dialect: always translated

# Canonical request field -> Ollama `options` key. Only what the client sent is set (no defaults).
OPTIONS = (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed"), ("stop", "stop"),
           ("max_tokens", "num_predict"))
EFFORTS = frozenset({"low", "medium", "high"})  # `think` levels (gpt-oss); other models take a boolean


# ---- canonical -> Ollama ---------------------------------------------------------------------------

def _images(parts: list[Part]) -> list[str]:
    """Ollama takes images as bare base64. An image by URL would need fetching: this route cannot serve it."""
    images = []
    for p in parts:
        if p.type != "image":
            continue
        if not p.data:
            raise UpstreamError("Ollama accepts images only inline (base64 data: URLs), not by URL.",
                                status=400, retryable=True, type="invalid_request_error",
                                anthropic_type="invalid_request_error")
        images.append(p.data)
    return images


def _arguments(text: str) -> dict[str, Any]:
    """A tool call's JSON text as the object Ollama expects; anything unparsable becomes {}."""
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _message(m: Message, names: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.text}
    if m.role == "user":
        if images := _images(m.content):
            out["images"] = images
    elif m.role == "assistant":
        thinking = "".join(p.text or "" for p in m.content if p.type == "thinking")
        if thinking:
            out["thinking"] = thinking
        if m.tool_calls:
            out["tool_calls"] = [{"function": {"name": c.name, "arguments": _arguments(c.arguments)}}
                                 for c in m.tool_calls]
    elif m.role == "tool":
        # Ollama matches a result to its call by tool name; canonical messages carry the call id.
        if name := names.get(m.tool_call_id or ""):
            out["tool_name"] = name
    return out


def _format(response_format: dict[str, Any] | None) -> str | dict[str, Any] | None:
    if not response_format:
        return None
    if response_format.get("type") == "json_object":
        return "json"
    if response_format.get("type") == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or "json"
    return None


def _think(req: ChatRequest) -> bool | str | None:
    if req.thinking:
        return req.thinking.get("type") != "disabled"
    if req.reasoning_effort:
        return req.reasoning_effort if req.reasoning_effort in EFFORTS else req.reasoning_effort != "none"
    return None


def to_wire(req: ChatRequest) -> dict[str, Any]:
    """Canonical request -> `/api/chat` body. `stream` is always explicit: Ollama streams by default."""
    names = {c.id: c.name for m in req.messages for c in m.tool_calls}
    body: dict[str, Any] = {"model": req.model, "messages": [_message(m, names) for m in req.messages],
                            "stream": req.stream}
    if req.tools and req.tool_choice != "none":  # Ollama has no tool_choice; "none" means no tools
        body["tools"] = [{"type": "function", "function": {
            k: v for k, v in (("name", t.name), ("description", t.description), ("parameters", t.parameters))
            if v is not None}} for t in req.tools]
    options = {key: getattr(req, attr) for attr, key in OPTIONS if getattr(req, attr) is not None}
    if options:
        body["options"] = options
    if (fmt := _format(req.response_format)) is not None:
        body["format"] = fmt
    if (think := _think(req)) is not None:
        body["think"] = think
    return body


# ---- Ollama -> canonical ---------------------------------------------------------------------------

def usage_from(obj: dict[str, Any]) -> Usage | None:
    """Token counts of a final (`done: true`) object; None when Ollama reported none."""
    if "prompt_eval_count" not in obj and "eval_count" not in obj:
        return None
    return Usage(input_tokens=int(obj.get("prompt_eval_count") or 0),
                 output_tokens=int(obj.get("eval_count") or 0))


def _finish(done_reason: str | None, has_calls: bool) -> FinishReason:
    if has_calls:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"  # "stop", and "load"/"unload" for empty chats


def _call(tc: dict[str, Any]) -> ToolCall:
    fn = tc.get("function") or {}
    args = fn.get("arguments")
    text = args if isinstance(args, str) else orjson.dumps(args if args is not None else {}).decode()
    return ToolCall(tc.get("id") or "call_" + uuid.uuid4().hex[:24], fn.get("name", ""), text)


def from_wire(body: dict[str, Any]) -> ChatResponse:
    message = body.get("message") or {}
    content: list[Part] = []
    if thinking := message.get("thinking"):
        content.append(Part("thinking", text=thinking))
    if text := message.get("content"):
        content.append(Part("text", text=text))
    calls = [_call(tc) for tc in message.get("tool_calls") or [] if isinstance(tc, dict)]
    return ChatResponse(id=uuid.uuid4().hex, model=body.get("model", ""), content=content, tool_calls=calls,
                        finish_reason=_finish(body.get("done_reason"), bool(calls)),
                        usage=usage_from(body) or Usage(), created=int(time.time()))


def ndjson(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Complete lines of an NDJSON byte stream, whatever the chunking."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending


def decode_stream(chunks: Iterator[bytes]) -> EventStream:
    """Ollama NDJSON -> canonical events. Tool calls arrive whole, each in one object; a stream
    without its `done: true` object, or with an `error` object, ends in an error event."""
    started = False
    calls = 0
    for line in ndjson(chunks):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        if "error" in obj:  # a failure mid-stream: the status line already said 200
            yield StreamEvent("error", error=errors.stream_failed())
            return
        if not started:
            started = True
            yield StreamEvent("start", id=uuid.uuid4().hex, model=obj.get("model", ""))
        message = obj.get("message") or {}
        if message.get("thinking"):
            yield StreamEvent("thinking", text=message["thinking"])
        if message.get("content"):
            yield StreamEvent("text", text=message["content"])
        for tc in message.get("tool_calls") or []:
            if isinstance(tc, dict):
                call = _call(tc)
                yield StreamEvent("tool_call", index=calls, id=call.id, name=call.name)
                yield StreamEvent("tool_args", index=calls, text=call.arguments)
                calls += 1
        if obj.get("done"):
            yield StreamEvent("finish", finish_reason=_finish(obj.get("done_reason"), calls > 0))
            if (usage := usage_from(obj)) is not None:
                yield StreamEvent("usage", usage=usage)
            yield StreamEvent("end")
            return
    yield StreamEvent("error", error=StreamTruncated())


# ---- calls -----------------------------------------------------------------------------------------

def headers_for(route: RouteInfo | ProviderInfo) -> dict[str, str]:
    """Local Ollama needs no key; one is sent when configured (ollama.com, or a proxy in front)."""
    provider = route.provider if isinstance(route, RouteInfo) else route
    h = {"Content-Type": "application/json", "Accept": "application/json"}
    if provider.api_key:
        h["Authorization"] = f"Bearer {provider.api_key}"
    return h


def post(route: RouteInfo, path: str, payload: bytes, *, stream: bool = False,
         deadline: float | None = None) -> http.Response:
    return openai.post(route, path, payload, headers_for(route), stream=stream, deadline=deadline)


def chat(req: ChatRequest, route: RouteInfo, call: Call) -> ChatResponse:
    req.stream = False
    resp = post(route, "/api/chat", orjson.dumps(to_wire(req)), deadline=call.deadline)
    return http.parse(resp.content, from_wire)


def chat_stream(req: ChatRequest, route: RouteInfo, call: Call) -> EventStream:
    """The request is made now (errors raise here); the NDJSON is parsed lazily."""
    req.stream = True
    resp = post(route, "/api/chat", orjson.dumps(to_wire(req)), stream=True, deadline=call.deadline)
    return http.events(resp, decode_stream)


def list_models(provider: ProviderInfo) -> list[str]:
    """The models pulled on this Ollama server (`GET /api/tags`), by name (`llama3.2:latest`)."""
    resp = http.session_for(provider.base_url).get(provider.base_url + "/api/tags", headers=headers_for(provider))
    if resp.status_code >= 400:
        resp.close()
        raise UpstreamError(f"The upstream provider returned an error (HTTP {resp.status_code}).")
    return http.parse(resp.content, lambda obj: [m["name"] for m in obj["models"]])


def probe_tags(base_url: str, timeout: float, max_bytes: int = 4 << 20) -> list[dict[str, Any]]:
    """`GET /api/tags` on an Ollama server no provider has yet (http.probe): its models as Ollama
    lists them (`{"name", "size", "details": {...}}`, names as `llama3.2:latest`). A body that is
    not Ollama's model list raises InvalidUpstreamResponse; an HTTP error, UpstreamError."""
    status, body = http.probe(base_url.rstrip("/") + "/api/tags", timeout, max_bytes)
    if status != 200:
        raise UpstreamError(f"It answered HTTP {status} to GET /api/tags.")
    return http.parse(body, _tags)


def _tags(obj: Any) -> list[dict[str, Any]]:
    models = obj["models"]
    if not isinstance(models, list) or not all(isinstance(m, dict) and isinstance(m["name"], str) for m in models):
        raise TypeError
    return models


def embeddings(call: Call, route: RouteInfo) -> tuple[dict[str, Any], Usage]:
    """An OpenAI embeddings request -> `/api/embed` -> an OpenAI-shaped list (base64 on request)."""
    body = call.body
    texts = openai_embeddings.texts(body)
    if texts is None:
        raise InvalidRequest("This model takes 'input' as a string or an array of strings (not token ids).",
                             param="input")
    payload: dict[str, Any] = {"model": route.upstream_model, "input": texts}
    if body.get("dimensions") is not None:
        payload["dimensions"] = body["dimensions"]
    resp = post(route, "/api/embed", orjson.dumps(payload), deadline=call.deadline)
    out = http.parse(resp.content, _embedded)
    vectors = [list(v) for v in out["embeddings"]]
    if len(vectors) != len(texts):
        raise InvalidUpstreamResponse()
    if out.get("prompt_eval_count") is not None:
        usage = Usage(input_tokens=int(out["prompt_eval_count"]))
    else:  # older servers report no count
        usage = Usage(input_tokens=sum(tokens.count(t) for t in texts), estimated=True)
    return openai_embeddings.response(vectors, body.get("model", ""), usage, body.get("encoding_format")), usage


def _embedded(obj: Any) -> dict[str, Any]:
    if not isinstance(obj["embeddings"], list):
        raise TypeError
    return obj
