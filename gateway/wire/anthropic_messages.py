"""Anthropic Messages dialect: request checks, usage extraction, stream observation, translation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, NoReturn

import orjson

from gateway import tokens
from gateway.errors import GatewayError, InvalidRequest, MalformedStream, StreamTruncated, UpstreamError, as_anthropic
from gateway.scrub import scrub_bytes
from gateway.wire import sse
from gateway.wire.canonical import (
    ChatRequest,
    ChatResponse,
    EventStream,
    Message,
    Part,
    StreamEvent,
    Tool,
    ToolCall,
    Usage,
)

DEFAULT_VERSION = "2023-06-01"


def check_request(body: Any, *, counting: bool = False) -> None:
    """Reject what Anthropic would reject with a 400 naming the field; pass everything else through.

    A missing `max_tokens` is accepted: the gateway fills it (Anthropic requires it upstream).
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        _invalid("model", "Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        _invalid("messages", "must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            _invalid(f"messages.{i}.role", "Input should be 'user' or 'assistant'")
        if not isinstance(m.get("content"), str | list):
            _invalid(f"messages.{i}.content", "Field required")
    if body.get("system") is not None and not isinstance(body["system"], str | list):
        _invalid("system", "Input should be a string or a list of text blocks")
    if body.get("tools") is not None and not isinstance(body["tools"], list):
        _invalid("tools", "Input should be a valid list")
    choice = body.get("tool_choice")
    if choice is not None and (not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none")):
        _invalid("tool_choice", "Input should be an object with type 'auto', 'any', 'tool' or 'none'")
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        _invalid("metadata", "Input should be a valid dictionary")
    if counting:
        return
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        _invalid("max_tokens", "Input should be an integer greater than or equal to 1")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        _invalid("stream", "Input should be a valid boolean")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (type(value) not in (int, float) or not 0 <= value <= 1):
            _invalid(name, "Input should be a number between 0 and 1")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(x, str) for x in stops)):
        _invalid("stop_sequences", "Input should be a list of strings")


def _invalid(field: str, problem: str) -> NoReturn:
    raise InvalidRequest(f"{field}: {problem}", param=field)


def check_count_request(body: Any) -> None:
    """POST /v1/messages/count_tokens takes the same body without max_tokens or stream."""
    check_request(body, counting=True)
    if "stream" in body:
        raise InvalidRequest("stream: Extra inputs are not permitted", param="stream")


def usage_from(obj: dict | None) -> Usage | None:
    """Anthropic `usage` -> Usage. Anthropic's input_tokens exclude cache reads and writes; ours
    include them."""
    if not obj:
        return None
    read = int(obj.get("cache_read_input_tokens") or 0)
    write = int(obj.get("cache_creation_input_tokens") or 0)
    return Usage(input_tokens=int(obj.get("input_tokens") or 0) + read + write,
                 output_tokens=int(obj.get("output_tokens") or 0), cached_tokens=read,
                 cache_write_tokens=write)


def usage_out(u: Usage) -> dict[str, int]:
    return {"input_tokens": max(u.input_tokens - u.cached_tokens - u.cache_write_tokens, 0),
            "cache_creation_input_tokens": u.cache_write_tokens, "cache_read_input_tokens": u.cached_tokens,
            "output_tokens": u.output_tokens}


class StreamObserver:
    """Watches an Anthropic SSE stream as it is relayed: usage, `message_stop`, `error` events.

    Bytes are forwarded unchanged by the caller; only the few events that carry usage are parsed.
    """

    __slots__ = ("splitter", "usage", "done", "upstream_error", "deltas")

    def __init__(self) -> None:
        self.splitter = sse.EventSplitter()
        self.usage = Usage()
        self.done = False
        self.upstream_error: dict | None = None
        self.deltas = 0  # content_block_delta events: about one output token each, for estimates

    def feed(self, chunk: bytes) -> bytes:
        before = self.upstream_error
        for event in self.splitter.feed(chunk):
            self._observe(event)
        if self.upstream_error is not before:  # an error event's message may echo our provider key
            return scrub_bytes(chunk)
        return chunk

    def _observe(self, event: bytes) -> None:
        name = sse.name_of(event)
        if name == b"content_block_delta":
            self.deltas += 1
        elif name == b"message_stop":
            self.done = True
        elif name in (b"message_start", b"message_delta", b"error"):
            try:
                obj = orjson.loads(sse.data_of(event) or b"")
            except orjson.JSONDecodeError:
                return
            if not isinstance(obj, dict):
                return
            if name == b"error":
                self.upstream_error = obj.get("error") if isinstance(obj.get("error"), dict) else {}
                return
            usage = (obj.get("message") or {}).get("usage") if name == b"message_start" else obj.get("usage")
            self.usage.merge(usage_from(usage))


def error_event(e: GatewayError) -> bytes:
    """How an error mid-stream reaches an Anthropic client: `event: error` with the error object."""
    return sse.encode(as_anthropic(e), event="error")


def upstream_error_message(body: bytes) -> tuple[str | None, str | None]:
    """(message, type) from an Anthropic-shaped error body, if it is one."""
    try:
        err = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None, None
    if isinstance(err, dict):
        return err.get("message"), err.get("type")
    return None, None


def count_tokens(body: dict[str, Any]) -> dict[str, int]:
    """A local estimate for POST /v1/messages/count_tokens when the provider has no such endpoint."""
    req = decode_request(body)
    total = 3 + tokens.count(req.system_text)
    for m in req.messages:
        if m.role == "system":
            continue
        total += 3 + tokens.count("".join(p.text or "" for p in m.content))
        for c in m.tool_calls:
            total += tokens.count(c.name) + tokens.count(c.arguments)
    for t in req.tools:
        total += tokens.count(t.name) + tokens.count(t.description or "") + tokens.count(
            orjson.dumps(t.parameters).decode())
    return {"input_tokens": total}


# ---- translation: Anthropic messages <-> canonical ---------------------------------------------

FINISH_IN = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
             "refusal": "content_filter", "pause_turn": "stop", "model_context_window_exceeded": "length"}
FINISH_OUT = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
              "content_filter": "refusal", "error": "end_turn"}


def _source_part(kind: str, block: dict[str, Any]) -> Part:
    src = block.get("source") or {}
    if src.get("type") == "url":
        return Part(kind, url=src.get("url"))
    if src.get("type") == "text":  # a plain-text document
        return Part(kind, text=src.get("data", ""), media_type=src.get("media_type") or "text/plain")
    return Part(kind, media_type=src.get("media_type"), data=src.get("data"))


def _parts(content: Any) -> list[Part]:
    if isinstance(content, str):
        return [Part("text", text=content)] if content else []
    parts: list[Part] = []
    for b in content if isinstance(content, list) else ():
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text":
            parts.append(Part("text", text=b.get("text", ""), cache_control=b.get("cache_control")))
        elif kind in ("image", "document"):
            part = _source_part(kind, b)
            part.cache_control = b.get("cache_control")
            parts.append(part)
        elif kind == "thinking":
            parts.append(Part("thinking", text=b.get("thinking", ""), signature=b.get("signature")))
        elif kind == "redacted_thinking":
            parts.append(Part("redacted_thinking", data=b.get("data")))
    return parts


def _tool_call(block: dict[str, Any]) -> ToolCall:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return ToolCall(block.get("id", ""), block.get("name", ""), arguments)


def decode_request(body: dict[str, Any]) -> ChatRequest:
    messages: list[Message] = []
    system = body.get("system")
    if system:
        messages.append(Message("system", _parts(system)))
    for m in body.get("messages") or []:
        content = m.get("content")
        blocks = content if isinstance(content, list) else []
        if m.get("role") == "assistant":
            calls = [_tool_call(b) for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
            messages.append(Message("assistant", _parts(content), tool_calls=calls))
            continue
        # A user turn may carry tool results (first, as Anthropic requires) and then more content.
        for b in blocks:
            if isinstance(b, dict) and b.get("type") == "tool_result":
                messages.append(Message("tool", _parts(b.get("content")), tool_call_id=b.get("tool_use_id"),
                                        is_error=bool(b.get("is_error"))))
        rest = _parts(content)
        if rest or not blocks:
            messages.append(Message("user", rest))
    # server tools (web search, code execution ...) have no input_schema and no canonical form
    tools = [Tool(t["name"], t.get("description"), t["input_schema"] or {"type": "object", "properties": {}},
                  cache_control=t.get("cache_control"))
             for t in body.get("tools") or []
             if isinstance(t, dict) and t.get("name") and "input_schema" in t]
    choice = body.get("tool_choice") or {}
    kind = choice.get("type")
    tool_choice = ({"name": choice.get("name", "")} if kind == "tool"
                   else {"auto": "auto", "any": "required", "none": "none"}.get(kind or ""))
    metadata = body.get("metadata") or {}
    return ChatRequest(
        model=body.get("model", ""),
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=False if choice.get("disable_parallel_tool_use") else None,
        max_tokens=body.get("max_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stop=body.get("stop_sequences"),
        stream=bool(body.get("stream")),
        user=metadata.get("user_id"),
        thinking=body.get("thinking"),
    )


def _block_out(p: Part) -> dict[str, Any] | None:
    if p.type == "text":
        block: dict[str, Any] = {"type": "text", "text": p.text or ""}
    elif p.type in ("image", "document"):
        if p.url:
            src = {"type": "url", "url": p.url}
        elif p.type == "document" and p.text is not None:
            src = {"type": "text", "media_type": p.media_type or "text/plain", "data": p.text}
        else:
            src = {"type": "base64", "media_type": p.media_type or "image/png", "data": p.data or ""}
        block = {"type": p.type, "source": src}
    elif p.type == "thinking" and p.signature:  # unsigned reasoning (another provider's) cannot go back
        block = {"type": "thinking", "thinking": p.text or "", "signature": p.signature}
    elif p.type == "redacted_thinking" and p.data:
        block = {"type": "redacted_thinking", "data": p.data}
    else:
        return None
    if p.cache_control:
        block["cache_control"] = p.cache_control
    return block


def _blocks(parts: list[Part]) -> list[dict[str, Any]]:
    return [b for b in map(_block_out, parts) if b is not None and b != {"type": "text", "text": ""}]


def parse_arguments(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as Anthropic's `input` object; anything unparsable becomes {}."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def encode_request(req: ChatRequest, default_max_tokens: int) -> dict[str, Any]:
    """Canonical -> Anthropic body. Consecutive user-side turns (tool results included) merge into one."""
    system_parts = [p for m in req.messages if m.role == "system" for p in m.content if p.type == "text"]
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        elif blocks:
            messages.append({"role": role, "content": blocks})

    for m in req.messages:
        if m.role == "user":
            add("user", _blocks(m.content) or [{"type": "text", "text": m.text}])
        elif m.role == "tool":
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or ""}
            blocks = _blocks(m.content)
            if blocks and any(b["type"] != "text" for b in blocks):
                result["content"] = blocks
            else:
                result["content"] = m.text
            if m.is_error:
                result["is_error"] = True
            add("user", [result])
        elif m.role == "assistant":
            blocks = _blocks(m.content)
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": parse_arguments(c.arguments)}
                       for c in m.tool_calls]
            add("assistant", blocks)
    body: dict[str, Any] = {"model": req.model, "max_tokens": req.max_tokens or default_max_tokens,
                            "messages": messages}
    if system_parts:
        if any(p.cache_control for p in system_parts):
            body["system"] = [b for b in map(_block_out, system_parts) if b]
        else:
            body["system"] = "\n\n".join(p.text or "" for p in system_parts)
    if req.tools:
        body["tools"] = [{k: v for k, v in (("name", t.name), ("description", t.description),
                                            ("input_schema", t.parameters),
                                            ("cache_control", t.cache_control)) if v is not None}
                         for t in req.tools]
    choice: dict[str, Any] | None = None
    if isinstance(req.tool_choice, dict):
        choice = {"type": "tool", "name": req.tool_choice.get("name", "")}
    elif req.tool_choice in ("auto", "required", "none"):
        choice = {"type": {"auto": "auto", "required": "any", "none": "none"}[req.tool_choice]}
    if req.parallel_tool_calls is False and req.tools and (choice or {}).get("type") != "none":
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        body["tool_choice"] = choice
    if req.temperature is not None:
        body["temperature"] = min(req.temperature, 1.0)  # OpenAI allows up to 2; Anthropic rejects above 1
    for key, value in (("top_p", req.top_p), ("stop_sequences", req.stop), ("thinking", req.thinking)):
        if value is not None:
            body[key] = value
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.stream:
        body["stream"] = True
    return body  # response_format and seed have no Anthropic field: dropped


def decode_response(body: dict[str, Any]) -> ChatResponse:
    blocks = [b for b in body.get("content") or [] if isinstance(b, dict)]
    return ChatResponse(
        id=body.get("id", ""), model=body.get("model", ""), content=_parts(blocks),
        tool_calls=[_tool_call(b) for b in blocks if b.get("type") == "tool_use"],
        finish_reason=FINISH_IN.get(body.get("stop_reason") or "end_turn", "stop"),
        stop_sequence=body.get("stop_sequence"), usage=usage_from(body.get("usage")) or Usage(),
    )


def message_id(source_id: str) -> str:
    return source_id if source_id.startswith("msg_") else "msg_" + (source_id.removeprefix("chatcmpl-")
                                                                    or uuid.uuid4().hex)


def _stop_reason(finish: str | None, stop_sequence: str | None) -> str:
    return "stop_sequence" if stop_sequence else FINISH_OUT.get(finish or "stop", "end_turn")


def encode_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for p in resp.content:
        if p.type == "thinking":
            content.append({"type": "thinking", "thinking": p.text or "", "signature": p.signature or ""})
        elif p.type == "redacted_thinking":
            content.append({"type": "redacted_thinking", "data": p.data or ""})
        elif p.type == "text" and p.text:
            content.append({"type": "text", "text": p.text})
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": parse_arguments(c.arguments)}
                for c in resp.tool_calls]
    return {"id": message_id(resp.id), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": _stop_reason(resp.finish_reason, resp.stop_sequence),
            "stop_sequence": resp.stop_sequence, "usage": usage_out(resp.usage)}


def decode_stream(chunks: Iterator[bytes]) -> EventStream:
    """Upstream Anthropic SSE -> canonical events. A stream without `message_stop` ends in an error."""
    tool_index: dict[int, int] = {}  # Anthropic block index -> canonical tool call index
    for event in sse.events(chunks):
        data = sse.data_of(event)
        if data is None:
            continue
        obj = sse.json_object(data)
        if obj is None:  # not JSON, or not an object: nothing after it can be trusted
            yield StreamEvent("error", error=MalformedStream())
            return
        kind = obj.get("type")
        if kind == "message_start":
            message = obj.get("message") or {}
            yield StreamEvent("start", id=message.get("id", ""), model=message.get("model", ""))
            if (usage := usage_from(message.get("usage"))) is not None:
                yield StreamEvent("usage", usage=usage)
        elif kind == "content_block_start":
            block = obj.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = tool_index[obj.get("index", 0)] = len(tool_index)
                yield StreamEvent("tool_call", index=index, id=block.get("id", ""),
                                  name=block.get("name", ""))
            elif block.get("type") == "text" and block.get("text"):
                yield StreamEvent("text", text=block["text"])
            elif block.get("type") == "thinking" and block.get("thinking"):
                yield StreamEvent("thinking", text=block["thinking"],
                                  signature=block.get("signature") or None)
        elif kind == "content_block_delta":
            delta = obj.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                yield StreamEvent("text", text=delta.get("text", ""))
            elif dtype == "input_json_delta" and delta.get("partial_json"):
                yield StreamEvent("tool_args", index=tool_index.get(obj.get("index", 0), 0),
                                  text=delta["partial_json"])
            elif dtype == "thinking_delta":
                yield StreamEvent("thinking", text=delta.get("thinking", ""))
            elif dtype == "signature_delta":
                yield StreamEvent("thinking", text="", signature=delta.get("signature"))
        elif kind == "message_delta":
            delta = obj.get("delta") or {}
            if delta.get("stop_reason"):
                yield StreamEvent("finish", finish_reason=FINISH_IN.get(delta["stop_reason"], "stop"),
                                  stop_sequence=delta.get("stop_sequence"))
            if (usage := usage_from(obj.get("usage"))) is not None:
                yield StreamEvent("usage", usage=usage)
        elif kind == "message_stop":
            yield StreamEvent("end")
            return
        elif kind == "error":
            err = UpstreamError("The upstream provider reported an error during the stream.", retryable=False)
            yield StreamEvent("error", error=err)
            return
    yield StreamEvent("error", error=StreamTruncated())


def _event(name: str, data: dict[str, Any]) -> bytes:
    return sse.encode({"type": name, **data}, event=name)


def encode_stream(events: EventStream, model: str) -> Iterator[bytes]:
    """Canonical events -> Anthropic SSE, in Anthropic's order: message_start, ping, one
    start/delta.../stop group per content block (each tool call its own block), message_delta,
    message_stop."""
    usage = Usage()
    finish: str | None = None
    stop_sequence: str | None = None
    open_kind: str | None = None  # the kind of the open block ("text", "thinking", "tool:<n>")
    blocks = 0  # blocks started so far; the open one is blocks - 1
    tool_blocks: dict[int, int] = {}  # canonical tool call index -> block index

    def start(kind: str, block: dict[str, Any]) -> Iterator[bytes]:
        nonlocal open_kind, blocks
        yield from stop()
        open_kind, blocks = kind, blocks + 1
        yield _event("content_block_start", {"index": blocks - 1, "content_block": block})

    def stop() -> Iterator[bytes]:
        nonlocal open_kind
        if open_kind is not None:
            open_kind = None
            yield _event("content_block_stop", {"index": blocks - 1})

    def delta(index: int, body: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"index": index, "delta": body})

    for ev in events:
        kind = ev.kind
        if kind == "start":
            yield _event("message_start", {"message": {
                "id": message_id(ev.id or ""), "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0}}})
            yield _event("ping", {})
        elif kind == "text":
            if open_kind != "text":
                yield from start("text", {"type": "text", "text": ""})
            yield delta(blocks - 1, {"type": "text_delta", "text": ev.text or ""})
        elif kind == "thinking":
            if open_kind != "thinking":
                yield from start("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            if ev.text:
                yield delta(blocks - 1, {"type": "thinking_delta", "thinking": ev.text})
            if ev.signature:
                yield delta(blocks - 1, {"type": "signature_delta", "signature": ev.signature})
        elif kind == "tool_call":
            yield from start(f"tool:{ev.index}",
                             {"type": "tool_use", "id": ev.id or "", "name": ev.name or "", "input": {}})
            tool_blocks[ev.index] = blocks - 1
        elif kind == "tool_args" and ev.index in tool_blocks:
            yield delta(tool_blocks[ev.index], {"type": "input_json_delta", "partial_json": ev.text or ""})
        elif kind == "finish":
            finish, stop_sequence = ev.finish_reason, ev.stop_sequence
        elif kind == "usage" and ev.usage is not None:
            usage.merge(ev.usage)
        elif kind == "error":
            yield error_event(ev.error)
            return
        elif kind == "end":
            yield from stop()
            final = {"stop_reason": _stop_reason(finish, stop_sequence), "stop_sequence": stop_sequence}
            yield _event("message_delta", {"delta": final, "usage": usage_out(usage)})
            yield _event("message_stop", {})
            return


# ---- the dialect's face to dispatch (same signature in every client dialect module) -------------

def render(resp: ChatResponse, model: str, body: dict[str, Any]) -> dict[str, Any]:
    return encode_response(resp, model)


def render_stream(events: EventStream, model: str, body: dict[str, Any]) -> Iterator[bytes]:
    return encode_stream(events, model)
