"""OpenTelemetry traces: one span per request, a child per pipeline stage and per upstream attempt.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set (Settings.otel_endpoint): then spans go to
`{endpoint}/v1/traces` over OTLP/HTTP (protobuf) through a batch span processor, in the background;
the exporter's other OTEL_* variables (headers, timeout, compression, OTEL_BSP_*) apply as the SDK
reads them. Off, nothing of OpenTelemetry is imported and `TRACER` is None: the pipeline asks
`ctx.trace is None` once per request and picks untraced code, so the hot path pays one `if`.

Spans:
- the request (SERVER kind, or INTERNAL under the stage that made it when it is a layer's own call:
  a summary, an embedding), named `{operation} {requested model}`, from the pipeline's start to its
  end (a stream's span ends in the stream's `finally`, client disconnects included); a W3C
  `traceparent` the client sent is its parent;
- `stage {name}` for each stage's `before` (a cache hit ends the list early: no attempt span);
- `{operation} {upstream model}` (CLIENT kind) for each upstream attempt in dispatch, retries and
  fallbacks included; a stream's attempt ends at its first chunk.

Attributes follow the OpenTelemetry GenAI semantic conventions (gen_ai.provider.name and the older
gen_ai.system, gen_ai.operation.name, gen_ai.request.model, gen_ai.response.model,
gen_ai.response.id, gen_ai.usage.input_tokens / output_tokens, gen_ai.request.max_tokens /
temperature / top_p, gen_ai.response.finish_reasons) plus gateway.* (org id, request id, cache
result, mode, attempts, charge / benchmark / saved micros). No prompt or completion text is ever
put on a span: the gateway has no content-logging setting.

Failure mode: tracing is observability only. A span that cannot be built or exported is dropped
(the SDK logs it); the request goes on.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

TRACER: Any = None  # an opentelemetry Tracer once install() ran; None means off
_provider: Any = None

OPERATIONS = {"chat.completions": "chat", "messages": "chat", "responses": "chat", "embeddings": "embeddings",
              "messages.count_tokens": "count_tokens", "compression.summary": "chat"}
# provider kind -> gen_ai.provider.name (the conventions' well-known values where there is one)
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "bedrock": "aws.bedrock", "gemini": "gcp.gemini",
                  "openrouter": "openrouter", "ollama": "ollama"}
MAX_TOKEN_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
# A finish reason as a stream writes it: chat and messages; Responses' terminal event (its status).
FINISH_IN_STREAM = re.compile(rb'"(?:finish_reason|stop_reason)"\s*:\s*"([a-z_]{1,40})"')
RESPONSES_END = re.compile(rb'"type"\s*:\s*"response\.(completed|incomplete|failed)"')


def init_app(app: Any) -> None:
    """Turn tracing on when the settings name an OTLP endpoint (once per process)."""
    settings = app.extensions["settings"]
    if settings.otel_endpoint and TRACER is None:
        install(endpoint=settings.otel_endpoint, service_name=settings.otel_service_name)


def install(exporter: Any = None, *, endpoint: str | None = None, service_name: str = "gateway") -> None:
    """Start tracing: to `exporter` span by span (tests: the SDK's InMemorySpanExporter), or to the
    OTLP/HTTP `endpoint` in batches. Replaces a tracer installed before."""
    global TRACER, _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    uninstall()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        assert endpoint
        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider, TRACER = provider, provider.get_tracer("gateway")
    log.info("tracing on (%s)", "test exporter" if exporter is not None else endpoint)


def flush() -> None:
    if _provider is not None:
        _provider.force_flush()


def uninstall() -> None:
    """Stop tracing, exporting what is pending."""
    global TRACER, _provider
    provider, TRACER, _provider = _provider, None, None
    if provider is not None:
        provider.shutdown()


# ---- the request ---------------------------------------------------------------------------------

def begin(ctx: Any) -> None:
    """Open the request's span on `ctx.trace` (a sub-request's parent is the stage running it)."""
    try:
        _begin(ctx)
    except Exception:  # observability only: the request goes on untraced
        log.warning("request span failed", exc_info=True)


def _begin(ctx: Any) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    parent = trace.get_current_span()
    if parent.get_span_context().is_valid:  # a layer's own call, inside a stage span
        kind, context = SpanKind.INTERNAL, None
    else:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        kind, context = SpanKind.SERVER, TraceContextTextMapPropagator().extract(_headers(ctx.headers))
    operation = OPERATIONS.get(ctx.endpoint, ctx.endpoint)
    started = time.time_ns() - int((time.perf_counter() - ctx.started) * 1e9)
    # named when it ends (`{operation} {model}`): the model is known only once the body is decoded
    span = TRACER.start_span(operation, context=context, kind=kind, start_time=started)
    span.set_attributes({"gen_ai.operation.name": operation, "gateway.endpoint": ctx.endpoint,
                         "gateway.request_id": ctx.request_id})
    ctx.trace = span


def _headers(headers: Any) -> dict[str, str]:
    value = headers.get("traceparent") if headers else None
    if not value:
        return {}
    out = {"traceparent": value}
    if state := headers.get("tracestate"):
        out["tracestate"] = state
    return out


def end(ctx: Any, reply: Any) -> None:
    """Close the request's span with what the request came to (called once, after metering)."""
    span, ctx.trace = ctx.trace, None
    if span is None:
        return
    try:
        span.update_name(f"{OPERATIONS.get(ctx.endpoint, ctx.endpoint)} {ctx.requested_model}".strip())
        span.set_attributes(_request_attributes(ctx, reply))
        if ctx.error is not None:
            _failed(span, ctx.error)
    except Exception:  # observability only: never the request's failure
        log.warning("span attributes failed", exc_info=True)
    span.end()


def _request_attributes(ctx: Any, reply: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.request.model": ctx.requested_model,
        "http.response.status_code": ctx.status,
        "gateway.cache": ctx.cache,
        "gateway.attempts": ctx.attempts,
        "gateway.charge_micros": ctx.charge_micros,
        "gateway.benchmark_micros": ctx.benchmark_micros,
        "gateway.saved_micros": ctx.saved_micros,
    }
    if ctx.principal is not None:
        attrs["gateway.org_id"] = ctx.principal.org_id
        if ctx.principal.app_id is not None:
            attrs["gateway.app_id"] = ctx.principal.app_id
    if ctx.cache_mechanism:
        attrs["gateway.cache_mechanism"] = ctx.cache_mechanism
    if ctx.mode:
        attrs["gateway.mode"] = ctx.mode
    route = ctx.route
    if route is not None:
        name = PROVIDER_NAMES.get(route.provider.kind, route.provider.kind)
        attrs.update({"gen_ai.provider.name": name, "gen_ai.system": name, "gateway.provider": route.provider.name,
                      "gen_ai.response.model": route.upstream_model, "gateway.model": route.model_slug})
    if ctx.upstream_id:
        attrs["gen_ai.response.id"] = ctx.upstream_id
    if ctx.usage.total or ctx.error is None:
        attrs["gen_ai.usage.input_tokens"] = ctx.usage.input_tokens
        attrs["gen_ai.usage.output_tokens"] = ctx.usage.output_tokens
        if ctx.usage_estimated:
            attrs["gateway.usage_estimated"] = True
    body = ctx.body if isinstance(ctx.body, dict) else {}
    for field in MAX_TOKEN_FIELDS:
        if type(body.get(field)) is int:
            attrs["gen_ai.request.max_tokens"] = body[field]
            break
    for field in ("temperature", "top_p"):
        if type(body.get(field)) in (int, float):
            attrs[f"gen_ai.request.{field}"] = body[field]
    reasons = ctx.extra.get("trace_finish") or (_finish_reasons(reply.body) if reply is not None and reply.body else [])
    if reasons:
        attrs["gen_ai.response.finish_reasons"] = reasons
    return attrs


def _finish_reasons(body: bytes) -> list[str]:
    """Finish reasons of a whole reply in any dialect: chat's choices, messages' stop_reason,
    responses' status."""
    import orjson

    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(obj, dict):
        return []
    if isinstance(obj.get("choices"), list):
        return [c["finish_reason"] for c in obj["choices"] if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)]
    for key in ("stop_reason", "status"):
        if isinstance(obj.get(key), str):
            return [obj[key]]
    return []


def watch(ctx: Any, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A stream's chunks as they pass, noting the finish reasons they carry; closing this closes them."""
    reasons: list[str] = []
    ctx.extra["trace_finish"] = reasons
    pattern = RESPONSES_END if ctx.endpoint == "responses" else FINISH_IN_STREAM
    try:
        for chunk in chunks:
            for match in pattern.finditer(chunk):
                reasons.append(match.group(1).decode())
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


# ---- stages and attempts -------------------------------------------------------------------------

def stage(ctx: Any, name: str, before: Callable[[], Any]) -> Any:
    """Run a stage's `before` inside its span, the current span while it runs (so a sub-request it
    makes is its child)."""
    from opentelemetry import trace

    tracer = TRACER
    if tracer is None:  # turned off while the request ran
        return before()
    span = tracer.start_span(f"stage {name}", context=trace.set_span_in_context(ctx.trace),
                             attributes={"gateway.stage": name})
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            result = before()
    except BaseException as e:
        _failed(span, e)
        span.end()
        raise
    if result is not None:
        span.set_attribute("gateway.answered", True)  # a cache hit: the stages after it did not run
    span.end()
    return result


def attempt(ctx: Any, route: Any, number: int) -> Any:
    """Open the span of one upstream attempt (end it with attempt_done); None when tracing was
    turned off while the request ran, or the span could not be built."""
    try:
        return _attempt(ctx, route, number)
    except Exception:  # observability only: the attempt goes on untraced
        log.warning("attempt span failed", exc_info=True)
        return None


def _attempt(ctx: Any, route: Any, number: int) -> Any:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    if TRACER is None:
        return None
    operation = OPERATIONS.get(ctx.endpoint, ctx.endpoint)
    name = PROVIDER_NAMES.get(route.provider.kind, route.provider.kind)
    span = TRACER.start_span(f"{operation} {route.upstream_model}", kind=SpanKind.CLIENT,
                             context=trace.set_span_in_context(ctx.trace))
    attrs = {"gen_ai.operation.name": operation, "gen_ai.provider.name": name, "gen_ai.system": name,
             "gen_ai.request.model": route.upstream_model, "gateway.provider": route.provider.name,
             "gateway.attempt": number}
    address = urlsplit(route.provider.base_url or "")
    if address.hostname:
        attrs["server.address"] = address.hostname
        if address.port:
            attrs["server.port"] = address.port
    span.set_attributes(attrs)
    return span


def attempt_done(span: Any, ctx: Any, error: BaseException | None = None) -> None:
    if error is not None:
        _failed(span, error)
    elif ctx.mode:
        span.set_attribute("gateway.mode", ctx.mode)
    span.end()


def _failed(span: Any, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    status = getattr(error, "status", None)
    kind = getattr(error, "code", None) or getattr(error, "type", None) or type(error).__name__
    span.set_attribute("error.type", str(kind))
    if isinstance(status, int):
        span.set_attribute("http.response.status_code", status)
    span.set_status(Status(StatusCode.ERROR, str(kind)))  # never the message: an upstream's may quote the prompt
