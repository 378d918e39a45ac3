"""OpenAI Responses dialect (`POST /v1/responses`): request checks, and translation both ways.

Translation maps Responses onto the canonical chat types for providers that do not speak it:
`input` items become messages (`function_call` items join the assistant turn before them,
`function_call_output` items become tool results), `instructions` the first system message.
Rendering builds the `response` object and, for streams, the event sequence the API sends
(`response.created` ... `response.completed`), each event with its `sequence_number`.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterator
from typing import Any

import orjson

from gateway.errors import GatewayError, InvalidRequest, StreamTruncated
from gateway.scrub import scrub
from gateway.wire import sse
from gateway.wire.canonical import (
    ChatRequest,
    ChatResponse,
    EventStream,
    Message,
    Part,
    Tool,
    ToolCall,
    Usage,
)
from gateway.wire.openai_chat import _check_number, _check_type, check_model, image_part

ROLES = frozenset({"user", "assistant", "system", "developer"})
FORMATS = frozenset({"text", "json_schema", "json_object"})


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


# ---- checks ------------------------------------------------------------------------------------

def check_request(body: Any) -> None:
    """Reject what OpenAI would reject with a 400 naming the param; pass everything else through."""
    check_model(body)
    value = body.get("input")
    if value is None and not body.get("previous_response_id"):
        raise InvalidRequest("Missing required parameter: 'input'.", param="input")
    if value is not None and not isinstance(value, str | list):
        raise InvalidRequest("Invalid type for 'input': expected a string or an array of input items.",
                             param="input")
    for i, item in enumerate(value if isinstance(value, list) else ()):
        _check_item(item, f"input[{i}]")
    for name in ("instructions", "previous_response_id"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise InvalidRequest(f"Invalid type for '{name}': expected a string.", param=name)
    for name in ("stream", "store", "parallel_tool_calls", "background"):
        _check_type(body, name, bool)
    _check_type(body, "max_output_tokens", int, minimum=16)
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        raise InvalidRequest("Invalid type for 'metadata': expected an object.", param="metadata")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("Invalid type for 'tools': expected an array.", param="tools")
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise InvalidRequest(f"Invalid value for 'tools[{i}]': expected a tool object.",
                                 param=f"tools[{i}]")
        if tool["type"] == "function" and not (isinstance(tool.get("name"), str) and tool["name"]):
            raise InvalidRequest(f"Missing required parameter: 'tools[{i}].name'.", param=f"tools[{i}].name")
    if body.get("text") is not None and not isinstance(body["text"], dict):
        raise InvalidRequest("Invalid type for 'text': expected an object.", param="text")
    if (fmt := (body.get("text") or {}).get("format")) is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in FORMATS:
            raise InvalidRequest("Invalid value for 'text.format.type': expected one of json_object, "
                                 "json_schema, text.", param="text.format.type")
        if fmt["type"] == "json_schema" and not (fmt.get("name") and isinstance(fmt.get("schema"), dict)):
            raise InvalidRequest("Missing required parameter: 'text.format.name' and 'text.format.schema'.",
                                 param="text.format")


def _check_item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise InvalidRequest(f"Invalid type for '{where}': expected an input item object.", param=where)
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind == "message":
        if item.get("role") not in ROLES:
            raise InvalidRequest(f"Invalid value for '{where}.role': expected one of "
                                 f"{', '.join(sorted(ROLES))}.", param=f"{where}.role")
        if not isinstance(item.get("content"), str | list):
            raise InvalidRequest(f"Invalid type for '{where}.content': expected a string or an array.",
                                 param=f"{where}.content")
    elif kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise InvalidRequest(f"Missing required parameter: '{where}.{name}'.",
                                     param=f"{where}.{name}")
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise InvalidRequest(f"Missing required parameter: '{where}.call_id'.", param=f"{where}.call_id")
        if not isinstance(item.get("output"), str | list):
            raise InvalidRequest(f"Missing required parameter: '{where}.output'.", param=f"{where}.output")
    elif not isinstance(kind, str):
        raise InvalidRequest(f"Missing required parameter: '{where}.type'.", param=f"{where}.type")


# ---- decode: Responses request -> canonical ------------------------------------------------------

def _parts(content: Any) -> list[Part]:
    if isinstance(content, str):
        return [Part("text", text=content)] if content else []
    parts: list[Part] = []
    for p in content or ():
        if not isinstance(p, dict):
            continue
        kind = p.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append(Part("text", text=p.get("text") or ""))
        elif kind == "refusal":
            parts.append(Part("text", text=p.get("refusal") or ""))
        elif kind == "input_image" and isinstance(p.get("image_url"), str):
            detail = p.get("detail")
            parts.append(image_part(p["image_url"], detail if detail != "auto" else None))
        elif kind == "input_file" and str(p.get("file_data", "")).startswith("data:"):
            head, _, data = p["file_data"][5:].partition(";base64,")
            parts.append(Part("document", media_type=head or "application/pdf", data=data))
        # file_id references live in OpenAI's file store: no other provider can read them (dropped)
    return parts


def decode_items(items: list[dict[str, Any]]) -> list[Message]:
    """Input items -> messages. A turn's `function_call` items join its assistant message."""
    messages: list[Message] = []
    for item in items:
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            parts = _parts(item.get("content"))
            if role in ("system", "developer"):
                messages.append(Message("system", parts))
            elif role == "assistant":
                messages.append(Message("assistant", [p for p in parts if p.type == "text"]))
            else:
                messages.append(Message("user", parts))
        elif kind == "function_call":
            call = ToolCall(item.get("call_id") or item.get("id") or "", item.get("name") or "",
                            item.get("arguments") or "")
            if messages and messages[-1].role == "assistant":
                messages[-1].tool_calls.append(call)
            else:
                messages.append(Message("assistant", tool_calls=[call]))
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else "".join(p.text or "" for p in _parts(output))
            messages.append(Message("tool", [Part("text", text=text)], tool_call_id=item.get("call_id")))
        # reasoning items (and other providers' hosted-tool items) have no chat equivalent: dropped
    return messages


def _tools(body: dict[str, Any]) -> list[Tool]:
    tools = []
    for t in body.get("tools") or ():
        if t.get("type") != "function":
            raise InvalidRequest(f"The tool type '{t.get('type')}' is only available from providers that "
                                 "speak the Responses API; this model's route does not.", param="tools")
        parameters = t.get("parameters") or {"type": "object", "properties": {}}
        tools.append(Tool(t["name"], t.get("description"), parameters, t.get("strict")))
    return tools


def _tool_choice(choice: Any) -> str | dict[str, str] | None:
    if isinstance(choice, dict):
        if choice.get("type") == "function":
            return {"name": choice.get("name", "")}
        if choice.get("type") == "allowed_tools":
            return choice.get("mode") or "auto"
        return "required"  # a hosted tool by type: the nearest chat meaning
    return choice


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "description", "schema", "strict") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt.get("type")}


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's `input` as a list of items (a string is one user message)."""
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    return [item for item in value or [] if isinstance(item, dict)]


def decode_request(body: dict[str, Any], history: list[dict[str, Any]] = ()) -> ChatRequest:
    """The request as canonical chat, the conversation so far (`previous_response_id`'s) first."""
    messages = []
    if body.get("instructions"):
        messages.append(Message("system", [Part("text", text=body["instructions"])]))
    messages += decode_items([*history, *input_items(body)])
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    return ChatRequest(
        model=body.get("model", ""),
        messages=messages,
        tools=_tools(body),
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=body.get("parallel_tool_calls"),
        max_tokens=body.get("max_output_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stream=bool(body.get("stream")),
        response_format=_response_format(body.get("text")),
        user=body.get("safety_identifier") or body.get("user"),
        metadata=body.get("metadata"),
        reasoning_effort=reasoning.get("effort"),
    )


# ---- render: canonical -> Responses -----------------------------------------------------------

def usage_out(u: Usage | None) -> dict[str, Any] | None:
    if u is None:
        return None
    return {"input_tokens": u.input_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_tokens,
                                     "cache_write_tokens": u.cache_write_tokens},
            "output_tokens": u.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.input_tokens + u.output_tokens}


def usage_from(obj: Any) -> Usage | None:
    """Responses `usage` -> Usage (`input_tokens` includes cached tokens, as OpenAI reports it)."""
    if not isinstance(obj, dict):
        return None
    details = obj.get("input_tokens_details") or {}
    return Usage(input_tokens=int(obj.get("input_tokens") or 0),
                 output_tokens=int(obj.get("output_tokens") or 0),
                 cached_tokens=int(details.get("cached_tokens") or 0),
                 cache_write_tokens=int(details.get("cache_write_tokens") or 0))


def _tools_out(body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for t in body.get("tools") or ():
        if t.get("type") == "function":
            out.append({"type": "function", "name": t["name"], "description": t.get("description"),
                        "parameters": t.get("parameters"), "strict": t.get("strict", True)})
        else:
            out.append(t)
    return out


def response_object(body: dict[str, Any], model: str, rid: str, created_at: int, status: str,
                    output: list[dict[str, Any]], usage: Usage | None = None, finish: str | None = None,
                    error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `response` object, echoing the request's settings as the API does."""
    incomplete = None
    if status == "incomplete":
        incomplete = {"reason": "max_output_tokens" if finish == "length" else "content_filter"}
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    obj = {
        "id": rid, "object": "response", "created_at": created_at, "status": status, "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error, "incomplete_details": incomplete,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None, "model": model, "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": "default", "store": body.get("store") is not False,
        "temperature": body.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto", "tools": _tools_out(body), "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0), "truncation": "disabled", "metadata": body.get("metadata") or {},
    }
    if usage is not None:  # not yet known while in progress: absent, as `usage` is not nullable
        obj["usage"] = usage_out(usage)
    if isinstance(body.get("user"), str):
        obj["user"] = body["user"]
    return obj


def status_of(finish: str | None) -> str:
    return "incomplete" if finish in ("length", "content_filter") else "completed"


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def message_item(iid: str, text: str | None, status: str) -> dict[str, Any]:
    content = [text_part(text)] if text is not None else []
    return {"id": iid, "type": "message", "status": status, "content": content, "role": "assistant"}


def call_item(iid: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {"id": iid, "type": "function_call", "status": status, "arguments": call.arguments,
            "call_id": call.id, "name": call.name}


def reasoning_item(iid: str, text: str | None) -> dict[str, Any]:
    return {"id": iid, "type": "reasoning", "summary": [],
            "content": [] if text is None else [{"type": "reasoning_text", "text": text}]}


def encode_response(resp: ChatResponse, model: str, body: dict[str, Any]) -> dict[str, Any]:
    status = status_of(resp.finish_reason)
    output = []
    thinking = "".join(p.text or "" for p in resp.content if p.type == "thinking")
    if thinking:
        output.append(reasoning_item(new_id("rs"), thinking))
    if resp.text or not resp.tool_calls:
        output.append(message_item(new_id("msg"), resp.text, status))
    for c in resp.tool_calls:
        output.append(call_item(new_id("fc"), ToolCall(c.id, c.name, c.arguments or "{}"), "completed"))
    return response_object(body, model, new_id("resp"), resp.created or int(time.time()), status, output,
                           resp.usage, resp.finish_reason)


def event(obj: dict[str, Any]) -> bytes:
    """SSE framing of one Responses event: the event name is its `type`."""
    return sse.encode(obj, event=obj["type"])


def failure_events(e: GatewayError, seq: int, response: dict[str, Any] | None) -> list[bytes]:
    """A stream that cannot finish: an `error` event, then `response.failed` when a response was started.

    The `error` event carries its fields at the top level, as the API reference documents, and
    again under `error`, as the live API sends them (the official SDK raises on that object).
    """
    code = e.code if e.code == "rate_limit_exceeded" else "server_error"
    message = scrub(e.message)
    err = {"type": "error", "sequence_number": seq, "code": code, "message": message, "param": e.param,
           "error": {"type": e.type, "code": code, "message": message, "param": e.param}}
    out = [event(err)]
    if response is not None:
        failed = {**response, "status": "failed", "completed_at": None,
                  "error": {"code": code, "message": message}}
        out.append(event({"type": "response.failed", "sequence_number": seq + 1, "response": failed}))
    return out


def error_event(e: GatewayError) -> bytes:
    """How an error mid-stream reaches a Responses client (outside a rendered stream)."""
    return failure_events(e, 0, None)[0]


# ---- the dialect's face to dispatch ------------------------------------------------------------

def render(resp: ChatResponse, model: str, body: dict[str, Any]) -> dict[str, Any]:
    return encode_response(resp, model, body)


def render_stream(events: EventStream, model: str, body: dict[str, Any]) -> Iterator[bytes]:
    return StreamRenderer(model, body).run(events)


class StreamRenderer:
    """Canonical events -> Responses SSE. Output items open and close one after another, as the
    API streams them; the terminal event carries the whole response, usage included."""

    def __init__(self, model: str, body: dict[str, Any]) -> None:
        self.model, self.body = model, body
        self.rid, self.created = new_id("resp"), int(time.time())
        self.seq = 0
        self.output: list[dict[str, Any]] = []  # closed items, in output_index order
        self.open: dict[str, Any] | None = None  # the item being streamed: kind, index, id, buf (, call)
        self.calls: dict[int, dict[str, Any]] = {}  # canonical tool-call index -> its item
        self.usage: Usage | None = None
        self.finish: str | None = None

    def _ev(self, kind: str, **fields: Any) -> bytes:
        out = event({"type": kind, "sequence_number": self.seq, **fields})
        self.seq += 1
        return out

    def _snapshot(self, status: str) -> dict[str, Any]:
        return response_object(self.body, self.model, self.rid, self.created, status, list(self.output))

    def run(self, events: EventStream) -> Iterator[bytes]:
        events = iter(events)
        # Wait for the upstream's first event before announcing the response: a stream that fails
        # at once has then sent nothing, and dispatch can still fall back to the next route.
        first = next(events, None)
        yield self._ev("response.created", response=self._snapshot("in_progress"))
        yield self._ev("response.in_progress", response=self._snapshot("in_progress"))
        for ev in itertools.chain((first,) if first is not None else (), events):
            kind = ev.kind
            if kind == "text" and ev.text:
                if self.open is None or self.open["kind"] != "message":
                    yield from self._open("message")
                yield from self._delta(ev.text)
            elif kind == "thinking" and ev.text:
                if self.open is None or self.open["kind"] != "reasoning":
                    yield from self._open("reasoning")
                yield from self._delta(ev.text)
            elif kind == "tool_call":
                yield from self._open("call", ToolCall(ev.id or "", ev.name or "", ""), ev.index)
            elif kind == "tool_args" and ev.text:
                item = self.calls.get(ev.index)
                if item is None:
                    yield from self._open("call", ToolCall("", "", ""), ev.index)
                    item = self.open
                if item is self.open:
                    yield from self._delta(ev.text)
                else:  # a call already closed (upstreams stream calls one by one): keep the arguments whole
                    item["buf"].append(ev.text)
                    self.output[item["index"]]["arguments"] += ev.text
            elif kind == "finish":
                self.finish = ev.finish_reason
            elif kind == "usage" and ev.usage is not None:
                self.usage = self.usage or Usage()
                self.usage.merge(ev.usage)
            elif kind == "error":
                yield from self._fail(ev.error)
                return
            elif kind == "end":
                if not self.output and self.open is None:  # an empty reply is still one (empty) message
                    yield from self._open("message")
                yield from self._close()
                status = status_of(self.finish)
                final = response_object(self.body, self.model, self.rid, self.created, status, self.output,
                                        self.usage or Usage(), self.finish)
                yield self._ev("response.completed" if status == "completed" else "response.incomplete",
                               response=final)
                return
        yield from self._fail(StreamTruncated())

    def _fail(self, err: GatewayError) -> Iterator[bytes]:
        out = failure_events(err, self.seq, self._snapshot("in_progress"))
        self.seq += len(out)
        yield from out

    def _open(self, kind: str, call: ToolCall | None = None, call_index: int = 0) -> Iterator[bytes]:
        yield from self._close()
        index = len(self.output)
        item: dict[str, Any] = {"kind": kind, "index": index, "buf": [], "call": call,
                                "id": new_id({"message": "msg", "reasoning": "rs", "call": "fc"}[kind])}
        self.open = item
        if kind == "message":
            yield self._ev("response.output_item.added", output_index=index,
                           item=message_item(item["id"], None, "in_progress"))
            yield self._ev("response.content_part.added", item_id=item["id"], output_index=index,
                           content_index=0, part=text_part(""))
        elif kind == "reasoning":
            yield self._ev("response.output_item.added", output_index=index,
                           item=reasoning_item(item["id"], None))
        else:
            assert call is not None
            self.calls[call_index] = item
            yield self._ev("response.output_item.added", output_index=index,
                           item=call_item(item["id"], call, "in_progress"))

    def _delta(self, text: str) -> Iterator[bytes]:
        item = self.open
        assert item is not None
        item["buf"].append(text)
        where = {"item_id": item["id"], "output_index": item["index"]}
        if item["kind"] == "message":
            yield self._ev("response.output_text.delta", **where, content_index=0, delta=text, logprobs=[])
        elif item["kind"] == "reasoning":
            yield self._ev("response.reasoning_text.delta", **where, content_index=0, delta=text)
        else:
            yield self._ev("response.function_call_arguments.delta", **where, delta=text)

    def _close(self) -> Iterator[bytes]:
        item, self.open = self.open, None
        if item is None:
            return
        text = "".join(item["buf"])
        where = {"item_id": item["id"], "output_index": item["index"]}
        if item["kind"] == "message":
            status = "incomplete" if self.finish == "length" else "completed"
            done = message_item(item["id"], text, status)
            yield self._ev("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
            yield self._ev("response.content_part.done", **where, content_index=0, part=text_part(text))
        elif item["kind"] == "reasoning":
            done = reasoning_item(item["id"], text)
            yield self._ev("response.reasoning_text.done", **where, content_index=0, text=text)
        else:
            call = item["call"]
            done = call_item(item["id"], ToolCall(call.id, call.name, text), "completed")
            yield self._ev("response.function_call_arguments.done", **where, name=call.name, arguments=text)
        self.output.append(done)
        yield self._ev("response.output_item.done", output_index=item["index"], item=done)


# ---- watching a Responses stream as it is relayed ---------------------------------------------

TERMINAL = frozenset({b"response.completed", b"response.incomplete", b"response.failed", b"error"})
PARSED = TERMINAL | {b"response.created"}


class StreamObserver:
    """Watches a Responses SSE stream as it passes: the created and final responses, usage, and
    whether a terminal event arrived. Only the few events it needs are parsed; an event that does
    not parse is left to the client (it is the upstream's bytes, or ours)."""

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
        if not isinstance(obj, dict):
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
