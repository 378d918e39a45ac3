"""RequestContext: principal, request, route plan, decisions, timings and usage of one call."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import GatewayError
from gateway.memo import ModelInfo, Principal, RouteInfo
from gateway.wire.canonical import Usage


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


@dataclass(slots=True)
class Reply:
    """What the pipeline answers: a whole body, or chunks relayed as they arrive."""

    status: int = 200
    body: bytes | None = None
    chunks: Iterator[bytes] | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_stream(self) -> bool:
        return self.chunks is not None


@dataclass(slots=True)
class RequestContext:
    endpoint: str  # e.g. "chat.completions"
    dialect: str  # "openai" | "anthropic": the error shape and stream framing the client expects
    raw: bytes
    headers: Mapping[str, str]
    raw_key: str | None
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    deadline: float | None = None  # perf_counter time: a sub-request's own, shorter than the routing deadline
    body: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    principal: Principal | None = None
    requested_model: str = ""
    model: ModelInfo | None = None
    plan: list[RouteInfo] = field(default_factory=list)
    route: RouteInfo | None = None
    attempts: int = 0
    usage: Usage = field(default_factory=Usage)
    usage_estimated: bool = False
    status: int = 200
    error: GatewayError | None = None
    first_byte_at: float | None = None
    cache: str = "miss"  # or how a savings layer answered: hit | semantic | dedupe
    cache_mechanism: str = ""  # the layer that answered (exact_cache, semantic_cache, inflight_dedupe)
    removed_tokens: dict[str, int] = field(default_factory=dict)  # prompt tokens a layer removed
    saved: dict[str, int] = field(default_factory=dict)  # mechanism -> micro-dollars
    benchmark_micros: int = 0
    charge_micros: int = 0
    recorded: bool = False
    changed: bool = False  # a stage rewrote `canonical`: its owned fields replace the body's (wire/rewrite.py)
    canonical: Any = None  # the decoded ChatRequest, once a stage asked for it (see savings.canonical)
    mode: str = ""  # how dispatch served it: "passthrough" | "translate" ("" before, or not chat-shaped)
    upstream_id: str | None = None  # the provider's request / generation id, for reconciliation
    history: list[dict[str, Any]] = field(default_factory=list)  # Responses: the conversation before this turn
    history_provider: str = ""  # Responses: the provider that holds previous_response_id ("" if none)
    extra: dict[str, Any] = field(default_factory=dict)  # stage-private state
    trace: Any = None  # the request's span when tracing is on (gateway/tracing.py)

    def fail(self, error: GatewayError) -> None:
        self.error = error
        self.status = error.status

    def mark_first_byte(self) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()

    @property
    def saved_micros(self) -> int:
        return self.benchmark_micros - self.charge_micros


def keep(reply: Reply, state: dict[str, Any], key: str, limit: int) -> Reply:
    """Keep a copy of what the client receives: a whole body in `state["body"]` at once, a stream
    in `state[key]` as it passes (`tee`: never buffered first)."""
    if reply.chunks is not None:
        reply.chunks = tee(reply.chunks, state, key, limit)
    else:
        state["body"] = reply.body
    return reply


def tee(chunks: Iterator[bytes], state: dict[str, Any], key: str, limit: int) -> Iterator[bytes]:
    """Relay `chunks` unchanged while keeping a copy in `state[key]`, only for a stream that ran to
    its end within `limit` bytes (a cut or oversized stream keeps nothing); closing this closes them."""
    kept: list[bytes] = []
    size = 0
    try:
        for chunk in chunks:
            if size <= limit:
                kept.append(chunk)
                size += len(chunk)
            yield chunk
        if size <= limit:
            state[key] = kept
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
