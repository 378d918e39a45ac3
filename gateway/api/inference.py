"""The shared shape of every inference view: body -> context -> pipeline -> response."""

from __future__ import annotations

from flask import Response, request

from gateway import pipeline
from gateway.api import error_response
from gateway.errors import GatewayError
from gateway.pipeline import auth, meter
from gateway.pipeline.context import RequestContext

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def handle(endpoint: str, dialect: str, raw: bytes | None = None) -> Response:
    """Run one inference request; `raw` replaces the request body (for thin aliases)."""
    ctx = RequestContext(
        endpoint=endpoint,
        dialect=dialect,
        raw=request.get_data(cache=False) if raw is None else raw,
        headers=request.headers,
        raw_key=auth.extract_key(request.headers),
    )
    try:
        reply = pipeline.run(ctx)
    except GatewayError as e:
        return error_response(e, dialect, ctx.request_id)
    if reply.is_stream:
        headers = {**meter.estimate(ctx), **STREAM_HEADERS, **reply.headers}
        return Response(reply.chunks, status=reply.status, content_type=reply.content_type, headers=headers,
                        direct_passthrough=True)
    headers = {**meter.cost_headers(ctx), **reply.headers}
    return Response(reply.body, status=reply.status, content_type=reply.content_type, headers=headers)
