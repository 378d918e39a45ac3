"""Gemini-kind adapter: Google's Gemini API (generativelanguage.googleapis.com), always translated.

`base_url` is what Google's SDK takes (`https://generativelanguage.googleapis.com`); requests go to
`{base_url}/v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`, with the
provider's key in `x-goog-api-key`. Gemini has no tool call ids: ids are synthesized (stable per
response) and tool results are matched back to their calls by function name. A Gemini 3 thought
signature rides inside the id (`<id>__thought__<signature>`) so it survives the client's round trip.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from gateway import errors, tokens
from gateway.errors import InvalidRequest, InvalidUpstreamResponse, StreamTruncated, UpstreamError, cannot_serve
from gateway.providers import http
from gateway.providers.base import Call
from gateway.providers.openai import scrub as openai_scrub
from gateway.routing.routes import RouteInfo
from gateway.wire import openai_embeddings, sse
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

kind = "gemini"
native: frozenset[str] = frozenset()  # no client speaks Gemini's dialect: always translated

SIGNATURE_SEP = "__thought__"
GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{20,}")
VERSIONED = re.compile(r"/v1(beta|alpha)?\d*$")  # a base_url that already names the API version

FINISH_IN: dict[str, FinishReason] = {
    "STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter", "LANGUAGE": "content_filter", "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
}
CHOICE_OUT = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
# OpenAI reasoning_effort -> thinking budget, as Google's own OpenAI-compatible endpoint maps it.
EFFORT_BUDGET = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}

# The OpenAPI subset Gemini's Schema accepts; anything else (additionalProperties, $schema, ...) is a 400.
SCHEMA_KEYS = frozenset({"format", "title", "description", "nullable", "enum", "maxItems", "minItems",
                         "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
                         "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum",
                         "maximum"})
FORMATS = frozenset({"enum", "date-time", "int32", "int64", "float", "double"})


# ---- canonical -> Gemini wire ----------------------------------------------------------------------

def schema_to_wire(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> dict[str, Any]:
    """JSON Schema -> Gemini's OpenAPI-subset Schema: local $refs inlined, unsupported keys dropped."""
    if not isinstance(schema, dict) or depth > 32:
        return {}
    defs = {**(defs or {}), **(schema.get("$defs") or {}), **(schema.get("definitions") or {})}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target = defs.get(ref.rsplit("/", 1)[1])
        return schema_to_wire({**(target or {}), **{k: v for k, v in schema.items() if k != "$ref"}},
                              defs, depth + 1)
    out: dict[str, Any] = {}
    kind_ = schema.get("type")
    if isinstance(kind_, list):  # ["string", "null"] -> STRING, nullable
        if "null" in kind_:
            out["nullable"] = True
        kinds = [k for k in kind_ if k != "null"]
        if len(kinds) == 1:
            out["type"] = kinds[0].upper()
        elif kinds:
            out["anyOf"] = [{"type": k.upper()} for k in kinds]
    elif kind_ == "null":
        out["nullable"] = True
    elif isinstance(kind_, str):
        out["type"] = kind_.upper()
    variants = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(variants, list):
        real = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
        if len(real) < len(variants):
            out["nullable"] = True
        if len(real) == 1:  # Optional[X]: X itself, nullable
            out.update({k: v for k, v in schema_to_wire(real[0], defs, depth + 1).items() if k != "nullable"})
        elif real:
            out["anyOf"] = [schema_to_wire(v, defs, depth + 1) for v in real]
    if "const" in schema:
        out["enum"] = [str(schema["const"])]
        out.setdefault("type", "STRING")
    for key, value in schema.items():
        if key not in SCHEMA_KEYS or key == "anyOf":
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: schema_to_wire(p, defs, depth + 1) for name, p in value.items()}
        elif key == "items":
            out[key] = schema_to_wire(value, defs, depth + 1)
        elif key == "enum" and isinstance(value, list):
            out[key] = [str(v) for v in value if v is not None]  # Gemini enums are strings only
            out["type"] = "STRING"
        elif key == "format":
            if value in FORMATS:
                out[key] = value
        else:
            out[key] = value
    if "required" in out:
        props = out.get("properties") or {}
        out["required"] = [r for r in out["required"] if r in props]
    return out


def _split_id(call_id: str) -> tuple[str, str | None]:
    """A tool call id -> (id, thought signature it carries, if any)."""
    base, sep, signature = call_id.partition(SIGNATURE_SEP)
    return base, (signature or None) if sep else None


def _media_part(p: Part) -> dict[str, Any] | None:
    if p.data:
        return {"inlineData": {"mimeType": p.media_type or "image/png", "data": p.data}}
    if p.url:
        file_data: dict[str, Any] = {"fileUri": p.url}
        guessed = p.media_type or mimetypes.guess_type(p.url.split("?", 1)[0])[0]
        if guessed:
            file_data["mimeType"] = guessed
        return {"fileData": file_data}
    return None


def _args(arguments: str) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest("Tool call arguments must be valid JSON to be sent to this model.") from None
    return value if isinstance(value, dict) else {"value": value}


def _contents(messages: list[Message]) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # call id -> function name (Gemini's functionResponse carries the name)
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            name = names.get(m.tool_call_id or "") or m.name or m.tool_call_id or ""
            part = {"functionResponse": {"name": name,
                                         "response": {"error" if m.is_error else "output": m.text}}}
            last = contents[-1] if contents else None
            # Answers to parallel calls travel together in one turn, as Gemini requires.
            if last and last["role"] == "user" and all("functionResponse" in p for p in last["parts"]):
                last["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
            continue
        parts: list[dict[str, Any]] = []
        for p in m.content:
            if p.type == "text" and p.text:
                parts.append({"text": p.text})
            elif p.type in ("image", "document") and (media := _media_part(p)):
                parts.append(media)
        for call in m.tool_calls if m.role == "assistant" else []:
            names[call.id] = call.name
            _, signature = _split_id(call.id)
            part = {"functionCall": {"name": call.name, "args": _args(call.arguments)}}
            if signature:
                part["thoughtSignature"] = signature
            parts.append(part)
        if parts:
            contents.append({"role": "model" if m.role == "assistant" else "user", "parts": parts})
    return contents


def _response_format(fmt: dict[str, Any] | None, config: dict[str, Any]) -> None:
    if not isinstance(fmt, dict):
        return
    if fmt.get("type") == "json_object":
        config["responseMimeType"] = "application/json"
    elif fmt.get("type") == "json_schema":
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            config["responseSchema"] = schema_to_wire(schema)


def to_wire(req: ChatRequest) -> dict[str, Any]:
    """ChatRequest -> a generateContent body; only what the client set, no invented defaults."""
    body: dict[str, Any] = {"contents": _contents(req.messages)}
    system = [{"text": m.text} for m in req.messages if m.role == "system" and m.text]
    if system:
        body["systemInstruction"] = {"parts": system}
    if req.tools:
        declarations = []
        for t in req.tools:
            decl: dict[str, Any] = {"name": t.name}
            if t.description:
                decl["description"] = t.description
            params = schema_to_wire(t.parameters)
            if params.get("properties"):  # an OBJECT with no properties is rejected: omit it
                decl["parameters"] = params
            declarations.append(decl)
        body["tools"] = [{"functionDeclarations": declarations}]
    choice = req.tool_choice
    if choice is not None and req.tools:
        if isinstance(choice, dict):
            body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY",
                                                            "allowedFunctionNames": [choice.get("name", "")]}}
        elif choice in CHOICE_OUT:
            body["toolConfig"] = {"functionCallingConfig": {"mode": CHOICE_OUT[choice]}}
    config: dict[str, Any] = {}
    for key, value in (("temperature", req.temperature), ("topP", req.top_p),
                       ("maxOutputTokens", req.max_tokens), ("stopSequences", req.stop), ("seed", req.seed)):
        if value is not None:
            config[key] = value
    _response_format(req.response_format, config)
    thinking = req.thinking or {}
    if thinking.get("type") == "enabled":
        config["thinkingConfig"] = {"includeThoughts": True,
                                    **({"thinkingBudget": thinking["budget_tokens"]}
                                       if thinking.get("budget_tokens") else {})}
    elif thinking.get("type") == "disabled":
        config["thinkingConfig"] = {"thinkingBudget": 0}
    elif req.reasoning_effort in EFFORT_BUDGET:
        config["thinkingConfig"] = {"thinkingBudget": EFFORT_BUDGET[req.reasoning_effort]}
    if config:
        body["generationConfig"] = config
    return body


# ---- Gemini wire -> canonical ----------------------------------------------------------------------

def usage_from(meta: dict[str, Any] | None) -> Usage | None:
    """`promptTokenCount` includes cached tokens; thinking tokens are billed as output."""
    if not isinstance(meta, dict) or not meta:
        return None
    return Usage(
        input_tokens=int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0),
        output_tokens=int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0),
        cached_tokens=int(meta.get("cachedContentTokenCount") or 0),
    )


def call_id(response_id: str, index: int, call: dict[str, Any], signature: str | None) -> str:
    """Gemini's own id when it sent one, else a stable one from the response id and position."""
    base = call.get("id") or "call_" + hashlib.sha256(
        f"{response_id}:{index}:{call.get('name', '')}".encode()).hexdigest()[:24]
    return f"{base}{SIGNATURE_SEP}{signature}" if signature else base


def _json(args: Any) -> str:
    return orjson.dumps(args or {}).decode()


def _finish(candidate: dict[str, Any], has_calls: bool) -> FinishReason:
    reason = FINISH_IN.get(candidate.get("finishReason") or "STOP", "stop")
    return "tool_calls" if has_calls and reason == "stop" else reason


def from_wire(body: dict[str, Any], model: str) -> ChatResponse:
    response_id = body.get("responseId") or uuid.uuid4().hex
    candidates = body.get("candidates") or []
    resp = ChatResponse(id=response_id, model=body.get("modelVersion") or model,
                        usage=usage_from(body.get("usageMetadata")) or Usage())
    if not candidates:  # the prompt itself was blocked (promptFeedback.blockReason)
        resp.finish_reason = "content_filter"
        return resp
    candidate = candidates[0]
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "functionCall" in part:
            call = part["functionCall"] or {}
            cid = call_id(response_id, len(resp.tool_calls), call, part.get("thoughtSignature"))
            resp.tool_calls.append(ToolCall(cid, call.get("name", ""), _json(call.get("args"))))
        elif isinstance(part.get("text"), str):
            resp.content.append(Part("thinking" if part.get("thought") else "text", text=part["text"]))
    resp.finish_reason = _finish(candidate, bool(resp.tool_calls))
    return resp


def decode_stream(chunks: Iterator[bytes], model: str) -> EventStream:
    """streamGenerateContent?alt=sse -> canonical events. No chunk with a finishReason: an error."""
    started = finished = False
    calls = 0
    response_id = ""
    for event in sse.events(chunks):
        data = sse.data_of(event)
        if data is None:
            continue
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        if isinstance(obj.get("error"), dict):
            yield StreamEvent("error", error=errors.stream_failed())
            return
        if not started:
            started = True
            response_id = obj.get("responseId") or uuid.uuid4().hex
            yield StreamEvent("start", id=response_id, model=obj.get("modelVersion") or model)
        candidates = obj.get("candidates") or []
        candidate = candidates[0] if candidates else {}
        for part in (candidate.get("content") or {}).get("parts") or []:
            if "functionCall" in part:
                call = part["functionCall"] or {}
                yield StreamEvent("tool_call", index=calls, name=call.get("name", ""),
                                  id=call_id(response_id, calls, call, part.get("thoughtSignature")))
                yield StreamEvent("tool_args", index=calls, text=_json(call.get("args")))
                calls += 1
            elif isinstance(part.get("text"), str) and part["text"]:
                yield StreamEvent("thinking" if part.get("thought") else "text", text=part["text"])
        blocked = not candidates and (obj.get("promptFeedback") or {}).get("blockReason")
        if (candidate.get("finishReason") or blocked) and not finished:
            finished = True
            reason = "content_filter" if blocked else _finish(candidate, calls > 0)
            yield StreamEvent("finish", finish_reason=reason)
        usage = usage_from(obj.get("usageMetadata"))
        if usage is not None:
            yield StreamEvent("usage", usage=usage)
    yield StreamEvent("end") if finished else _truncated()


def _truncated() -> StreamEvent:
    return StreamEvent("error", error=StreamTruncated())


# ---- HTTP ------------------------------------------------------------------------------------------

def headers_for(route: RouteInfo) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if route.provider.api_key:
        h["x-goog-api-key"] = route.provider.api_key
    return h


def url_for(route: RouteInfo, method: str) -> str:
    """`{base}/v1beta/models/{model}:{method}`; a base already ending in a version is kept as is."""
    base = route.provider.base_url.rstrip("/")
    if not VERSIONED.search(base):
        base += "/v1beta"
    return f"{base}/{resource(route)}:{method}"


def resource(route: RouteInfo) -> str:
    """The model's resource name: `models/<id>`, or the upstream model as given when it has a path."""
    return route.upstream_model if "/" in route.upstream_model else f"models/{route.upstream_model}"


def post(route: RouteInfo, url: str, payload: bytes, *, stream: bool = False,
         deadline: float | None = None) -> http.Response:
    resp = http.post(route.provider.base_url, url, payload, headers_for(route), stream=stream, deadline=deadline)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    return resp


def chat(req: ChatRequest, route: RouteInfo, call: Call) -> ChatResponse:
    """Translated call: canonical request in, canonical response out."""
    resp = post(route, url_for(route, "generateContent"), orjson.dumps(to_wire(req)), deadline=call.deadline)
    model = route.upstream_model
    return http.parse(resp.content, lambda body: from_wire(body, model))


def chat_stream(req: ChatRequest, route: RouteInfo, call: Call) -> EventStream:
    """Translated stream: the request is made now (errors raise here), events are parsed lazily."""
    resp = post(route, url_for(route, "streamGenerateContent") + "?alt=sse", orjson.dumps(to_wire(req)),
                stream=True, deadline=call.deadline)
    model = route.upstream_model
    return http.events(resp, lambda chunks: decode_stream(chunks, model))


# ---- embeddings (the optional adapter seam behind POST /v1/embeddings) ------------------------------

def _texts(body: dict[str, Any]) -> list[str]:
    texts = openai_embeddings.texts(body)
    if not texts:
        raise cannot_serve("This model takes 'input' as a string or an array of strings, not token ids.")
    return texts


def embeddings(call: Call, route: RouteInfo) -> tuple[dict[str, Any], Usage]:
    """An OpenAI embeddings request -> batchEmbedContents -> an OpenAI-shaped list and its usage.

    Gemini reports no token counts for embeddings: usage is counted offline (marked estimated).
    """
    body = call.body
    texts = _texts(body)
    model_name = resource(route)
    requests_: list[dict[str, Any]] = []
    for text in texts:
        item: dict[str, Any] = {"model": model_name, "content": {"parts": [{"text": text}]}}
        if isinstance(body.get("dimensions"), int):
            item["outputDimensionality"] = body["dimensions"]
        requests_.append(item)
    payload = orjson.dumps({"requests": requests_})
    resp = post(route, url_for(route, "batchEmbedContents"), payload, deadline=call.deadline)
    vectors = http.parse(resp.content, lambda out: [e["values"] for e in out["embeddings"]])
    if len(vectors) != len(texts):
        raise InvalidUpstreamResponse()
    usage = Usage(input_tokens=sum(tokens.count(t) for t in texts), estimated=True)
    return openai_embeddings.response(vectors, body.get("model", ""), usage, body.get("encoding_format")), usage


# ---- errors ----------------------------------------------------------------------------------------

def scrub(message: str, route: RouteInfo) -> str:
    return GOOGLE_KEY.sub("***", openai_scrub(message, route))


def _retry_delay(details: list[Any]) -> float | None:
    """google.rpc.RetryInfo's `retryDelay` ("33s"), when the 429 carries one."""
    for d in details:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("RetryInfo"):
            try:
                return float(str(d.get("retryDelay", "")).rstrip("s"))
            except ValueError:
                return None
    return None


def error_from(resp: http.Response, route: RouteInfo) -> UpstreamError:
    """Google's `{"error": {code, message, status, details}}` onto the catalogue; the body never leaks."""
    try:
        err = http.parse(resp.content, lambda body: body.get("error"))
    except UpstreamError:
        err = None
    finally:
        resp.close()
    err = err if isinstance(err, dict) else {}
    details = err.get("details") if isinstance(err.get("details"), list) else []
    reasons = {d.get("reason") for d in details if isinstance(d, dict)}
    upstream = resp.status_code
    # A bad or missing key of ours comes back as 400 API_KEY_INVALID: not the client's fault.
    if "API_KEY_INVALID" in reasons or err.get("status") in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        upstream = 401 if upstream == 400 else upstream
    message = err.get("message")
    return errors.from_upstream_status(upstream, scrub(message, route) if isinstance(message, str) and message
                                       else None, retry_after=_retry_delay(details))
