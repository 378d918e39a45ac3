"""The provider adapter protocol, and the plain values adapters take and return.

An adapter is a module (see registry.py) that is pure over what it is given: a `Call` (the
client's body, the stream flag, the deadline, the few client headers a provider honours), a
canonical `ChatRequest` when translating, and a `RouteInfo` with its provider settings. It
returns bytes, events and usage, and raises the shared upstream errors (gateway.errors:
UpstreamError with `retryable`, UpstreamTimeout, ...). It never reads or writes the request
context and never imports the pipeline or the database: dispatch alone does both, and alone
decides on retries and fallback.

Which of `passthrough` and `chat`/`chat_stream` serves a request is dispatch's `mode()`:
pass through when the client's endpoint is in the adapter's `native` set and nothing asks for
translation. A failure before a stream's first byte raises; a failure mid-stream is reported
inside it (a `Relay`'s `error`, or an `error` StreamEvent), with the usage seen so far.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.errors import UpstreamError
from gateway.routing.routes import RouteInfo
from gateway.wire.canonical import ChatRequest, ChatResponse, EventStream, Usage


@dataclass(slots=True)
class Call:
    """What an adapter may know of one request, taken from the context by dispatch."""

    endpoint: str  # the client's endpoint, e.g. "chat.completions", "messages", "responses"
    body: dict[str, Any]  # the client's body, decoded and checked (never mutated by adapters)
    stream: bool = False
    deadline: float | None = None  # time.perf_counter() value: no upstream wait goes past it
    headers: Mapping[str, str] = field(default_factory=dict)  # the client's; adapters forward only those they name
    max_output_tokens: int | None = None  # the model's own, for upstreams that require max_tokens
    history: list[dict[str, Any]] = field(default_factory=list)  # Responses: the conversation so far
    previous_provider: str = ""  # Responses: the provider that holds `previous_response_id`, if any


class Relay:
    """A pass-through stream: the upstream's bytes as they arrive (`chunks`), and what the
    adapter saw in them, read by dispatch as the stream goes and when it ends.

    `error` is set when the stream failed (its error event is then among the chunks); `usage`
    is what the upstream reported. When that is incomplete (a stream cut before its usage came),
    `estimate` is what the adapter counted instead (prompt and relayed output), and wins.
    """

    __slots__ = ("chunks", "usage", "error", "estimate", "upstream_id")

    def __init__(self) -> None:
        self.chunks: Iterator[bytes] = iter(())
        self.usage = Usage()
        self.error: UpstreamError | None = None
        self.estimate: Usage | None = None
        self.upstream_id: str | None = None


@dataclass(slots=True)
class Passed:
    """A pass-through answer: the upstream's body as received, or a Relay for a stream."""

    body: bytes | None = None
    usage: Usage = field(default_factory=Usage)
    upstream_id: str | None = None  # the provider's request or generation id, for reconciliation
    relay: Relay | None = None


class Provider(Protocol):
    kind: str
    native: frozenset[str]  # client endpoints whose bytes it passes through, e.g. {"messages"}

    def passthrough(self, call: Call, route: RouteInfo) -> Passed:
        """The client's body to the upstream as received (model rewritten); bytes back."""
        ...

    def chat(self, req: ChatRequest, route: RouteInfo, call: Call) -> ChatResponse:
        """Translated: a canonical request in, a canonical response out."""
        ...

    def chat_stream(self, req: ChatRequest, route: RouteInfo, call: Call) -> EventStream:
        """Translated stream: the request is made now (errors raise here), events come lazily."""
        ...

    # Optional, detected with getattr:
    #   embeddings(call, route) -> (OpenAI CreateEmbeddingResponse dict, Usage)
    #   list_models(provider: ProviderInfo) -> list[str]
    #   batches: the provider's batch API, when it has one

