"""Bedrock-kind adapter: Amazon Bedrock's Converse / ConverseStream API, always translated.

Config: `base_url` is the runtime endpoint, e.g. `https://bedrock-runtime.us-east-1.amazonaws.com`.
The signing region is read from the host; append `?region=eu-west-1` to the base_url to override it
(VPC endpoints, proxies). Credentials live in the provider's `api_key`:

  ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]   each request is SigV4-signed (service "bedrock")
  <Bedrock API key> (no colon)                      sent as `Authorization: Bearer <key>`

Streams come back in AWS's binary event-stream framing and are decoded frame by frame as bytes
arrive (botocore's EventStreamBuffer), never buffered whole.

botocore (about 8 MB resident) is imported by `preload()`, which start-up calls only when a
Bedrock provider is configured, so a gateway without one never holds it and a gateway with one
does not import it on its first request.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

import orjson

from gateway import errors, tokens
from gateway.errors import InvalidRequest, MalformedStream, StreamTruncated, UpstreamError, cannot_serve
from gateway.providers import http
from gateway.providers.base import Call
from gateway.providers.openai import scrub as openai_scrub
from gateway.routing.routes import RouteInfo
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

if TYPE_CHECKING:
    from botocore.credentials import Credentials

kind = "bedrock"
native: frozenset[str] = frozenset()  # no client speaks Converse: always translated

SERVICE = "bedrock"
DEFAULT_REGION = "us-east-1"
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b")

FINISH_IN: dict[str, FinishReason] = {
    "end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls", "max_tokens": "length",
    "model_context_window_exceeded": "length", "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                 "image/webp": "webp"}
# Bedrock error type (x-amzn-ErrorType / :exception-type) -> the HTTP status AWS documents for it.
# Quota and readiness errors are rate limits in all but name; a model-side failure may pass on another route.
ERROR_STATUS = {
    "validationexception": 400, "accessdeniedexception": 403, "unrecognizedclientexception": 403,
    "invalidsignatureexception": 403, "expiredtokenexception": 403, "resourcenotfoundexception": 404,
    "modeltimeoutexception": 408, "throttlingexception": 429, "modelnotreadyexception": 429,
    "servicequotaexceededexception": 429, "modelerrorexception": 500, "modelstreamerrorexception": 500,
    "internalserverexception": 500, "serviceunavailableexception": 503,
}


# ---- canonical -> Converse wire ---------------------------------------------------------------------

def _cache_point(p: Part | Any) -> list[dict[str, Any]]:
    return [{"cachePoint": {"type": "default"}}] if getattr(p, "cache_control", None) else []


def _media(p: Part) -> dict[str, Any]:
    if p.type == "document":
        if not p.data:
            raise cannot_serve("This model accepts documents only as inline base64 data.")
        fmt = (p.media_type or "application/pdf").rsplit("/", 1)[-1]
        return {"document": {"format": fmt, "name": "document", "source": {"bytes": p.data}}}
    if p.url and p.url.startswith("s3://"):
        fmt = IMAGE_FORMATS.get(p.media_type or "", p.url.rsplit(".", 1)[-1].lower().replace("jpg", "jpeg"))
        return {"image": {"format": fmt, "source": {"s3Location": {"uri": p.url}}}}
    if not p.data:
        raise cannot_serve("Images for this model must be base64 data: URLs or s3:// URIs, not web URLs.")
    fmt = IMAGE_FORMATS.get((p.media_type or "image/png").lower())
    if fmt is None:
        raise cannot_serve(f"Unsupported image type '{p.media_type}' (png, jpeg, gif, webp).")
    return {"image": {"format": fmt, "source": {"bytes": p.data}}}


def _input(arguments: str) -> Any:
    try:
        return orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest("Tool call arguments must be valid JSON to be sent to this model.") from None


def _blocks(m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [{"toolResult": {"toolUseId": m.tool_call_id or "", "content": [{"text": m.text or " "}],
                                "status": "error" if m.is_error else "success"}}]
    blocks: list[dict[str, Any]] = []
    for p in m.content:
        if p.type == "text" and p.text:  # Converse rejects blank text blocks
            blocks.append({"text": p.text})
        elif p.type == "thinking" and m.role == "assistant" and p.text:
            text: dict[str, Any] = {"text": p.text}
            if p.signature:
                text["signature"] = p.signature
            blocks.append({"reasoningContent": {"reasoningText": text}})
        elif p.type == "redacted_thinking" and m.role == "assistant" and p.data:
            blocks.append({"reasoningContent": {"redactedContent": p.data}})
        elif p.type in ("image", "document"):
            blocks.append(_media(p))
        else:
            continue
        blocks += _cache_point(p)
    if m.role == "assistant":
        blocks += [{"toolUse": {"toolUseId": c.id, "name": c.name, "input": _input(c.arguments)}}
                   for c in m.tool_calls]
    return blocks


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Converse needs user/assistant turns strictly alternating: tool results become user content,
    and consecutive turns of one role are merged."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"] += blocks
        else:
            out.append({"role": role, "content": blocks})
    return out


def to_wire(req: ChatRequest) -> dict[str, Any]:
    """ChatRequest -> a Converse body; only what the client set, no invented defaults."""
    body: dict[str, Any] = {"messages": _messages(req.messages)}
    system: list[dict[str, Any]] = []
    for m in req.messages:
        if m.role == "system":
            for p in m.content:
                if p.type == "text" and p.text:
                    system += [{"text": p.text}, *_cache_point(p)]
    if system:
        body["system"] = system
    inference = {k: v for k, v in (("maxTokens", req.max_tokens), ("temperature", req.temperature),
                                   ("topP", req.top_p), ("stopSequences", req.stop)) if v is not None}
    if inference:
        body["inferenceConfig"] = inference
    if req.tools:
        tools: list[dict[str, Any]] = []
        for t in req.tools:
            spec: dict[str, Any] = {"name": t.name, "inputSchema": {"json": t.parameters}}
            if t.description:
                spec["description"] = t.description
            tools += [{"toolSpec": spec}, *_cache_point(t)]
        config: dict[str, Any] = {"tools": tools}
        choice = req.tool_choice
        # Converse has no "none": the tools stay declared (history may hold tool blocks), choice unset.
        if isinstance(choice, dict):
            config["toolChoice"] = {"tool": {"name": choice.get("name", "")}}
        elif choice == "required":
            config["toolChoice"] = {"any": {}}
        elif choice == "auto":
            config["toolChoice"] = {"auto": {}}
        body["toolConfig"] = config
    if req.thinking:
        body["additionalModelRequestFields"] = {"thinking": req.thinking}
    return body


# ---- Converse wire -> canonical ---------------------------------------------------------------------

def usage_from(obj: dict[str, Any] | None) -> Usage | None:
    """Bedrock's `inputTokens` excludes cache reads and writes; canonical input includes both."""
    if not isinstance(obj, dict) or not obj:
        return None
    read = int(obj.get("cacheReadInputTokens") or 0)
    write = int(obj.get("cacheWriteInputTokens") or 0)
    return Usage(input_tokens=int(obj.get("inputTokens") or 0) + read + write,
                 output_tokens=int(obj.get("outputTokens") or 0), cached_tokens=read,
                 cache_write_tokens=write)


def from_wire(body: dict[str, Any], model: str, request_id: str) -> ChatResponse:
    message = (body.get("output") or {}).get("message") or {}
    resp = ChatResponse(id=request_id, model=model, usage=usage_from(body.get("usage")) or Usage(),
                        finish_reason=FINISH_IN.get(body.get("stopReason") or "end_turn", "stop"))
    for block in message.get("content") or []:
        if "text" in block:
            resp.content.append(Part("text", text=block["text"]))
        elif "toolUse" in block:
            use = block["toolUse"]
            resp.tool_calls.append(ToolCall(use.get("toolUseId", ""), use.get("name", ""),
                                            orjson.dumps(use.get("input", {})).decode()))
        elif "reasoningContent" in block:
            reasoning = block["reasoningContent"]
            if "reasoningText" in reasoning:
                text = reasoning["reasoningText"]
                resp.content.append(Part("thinking", text=text.get("text", ""),
                                         signature=text.get("signature")))
            elif "redactedContent" in reasoning:
                resp.content.append(Part("redacted_thinking", data=reasoning["redactedContent"]))
    return resp


def _truncated() -> StreamEvent:
    return StreamEvent("error", error=StreamTruncated())


def preload() -> None:
    """Import botocore's signing and event-stream parts now, not on a request."""
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    import botocore.eventstream  # noqa: F401


def decode_stream(chunks: Iterator[bytes], model: str, request_id: str) -> EventStream:
    """ConverseStream event-stream bytes -> canonical events, frame by frame as they arrive.

    An exception frame becomes an error event; a stream without `messageStop` ends in one too.
    """
    from botocore.eventstream import EventStreamBuffer, ParserError

    buffer = EventStreamBuffer()
    started = finished = False
    tools: dict[int, int] = {}  # contentBlockIndex -> canonical tool call index
    pending = 0  # bytes received but not yet part of a whole frame
    try:
        for chunk in chunks:
            buffer.add_data(chunk)
            pending += len(chunk)
            for frame in buffer:
                pending -= frame.prelude.total_length
                headers = frame.headers
                if headers.get(":message-type") != "event":
                    etype = headers.get(":exception-type") or headers.get(":error-code") or ""
                    yield StreamEvent("error", error=stream_error(str(etype)))
                    return
                name = headers.get(":event-type")
                payload = orjson.loads(frame.payload) if frame.payload else {}
                if not started:
                    started = True
                    yield StreamEvent("start", id=request_id, model=model)
                if name == "contentBlockStart":
                    use = (payload.get("start") or {}).get("toolUse")
                    if use:
                        tools[payload.get("contentBlockIndex", 0)] = index = len(tools)
                        yield StreamEvent("tool_call", index=index, id=use.get("toolUseId", ""),
                                          name=use.get("name", ""))
                elif name == "contentBlockDelta":
                    yield from _delta(payload, tools)
                elif name == "messageStop":
                    finished = True
                    reason = FINISH_IN.get(payload.get("stopReason") or "", "stop")
                    yield StreamEvent("finish", finish_reason=reason)
                elif name == "metadata":
                    usage = usage_from(payload.get("usage"))
                    if usage is not None:
                        yield StreamEvent("usage", usage=usage)
    except (ParserError, orjson.JSONDecodeError):
        yield StreamEvent("error", error=MalformedStream())
        return
    yield StreamEvent("end") if finished and not pending else _truncated()


def _delta(payload: dict[str, Any], tools: dict[int, int]) -> Iterator[StreamEvent]:
    delta = payload.get("delta") or {}
    if "text" in delta:
        if delta["text"]:
            yield StreamEvent("text", text=delta["text"])
    elif "toolUse" in delta:
        index = tools.get(payload.get("contentBlockIndex", 0), 0)
        fragment = (delta["toolUse"] or {}).get("input") or ""
        if fragment:
            yield StreamEvent("tool_args", index=index, text=fragment)
    elif "reasoningContent" in delta:
        reasoning = delta["reasoningContent"] or {}
        if reasoning.get("text"):
            yield StreamEvent("thinking", text=reasoning["text"])
        if reasoning.get("signature"):
            yield StreamEvent("thinking", text="", signature=reasoning["signature"])


# ---- HTTP: endpoint, credentials, signing --------------------------------------------------------

def endpoint(base_url: str) -> tuple[str, str]:
    """(base URL without the query, signing region): `?region=` wins, else the host's region label."""
    parts = urlsplit(base_url)
    override = parse_qs(parts.query).get("region")
    region = override[0] if override else next(
        (label for label in (parts.hostname or "").split(".") if REGION.match(label)), DEFAULT_REGION)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}", region


def credentials(api_key: str | None) -> Credentials | None:
    """`AKID:SECRET[:TOKEN]` -> SigV4 credentials; a key without a colon is a Bedrock API key (None)."""
    if not api_key or ":" not in api_key:
        return None
    from botocore.credentials import Credentials

    access, secret, *token = api_key.split(":", 2)
    return Credentials(access, secret, token[0] if token else None)


def signed_headers(route: RouteInfo, url: str, payload: bytes, region: str) -> dict[str, str]:
    """Headers for one request: SigV4 over the exact bytes sent, or the Bedrock API key as a bearer."""
    headers = {"Content-Type": "application/json"}
    creds = credentials(route.provider.api_key)
    if creds is None:
        if route.provider.api_key:
            headers["Authorization"] = f"Bearer {route.provider.api_key}"
        return headers
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method="POST", url=url, data=payload, headers=headers)
    SigV4Auth(creds, SERVICE, region).add_auth(request)
    return dict(request.headers.items())


def post(route: RouteInfo, action: str, payload: bytes, *, stream: bool = False,
         deadline: float | None = None) -> http.Response:
    base, region = endpoint(route.provider.base_url)
    url = f"{base}/model/{quote(route.upstream_model, safe='')}/{action}"
    resp = http.post(route.provider.base_url, url, payload, signed_headers(route, url, payload, region),
                     stream=stream, deadline=deadline)
    if resp.status_code >= 400:
        raise error_from(resp, route)
    return resp


def _request_id(resp: http.Response) -> str:
    return resp.headers.get("x-amzn-requestid") or uuid.uuid4().hex


def chat(req: ChatRequest, route: RouteInfo, call: Call) -> ChatResponse:
    """Translated call: canonical request in, canonical response out."""
    resp = post(route, "converse", orjson.dumps(to_wire(req)), deadline=call.deadline)
    model, request_id = route.upstream_model, _request_id(resp)
    return http.parse(resp.content, lambda body: from_wire(body, model, request_id))


def chat_stream(req: ChatRequest, route: RouteInfo, call: Call) -> EventStream:
    """Translated stream: the request is made now (errors raise here), frames are decoded lazily."""
    resp = post(route, "converse-stream", orjson.dumps(to_wire(req)), stream=True, deadline=call.deadline)
    model, request_id = route.upstream_model, _request_id(resp)
    return http.events(resp, lambda chunks: decode_stream(chunks, model, request_id))


# ---- embeddings (the optional adapter seam behind POST /v1/embeddings) ------------------------------

def embeddings(call: Call, route: RouteInfo) -> tuple[dict[str, Any], Usage]:
    """An OpenAI embeddings request -> one Titan InvokeModel call per input -> an OpenAI-shaped list.

    Titan embeds one text per call; usage is the sum of the `inputTextTokenCount`s it reports.
    """
    body = call.body
    texts = openai_embeddings.texts(body)
    if not texts:
        raise cannot_serve("This model takes 'input' as a string or an array of strings, not token ids.")
    vectors, used = [], 0
    for text in texts:
        item: dict[str, Any] = {"inputText": text}
        if isinstance(body.get("dimensions"), int):
            item["dimensions"] = body["dimensions"]
        resp = post(route, "invoke", orjson.dumps(item), deadline=call.deadline)
        out = http.parse(resp.content, _embedded)
        vectors.append(list(out["embedding"]))
        used += int(out.get("inputTextTokenCount") or tokens.count(text))
    usage = Usage(input_tokens=used)
    return openai_embeddings.response(vectors, body.get("model", ""), usage, body.get("encoding_format")), usage


def _embedded(obj: Any) -> dict[str, Any]:
    if not isinstance(obj["embedding"], list):
        raise TypeError
    return obj


# ---- errors ----------------------------------------------------------------------------------------

def scrub(message: str, route: RouteInfo) -> str:
    message = openai_scrub(message, route)
    creds = credentials(route.provider.api_key)
    if creds is not None:
        for secret in (creds.access_key, creds.secret_key, creds.token):
            if secret:
                message = message.replace(secret, "***")
    return AWS_KEY_ID.sub("***", message)


def error_type(value: str | None) -> str:
    """`ThrottlingException:http://internal.amazon.com/coral/...` -> `throttlingexception`."""
    return (value or "").split(":", 1)[0].strip().lower()


def stream_error(etype: str) -> UpstreamError:
    """An exception frame inside a stream: throttling keeps its 429, anything else is a 502."""
    if ERROR_STATUS.get(error_type(etype)) == 429:
        return UpstreamError("The upstream provider is rate limiting requests; retry later.", status=429,
                             retryable=False, type="rate_limit_error", anthropic_type="rate_limit_error",
                             code="rate_limit_exceeded")
    return errors.stream_failed()


def error_from(resp: http.Response, route: RouteInfo) -> UpstreamError:
    """Bedrock's `{"message"}` + `x-amzn-ErrorType` onto the catalogue; the raw body never leaks."""
    try:
        message = http.parse(resp.content, lambda body: body.get("message") or body.get("Message"))
    except UpstreamError:
        message = None
    finally:
        resp.close()
    upstream = ERROR_STATUS.get(error_type(resp.headers.get("x-amzn-errortype")), resp.status_code)
    return errors.from_upstream_status(upstream, scrub(message, route) if isinstance(message, str) and message
                                       else None)
