"""Canonical types shared by every dialect and provider.

Translation goes client dialect -> ChatRequest -> provider wire, and provider wire ->
ChatResponse / StreamEvents -> client dialect. Same-dialect traffic skips all of this (bytes
pass through). Fields a dialect has no place for are dropped on translation, never invented.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

# Finish reasons, canonical (OpenAI's words); each dialect maps to and from these.
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0  # all prompt tokens, cached ones and cache writes included
    output_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens read from the provider's prompt cache
    cache_write_tokens: int = 0  # prompt tokens written to the provider's prompt cache
    estimated: bool = False  # counted here, not reported by the provider

    def merge(self, other: Usage | None) -> None:
        """Take the larger of each count: streams report cumulative usage, sometimes more than once."""
        if other is None:
            return
        self.input_tokens = max(self.input_tokens, other.input_tokens)
        self.output_tokens = max(self.output_tokens, other.output_tokens)
        self.cached_tokens = max(self.cached_tokens, other.cached_tokens)
        self.cache_write_tokens = max(self.cache_write_tokens, other.cache_write_tokens)

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Part:
    """One piece of message content."""

    type: Literal["text", "image", "thinking", "redacted_thinking", "document"]
    text: str | None = None
    url: str | None = None  # image/document by URL (http(s) URL, not data:)
    media_type: str | None = None  # for inline data
    data: str | None = None  # base64 payload for inline images/documents, or redacted thinking data
    signature: str | None = None  # thinking block signature (Anthropic)
    cache_control: dict[str, Any] | None = None
    detail: str | None = None  # OpenAI image detail


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model produced it


@dataclass(slots=True)
class Message:
    role: Literal["system", "user", "assistant", "tool"]
    content: list[Part] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)  # assistant
    tool_call_id: str | None = None  # role == "tool": the call it answers
    is_error: bool = False  # a tool result that reports failure
    name: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.text or "" for p in self.content if p.type == "text")


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]  # system prompts are role "system" messages, first
    tools: list[Tool] = field(default_factory=list)
    # "auto" | "none" | "required" | {"name": tool name}; None when the client sent none
    tool_choice: str | dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    stream: bool = False
    response_format: dict[str, Any] | None = None  # OpenAI shape: {"type": "json_schema", ...}
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None  # Anthropic extended thinking config
    reasoning_effort: str | None = None
    # Provider-specific fields a savings layer set (e.g. prompt_cache_key); an encoder emits only
    # the ones its provider takes, so a fallback to another kind of provider drops them.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def system_text(self) -> str:
        return "\n\n".join(m.text for m in self.messages if m.role == "system")


@dataclass(slots=True)
class ChatResponse:
    id: str
    model: str
    content: list[Part] = field(default_factory=list)  # assistant output: text and thinking parts
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    created: int = 0

    @property
    def text(self) -> str:
        return "".join(p.text or "" for p in self.content if p.type == "text")


@dataclass(slots=True)
class StreamEvent:
    """One step of a translated stream. Kinds and the fields each uses:

    start       id, model                      (always first)
    text        text                           (a delta of visible output)
    thinking    text, signature                (a delta of reasoning; signature when it arrives)
    tool_call   index, id, name                (a new tool call begins)
    tool_args   index, text                    (a fragment of that call's JSON arguments)
    finish      finish_reason, stop_sequence
    usage       usage                          (cumulative; may come more than once)
    error       error (a GatewayError)         (the stream failed; nothing follows)
    end                                        (clean end; always last on success)
    """

    kind: Literal["start", "text", "thinking", "tool_call", "tool_args", "finish", "usage", "error", "end"]
    id: str | None = None
    model: str | None = None
    text: str | None = None
    signature: str | None = None
    index: int = 0
    name: str | None = None
    finish_reason: FinishReason | None = None
    stop_sequence: str | None = None
    usage: Usage | None = None
    error: Any = None


EventStream = Iterator[StreamEvent]


def replay(resp: ChatResponse) -> EventStream:
    """A whole response as the canonical events of a stream (cache hits replayed as streams)."""
    yield StreamEvent("start", id=resp.id, model=resp.model)
    for part in resp.content:
        if part.type == "thinking":
            yield StreamEvent("thinking", text=part.text or "", signature=part.signature)
        elif part.type == "text" and part.text:
            yield StreamEvent("text", text=part.text)
    for index, call in enumerate(resp.tool_calls):
        yield StreamEvent("tool_call", index=index, id=call.id, name=call.name)
        if call.arguments:
            yield StreamEvent("tool_args", index=index, text=call.arguments)
    yield StreamEvent("finish", finish_reason=resp.finish_reason, stop_sequence=resp.stop_sequence)
    yield StreamEvent("usage", usage=resp.usage)
    yield StreamEvent("end")


def assemble(events: Iterator[StreamEvent]) -> ChatResponse | None:
    """Canonical stream events -> the whole response; None if the stream did not end cleanly."""
    resp = ChatResponse(id="", model="")
    text: list[str] = []
    thinking: list[str] = []
    signature: str | None = None
    calls: dict[int, ToolCall] = {}
    for ev in events:
        if ev.kind == "start":
            resp.id, resp.model = ev.id or "", ev.model or ""
        elif ev.kind == "text":
            text.append(ev.text or "")
        elif ev.kind == "thinking":
            thinking.append(ev.text or "")
            signature = ev.signature or signature
        elif ev.kind == "tool_call":
            calls[ev.index] = ToolCall(ev.id or "", ev.name or "", "")
        elif ev.kind == "tool_args" and ev.index in calls:
            calls[ev.index].arguments += ev.text or ""
        elif ev.kind == "finish":
            resp.finish_reason = ev.finish_reason or "stop"
            resp.stop_sequence = ev.stop_sequence
        elif ev.kind == "usage" and ev.usage is not None:
            resp.usage.merge(ev.usage)
        elif ev.kind == "error":
            return None
        elif ev.kind == "end":
            if thinking:
                resp.content.append(Part("thinking", text="".join(thinking), signature=signature))
            if text:
                resp.content.append(Part("text", text="".join(text)))
            resp.tool_calls = [calls[i] for i in sorted(calls)]
            return resp
    return None
