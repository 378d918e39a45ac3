"""OpenAI Chat Completions dialect: request checks, usage extraction, stream observation."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError, InvalidRequest, as_openai
from gateway.wire import sse
from gateway.wire.canonical import Usage

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def check_request(body: Any) -> None:
    """Reject what OpenAI would reject with a 400 naming the param; pass everything else through."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise InvalidRequest(
                f"Invalid value for 'messages[{i}].role': expected one of {', '.join(sorted(ROLES))}.",
                param=f"messages[{i}].role",
            )
    _check_type(body, "stream", bool)
    _check_type(body, "n", int, minimum=1)
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


def usage_from(obj: dict | None) -> Usage | None:
    """OpenAI `usage` -> Usage. `prompt_tokens` includes cached tokens, as OpenAI reports it."""
    if not obj:
        return None
    details = obj.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=int(obj.get("prompt_tokens") or 0),
        output_tokens=int(obj.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


class StreamObserver:
    """Watches an OpenAI chat SSE stream as it is relayed: usage, terminal `[DONE]`, error events.

    `hide_usage` drops the usage-only chunk the gateway asked for when the client did not.
    """

    __slots__ = ("splitter", "usage", "done", "hide_usage", "upstream_error", "deltas")

    def __init__(self, hide_usage: bool) -> None:
        self.splitter = sse.EventSplitter()
        self.usage = Usage()
        self.done = False
        self.hide_usage = hide_usage
        self.upstream_error: dict | None = None
        self.deltas = 0  # chunks seen: about one output token each, for partial-stream estimates

    def feed(self, chunk: bytes) -> bytes:
        """Observe one upstream chunk; return the bytes to forward (the chunk itself unless hiding)."""
        events = self.splitter.feed(chunk)
        if not self.hide_usage:
            for event in events:
                self._observe(event)
            return chunk
        out = []
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
        if b'"usage"' not in data and b'"error"' not in data:
            return True  # most chunks: no parse needed
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if "error" in obj and isinstance(obj["error"], dict):
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
