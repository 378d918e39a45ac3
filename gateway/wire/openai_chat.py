"""OpenAI Chat Completions dialect: request checks, usage extraction, stream observation."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from gateway.errors import GatewayError, InvalidRequest, MalformedStream, StreamTruncated, UpstreamError, as_openai
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
    checked,
    usage_of,
)

MAX_N = 128
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def check_model(body: Any) -> None:
    """The opening every OpenAI endpoint's check shares: a JSON object that names a model."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")


def check_request(body: Any) -> None:
    """Reject what OpenAI would reject with a 400 naming the param; pass everything else through."""
    check_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise InvalidRequest(
                f"Invalid value for 'messages[{i}].role': expected one of {', '.join(sorted(ROLES))}.",
                param=f"messages[{i}].role",
            )
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(f"Invalid type for 'messages[{i}].content': expected a string or an array of "
                                 "content parts.", param=f"messages[{i}].content")
    _check_type(body, "stream", bool)
    _check_type(body, "n", int, minimum=1)
    if isinstance(body.get("n"), int) and body["n"] > MAX_N:  # OpenAI's bound: more is refused, not forwarded
        raise InvalidRequest(f"Invalid 'n': must be at most {MAX_N}.", param="n")
    _check_type(body, "max_tokens", int, minimum=1)
    _check_type(body, "max_completion_tokens", int, minimum=1)
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    if "stream_options" in body and body["stream_options"] is not None:
        if not isinstance(body["stream_options"], dict):
            raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
        if not body.get("stream"):
            raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                                 param="stream_options")
    if "tools" in body and body["tools"] is not None and not isinstance(body["tools"], list):
        raise InvalidRequest("'tools' must be an array.", param="tools")
    for i, t in enumerate(body.get("tools") or ()):
        if not isinstance(t, dict):
            raise InvalidRequest(f"Invalid type for 'tools[{i}]': expected an object.", param=f"tools[{i}]")
        if t.get("type", "function") == "function":
            _check_function(t.get("function"), f"tools[{i}].function")
    functions = body.get("functions")
    if functions is not None and not isinstance(functions, list):
        raise InvalidRequest("'functions' must be an array.", param="functions")
    for i, fn in enumerate(functions or ()):
        _check_function(fn, f"functions[{i}]")
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, str | dict):
        raise InvalidRequest("Invalid type for 'tool_choice': expected a string or an object.", param="tool_choice")
    for i, m in enumerate(messages):
        calls = m.get("tool_calls")
        if calls is None:
            continue
        if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("function"), dict)
                                                  for c in calls):
            raise InvalidRequest(f"Invalid 'messages[{i}].tool_calls': expected an array of tool call objects.",
                                 param=f"messages[{i}].tool_calls")


def _check_function(fn: Any, where: str) -> None:
    """A function tool as OpenAI takes it: an object with a name, and parameters as an object if given."""
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise InvalidRequest(f"Missing required parameter: '{where}.name'.", param=f"{where}.name")
    if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
        raise InvalidRequest(f"Invalid type for '{where}.parameters': expected an object.",
                             param=f"{where}.parameters")


def _check_type(body: dict, name: str, typ: type, minimum: int | None = None) -> None:
    if name not in body or body[name] is None:
        return
    value = body[name]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise InvalidRequest(f"Invalid type for '{name}': expected {typ.__name__}.", param=name)
    if minimum is not None and value < minimum:
        raise InvalidRequest(f"Invalid '{name}': must be at least {minimum}.", param=name)


def _check_number(body: dict, name: str, lo: float, hi: float) -> None:
    if name not in body or body[name] is None:
        return
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"Invalid type for '{name}': expected a number.", param=name)
    if not lo <= value <= hi:
        raise InvalidRequest(f"Invalid '{name}': must be between {lo} and {hi}.", param=name)


def usage_from(obj: Any) -> Usage | None:
    """OpenAI `usage` -> Usage. `prompt_tokens` includes cached tokens, as OpenAI reports it.
    None when absent; counts of the wrong type make it `unknown` (see canonical.usage_of)."""
    if obj is None:
        return None
    return usage_of(obj, input_tokens="prompt_tokens", output_tokens="completion_tokens",
                    cached_tokens=("prompt_tokens_details", "cached_tokens"))


# What makes an event worth parsing: real usage (not `"usage":null`), an error, or the end.
_NOTABLE = re.compile(rb'"usage":\s*\{|"error"|\[DONE\]')


_ID = re.compile(rb'"id"\s*:\s*"([^"\\]{1,200})"')


class StreamObserver:
    """Watches an OpenAI chat SSE stream as it is relayed: usage, terminal `[DONE]`, error events.

    `hide_usage` drops the usage-only chunk the gateway asked for when the client did not.
    """

    __slots__ = ("splitter", "usage", "done", "hide_usage", "upstream_error", "deltas", "id")

    def __init__(self, hide_usage: bool) -> None:
        self.id: str | None = None  # the upstream's completion (or generation) id, from the first chunk
        self.splitter = sse.EventSplitter()
        self.usage = Usage()
        self.done = False
        self.hide_usage = hide_usage
        self.upstream_error: dict | None = None
        self.deltas = 0  # chunks seen: about one output token each, for partial-stream estimates

    def feed(self, chunk: bytes) -> bytes:
        """Observe one upstream chunk; return the bytes to forward (the chunk itself unless hiding)."""
        if self.id is None and (found := _ID.search(chunk)):
            self.id = found.group(1).decode(errors="replace")
        head = b""
        if not self.splitter.pending and chunk.endswith(b"\n\n") and b"\r" not in chunk:
            notable = _NOTABLE.search(chunk)
            if notable is None:
                # The common case: whole plain content events, nothing to read or hide.
                self.deltas += chunk.count(b"data:")
                return chunk
            # Several events at once (a burst): those before the first notable one are plain
            # content, passed on as they are; only the rest is split and read.
            cut = chunk.rfind(b"\n\n", 0, notable.start()) + 2
            if cut > 1:
                head, chunk = chunk[:cut], chunk[cut:]
                self.deltas += head.count(b"data:")
        events = self.splitter.feed(chunk)
        if not self.hide_usage:
            out, dropped = chunk, False
            for event in events:
                if not self._observe(event):
                    # An upstream error event (it may echo our provider key): the relay ends the
                    # stream with its own, scrubbed error event instead.
                    out, dropped = out.replace(event + b"\n\n", b"", 1), True
            out = head + out if head else out
            return scrub_bytes(out) if dropped else out
        out = [head]
        for event in events:
            if self._observe(event):
                out.append(event + b"\n\n")
        return b"".join(out)

    def _observe(self, event: bytes) -> bool:
        """True when the event should reach the client."""
        data = sse.data_of(event)
        if data is None:
            return True
        if data == sse.DONE:
            self.done = True
            return True
        self.deltas += 1
        if not _NOTABLE.search(data):
            return True  # most chunks: no parse needed
        obj = sse.json_object(data)
        if obj is None:  # the client gets the upstream's bytes as they are
            return True
        if not isinstance(obj, dict):  # not a chunk: relayed as sent, nothing to read from it
            return True
        if isinstance(obj.get("error"), dict):
            self.upstream_error = obj["error"]
            return False
        usage = usage_from(obj.get("usage"))
        if usage is not None:
            self.usage.merge(usage)
            if self.hide_usage and not obj.get("choices"):
                return False
        return True

    def tail(self) -> bytes:
        """Whatever the upstream sent after its last complete event (forwarded when hiding)."""
        return self.splitter.pending if self.hide_usage else b""


def error_event(e: GatewayError) -> bytes:
    """How an error mid-stream reaches an OpenAI client: a data event with an `error` object."""
    return sse.encode(as_openai(e))


def upstream_error_message(body: bytes) -> tuple[str | None, str | None]:
    """(message, code) from an OpenAI-shaped error body, if it is one."""
    try:
        err = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None, None
    if isinstance(err, dict):
        return err.get("message"), err.get("code")
    if isinstance(err, str):
        return err, None
    return None, None


# ---- translation: OpenAI chat <-> canonical ----------------------------------------------------
# Used when the client's dialect and the provider's differ (or a stage changed the request).

FINISH_IN = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
             "content_filter": "content_filter"}


def _parts(content: Any) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Part("text", text=content)] if content else []
    parts: list[Part] = []
    for p in content:
        if not isinstance(p, dict):
            continue
        kind = p.get("type")
        if kind == "text":
            parts.append(Part("text", text=p.get("text", "")))
        elif kind == "image_url":
            image = p.get("image_url") or {}
            url = image.get("url", "") if isinstance(image, dict) else str(image)
            detail = image.get("detail") if isinstance(image, dict) else None
            parts.append(image_part(url, detail))
        elif kind == "refusal":
            parts.append(Part("text", text=p.get("refusal", "")))
    return parts


def image_part(url: str, detail: str | None = None) -> Part:
    """An image by URL, or inline when the URL is a data: URL (split into media type and base64)."""
    if url.startswith("data:") and ";base64," in url:
        head, data = url[5:].split(";base64,", 1)
        return Part("image", media_type=head or "image/png", data=data, detail=detail)
    return Part("image", url=url, detail=detail)


def decode_request(body: dict[str, Any]) -> ChatRequest:
    messages: list[Message] = []
    for m in body.get("messages") or []:
        role = m.get("role")
        if role in ("system", "developer"):
            messages.append(Message("system", _parts(m.get("content"))))
        elif role == "user":
            messages.append(Message("user", _parts(m.get("content")), name=m.get("name")))
        elif role == "assistant":
            calls = [ToolCall(c.get("id", ""), (c.get("function") or {}).get("name", ""),
                              (c.get("function") or {}).get("arguments") or "")
                     for c in m.get("tool_calls") or []]
            if m.get("function_call"):
                fc = m["function_call"]
                calls.append(ToolCall(fc.get("name", ""), fc.get("name", ""), fc.get("arguments") or ""))
            content = _parts(m.get("content"))
            reasoning = m.get("reasoning_content") or m.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                content.insert(0, Part("thinking", text=reasoning))
            messages.append(Message("assistant", content, tool_calls=calls))
        elif role in ("tool", "function"):
            messages.append(Message("tool", _parts(m.get("content")),
                                    tool_call_id=m.get("tool_call_id") or m.get("name")))
    tools = []
    for t in body.get("tools") or []:
        fn = t.get("function") or {}
        if t.get("type", "function") == "function" and fn.get("name"):
            tools.append(Tool(fn["name"], fn.get("description"),
                              fn.get("parameters") or {"type": "object", "properties": {}}, fn.get("strict")))
    for fn in body.get("functions") or []:  # the deprecated form
        tools.append(Tool(fn["name"], fn.get("description"), fn.get("parameters") or {"type": "object"}))
    choice = body.get("tool_choice", body.get("function_call"))
    if isinstance(choice, dict):
        fn = choice.get("function")
        choice = {"name": (fn if isinstance(fn, dict) else choice).get("name", "")}
    stop = body.get("stop")
    return ChatRequest(
        model=body.get("model", ""),
        messages=messages,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=body.get("parallel_tool_calls"),
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stop=[stop] if isinstance(stop, str) else stop,
        stream=bool(body.get("stream")),
        response_format=body.get("response_format"),
        seed=body.get("seed"),
        user=body.get("user"),
        metadata=body.get("metadata"),
        reasoning_effort=body.get("reasoning_effort"),
    )


def _content_out(parts: list[Part]) -> str | list[dict] | None:
    if not parts:
        return None
    if all(p.type == "text" for p in parts):
        return "".join(p.text or "" for p in parts)
    out: list[dict] = []
    for p in parts:
        if p.type == "text":
            out.append({"type": "text", "text": p.text or ""})
        elif p.type == "image":
            url = p.url or f"data:{p.media_type or 'image/png'};base64,{p.data or ''}"
            image: dict[str, Any] = {"url": url}
            if p.detail:
                image["detail"] = p.detail
            out.append({"type": "image_url", "image_url": image})
    return out


def encode_request(req: ChatRequest) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for m in req.messages:
        if m.role == "system":
            messages.append({"role": "system", "content": m.text})
        elif m.role == "user":
            msg: dict[str, Any] = {"role": "user", "content": _content_out(m.content) or ""}
            if m.name:
                msg["name"] = m.name
            messages.append(msg)
        elif m.role == "assistant":
            visible = [p for p in m.content if p.type == "text"]
            msg = {"role": "assistant", "content": "".join(p.text or "" for p in visible) or None}
            if m.tool_calls:
                msg["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                                     for c in m.tool_calls]
            messages.append(msg)
        elif m.role == "tool":
            messages.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.text})
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    if req.tools:
        body["tools"] = [{"type": "function", "function": {
            k: v for k, v in (("name", t.name), ("description", t.description), ("parameters", t.parameters),
                              ("strict", t.strict)) if v is not None}} for t in req.tools]
    if req.tool_choice is not None:
        body["tool_choice"] = ({"type": "function", "function": {"name": req.tool_choice["name"]}}
                               if isinstance(req.tool_choice, dict) else req.tool_choice)
    for key, value in (("parallel_tool_calls", req.parallel_tool_calls), ("max_tokens", req.max_tokens),
                       ("temperature", req.temperature), ("top_p", req.top_p), ("stop", req.stop),
                       ("response_format", req.response_format), ("seed", req.seed), ("user", req.user),
                       ("reasoning_effort", req.reasoning_effort)):
        if value is not None:
            body[key] = value
    if cache_key := req.extra.get("prompt_cache_key"):  # set by the prompt_cache savings layer
        body["prompt_cache_key"] = cache_key
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def decode_response(body: dict[str, Any]) -> ChatResponse:
    """An upstream chat.completion -> ChatResponse. A body of the wrong shape raises TypeError or
    AttributeError (the adapter's "invalid response"), never anything else."""
    choices = body.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise TypeError("choices is not a list")
    choice = (choices or [{}])[0]
    message = choice.get("message") or {}
    content = _parts(message.get("content"))
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.insert(0, Part("thinking", text=reasoning))
    calls = [ToolCall(c.get("id", ""), (c.get("function") or {}).get("name", ""),
                      (c.get("function") or {}).get("arguments") or "")
             for c in message.get("tool_calls") or []]
    return checked(ChatResponse(
        id=body.get("id", ""), model=body.get("model", ""), content=content, tool_calls=calls,
        finish_reason=FINISH_IN.get(choice.get("finish_reason") or "stop", "stop"),
        usage=usage_from(body.get("usage")) or Usage(), created=body["created"] if type(body.get("created")) is int else 0,
    ))


def _usage_out(u: Usage) -> dict[str, Any]:
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}


def chat_id(source_id: str) -> str:
    return source_id if source_id.startswith("chatcmpl") else "chatcmpl-" + (source_id or uuid.uuid4().hex)


def encode_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": resp.text or None, "refusal": None}
    if resp.tool_calls:
        message["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                                 for c in resp.tool_calls]
    elif message["content"] is None:
        message["content"] = ""
    finish = resp.finish_reason if resp.finish_reason != "error" else "stop"
    return {
        "id": chat_id(resp.id), "object": "chat.completion", "created": resp.created or int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage_out(resp.usage),
    }


def decode_stream(chunks: Iterator[bytes]) -> EventStream:
    """Upstream OpenAI chat SSE -> canonical events. A stream without `[DONE]` ends in an error."""
    started = False
    announced: set[int] = set()
    for event in sse.events(chunks):
        data = sse.data_of(event)
        if data is None:
            continue
        if data == sse.DONE:
            yield StreamEvent("end")
            return
        obj = sse.json_object(data)
        if obj is None:  # not JSON, or not an object: nothing after it can be trusted
            yield StreamEvent("error", error=MalformedStream())
            return
        if isinstance(obj.get("error"), dict):
            yield StreamEvent("error", error=UpstreamError("The upstream provider reported an error during the "
                                                           "stream.", retryable=False))
            return
        if not started:
            started = True
            yield StreamEvent("start", id=obj.get("id", ""), model=obj.get("model", ""))
        for choice in obj.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                yield StreamEvent("thinking", text=reasoning)
            if delta.get("content"):
                yield StreamEvent("text", text=delta["content"])
            for tc in delta.get("tool_calls") or []:
                index = tc.get("index", 0)
                fn = tc.get("function") or {}
                if index not in announced:
                    announced.add(index)
                    yield StreamEvent("tool_call", index=index, id=tc.get("id", ""), name=fn.get("name", ""))
                if fn.get("arguments"):
                    yield StreamEvent("tool_args", index=index, text=fn["arguments"])
            if choice.get("finish_reason"):
                yield StreamEvent("finish", finish_reason=FINISH_IN.get(choice["finish_reason"], "stop"))
        usage = usage_from(obj.get("usage"))
        if usage is not None:
            yield StreamEvent("usage", usage=usage)
    yield StreamEvent("error", error=StreamTruncated())


def encode_stream(events: EventStream, model: str, include_usage: bool) -> Iterator[bytes]:
    """Canonical events -> OpenAI chat SSE, as OpenAI frames it (role chunk first, `[DONE]` last)."""
    base: dict[str, Any] = {"id": "", "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model}
    usage: Usage | None = None
    for ev in events:
        kind = ev.kind
        if kind == "start":
            base["id"] = chat_id(ev.id or "")
            yield _chunk(base, {"role": "assistant", "content": ""})
        elif kind == "text":
            yield _chunk(base, {"content": ev.text})
        elif kind == "tool_call":
            yield _chunk(base, {"tool_calls": [{"index": ev.index, "id": ev.id, "type": "function",
                                                "function": {"name": ev.name, "arguments": ""}}]})
        elif kind == "tool_args":
            yield _chunk(base, {"tool_calls": [{"index": ev.index, "function": {"arguments": ev.text}}]})
        elif kind == "finish":
            reason = ev.finish_reason if ev.finish_reason != "error" else "stop"
            yield _chunk(base, {}, finish_reason=reason)
        elif kind == "usage" and ev.usage is not None:
            # merged, not replaced: Anthropic reports input in message_start and output in message_delta
            usage = usage or Usage()
            usage.merge(ev.usage)
        elif kind == "error":
            yield error_event(ev.error)
            return
        elif kind == "end":
            if include_usage and usage is not None:
                yield sse.encode({**base, "choices": [], "usage": _usage_out(usage)})
            yield b"data: [DONE]\n\n"
            return


def _chunk(base: dict[str, Any], delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    return sse.encode({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                            "finish_reason": finish_reason}]})


# ---- the dialect's face to dispatch (same signature in every client dialect module) -------------

def render(resp: ChatResponse, model: str, body: dict[str, Any]) -> dict[str, Any]:
    return encode_response(resp, model)


def render_stream(events: EventStream, model: str, body: dict[str, Any]) -> Iterator[bytes]:
    return encode_stream(events, model, include_usage=bool((body.get("stream_options") or {}).get("include_usage")))
