"""The shared shape of every inference view: body -> context -> pipeline -> response."""

from __future__ import annotations

from flask import Response, request

from gateway import pipeline
from gateway.api import error_response
from gateway.errors import GatewayError
from gateway.pipeline import auth, meter
from gateway.pipeline.context import RequestContext

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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


def handle(endpoint: str, dialect: str, raw: bytes | None = None) -> Response:
    """Run one inference request; `raw` replaces the request body (for thin aliases)."""
    headers = Headers(request.environ)
    ctx = RequestContext(
        endpoint=endpoint,
        dialect=dialect,
        raw=request.get_data(cache=False) if raw is None else raw,
        headers=headers,
        raw_key=auth.extract_key(headers),
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
