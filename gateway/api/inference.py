"""The inference routes: environ -> context -> pipeline -> WSGI response, in front of Flask.

`InferenceRoutes` wraps `app.wsgi_app`: a request for one of ROUTES is served here directly and
everything else (/admin, /models, GET /v1/...) goes on to Flask. Flask's per-request work (request
and app contexts, URL map, session, hooks, a Response object) cost about a fifth of the hot path's
CPU, and none of it is used by the pipeline, which reads the environ and returns bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus

import orjson

from gateway import errors, pipeline
from gateway.errors import GatewayError
from gateway.pipeline import auth, gate, meter
from gateway.pipeline.context import RequestContext
from gateway.services import arbitrage

log = logging.getLogger(__name__)

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


def force_stream(raw: bytes) -> bytes:
    """The body with `stream: true` (the /api/v1/llm/chat/stream alias). A body that is not a JSON
    object (or one too deep to re-encode) is left as sent, so the pipeline rejects it as
    /v1/chat/completions would."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if not isinstance(body, dict) or body.get("stream") is True:
        return raw
    body["stream"] = True
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:  # nested past orjson's limit: decode refuses it, naming the field
        return raw


# path -> (endpoint, client dialect, body rewrite). POST only.
ROUTES: dict[str, tuple[str, str, Callable[[bytes], bytes] | None]] = {
    "/v1/chat/completions": ("chat.completions", "openai", None),
    "/v1/messages": ("messages", "anthropic", None),
    # One policy point: auth and the gate apply, and the ledger gets a row (charged nothing).
    "/v1/messages/count_tokens": ("messages.count_tokens", "anthropic", None),
    "/v1/responses": ("responses", "openai", None),
    "/v1/embeddings": ("embeddings", "openai", None),
    # Compatibility aliases of chat completions for clients of an earlier product shape.
    "/api/v1/llm/chat": ("chat.completions", "openai", None),
    "/api/v1/llm/chat/stream": ("chat.completions", "openai", force_stream),
}


class Headers(dict):
    """Request headers read once from the WSGI environ; `get` is case-insensitive and O(1)
    (werkzeug's EnvironHeaders scans the environ on every lookup, and stages look up a dozen)."""

    __slots__ = ()

    def __init__(self, environ: dict) -> None:
        super().__init__()
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                self[key[5:].replace("_", "-").lower()] = value
        if "CONTENT_TYPE" in environ:
            self["content-type"] = environ["CONTENT_TYPE"]

    def get(self, key: str, default=None):
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str):
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key.lower())


Parts = tuple[int, list[tuple[str, str]], Iterable[bytes]]


def error_parts(e: GatewayError, dialect: str, request_id: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """An error in the client's dialect: status, headers, body."""
    headers = {"Content-Type": "application/json"}
    if request_id:
        headers["x-request-id"] = request_id
    retry_after = getattr(e, "retry_after", None)
    if retry_after is not None:
        headers["retry-after"] = str(int(retry_after) if float(retry_after).is_integer() else retry_after)
    headers.update(e.headers)
    return e.status, headers, orjson.dumps(errors.render(e, dialect))


def read_body(environ: dict, limit: int) -> bytes:
    """The request body, at most `limit` bytes (413 beyond), with or without a Content-Length."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            size = int(length)
        except ValueError:
            raise errors.InvalidRequest("The Content-Length header is not a number.") from None
        if size > limit:
            raise errors.PayloadTooLarge("The request body is too large.")
        return stream.read(size) if size > 0 else b""
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked" or environ.get("wsgi.input_terminated"):
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise errors.PayloadTooLarge("The request body is too large.")
        return body
    return b""


def serve(environ: dict, endpoint: str, dialect: str, rewrite: Callable[[bytes], bytes] | None,
          limit: int) -> Parts:
    """Run one inference request through the pipeline."""
    if environ["REQUEST_METHOD"] != "POST":
        e = errors.MethodNotAllowed(f"Method {environ['REQUEST_METHOD']} is not allowed for {environ['PATH_INFO']}.",
                                    headers={"Allow": "POST"})
        status, headers, body = error_parts(e, dialect)
        return status, list(headers.items()), [body]
    headers = Headers(environ)
    try:
        raw = read_body(environ, limit)
    except GatewayError as e:
        status, err_headers, body = error_parts(e, dialect)
        return status, list(err_headers.items()), [body]
    if endpoint == "chat.completions" and (deadline := arbitrage.deadline_for(headers)) is not None:
        try:  # a request that can wait may go in the org's next provider batch (services/arbitrage.py)
            deferred = arbitrage.defer(headers, rewrite(raw) if rewrite else raw, deadline)
        except GatewayError as e:
            status, err_headers, body = error_parts(e, dialect)
            return status, list(err_headers.items()), [body]
        if deferred is not None:
            payload = orjson.dumps(deferred[1])
            return 202, [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                         ("x-request-id", deferred[0])], [payload]
    ctx = RequestContext(endpoint=endpoint, dialect=dialect, raw=rewrite(raw) if rewrite else raw,
                         headers=headers, raw_key=auth.extract_key(headers))
    try:
        reply = pipeline.run(ctx)
    except GatewayError as e:
        status, err_headers, body = error_parts(e, dialect, ctx.request_id)
        return status, list(err_headers.items()), [body]
    route = {"x-gateway-route": f"{ctx.route.provider.name}/{ctx.route.upstream_model}"} if ctx.route else {}
    if reply.is_stream:
        out = {"Content-Type": reply.content_type, **meter.estimate(ctx), **gate.headers(ctx), **STREAM_HEADERS, **route,
               **reply.headers}
        return reply.status, list(out.items()), reply.chunks
    out = {"Content-Type": reply.content_type, "Content-Length": str(len(reply.body)), **meter.cost_headers(ctx),
           **gate.headers(ctx), **route, **reply.headers}
    return reply.status, list(out.items()), [reply.body]


class InferenceRoutes:
    """WSGI middleware: ROUTES served here, anything else passed to `app` (Flask's wsgi_app)."""

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    def __call__(self, environ: dict, start_response):
        route = ROUTES.get(environ.get("PATH_INFO", ""))
        if route is None:
            return self.app(environ, start_response)
        endpoint, dialect, rewrite = route
        try:
            status, headers, body = serve(environ, endpoint, dialect, rewrite, self.limit)
        except Exception:  # the pipeline records its own failures; this is a bug outside it
            log.exception("inference route %s failed", environ.get("PATH_INFO"))
            code, err_headers, payload = error_parts(
                errors.InternalError("The server had an error while processing your request."), dialect)
            status, headers, body = code, list(err_headers.items()), [payload]
        start_response(STATUS_LINES.get(status) or f"{status} Unknown", headers)
        return body
