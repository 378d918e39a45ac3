"""/v1 blueprint: JSON only, bearer or x-api-key auth, no session, no CSRF."""

from __future__ import annotations

import orjson
from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import HTTPException

from gateway import errors

bp = Blueprint("v1", __name__)


def dialect_for(path: str) -> str:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def error_response(e: errors.GatewayError, dialect: str, request_id: str | None = None) -> Response:
    resp = Response(orjson.dumps(errors.render(e, dialect)), status=e.status, content_type="application/json")
    if request_id:
        resp.headers["x-request-id"] = request_id
    retry_after = getattr(e, "retry_after", None)
    if retry_after is not None:
        resp.headers["retry-after"] = str(int(retry_after) if float(retry_after).is_integer() else retry_after)
    for k, v in e.headers.items():
        resp.headers[k] = v
    return resp


_HTTP_ERRORS = {
    400: errors.InvalidRequest, 404: errors.NotFound, 405: errors.MethodNotAllowed, 413: errors.PayloadTooLarge,
}


def _http_error(e: HTTPException):
    """Werkzeug's own errors (unknown route, wrong method, body too large) in the API's shapes."""
    if not request.path.startswith(("/v1/", "/api/")):
        return e
    cls = _HTTP_ERRORS.get(e.code or 500, errors.InternalError)
    if cls is errors.PayloadTooLarge:
        message = "The request body is too large."
    elif cls is errors.NotFound:
        message = f"Unknown request URL: {request.method} {request.path}."
    elif cls is errors.MethodNotAllowed:
        message = f"Method {request.method} is not allowed for {request.path}."
    else:
        message = e.description or "Bad request."
    return error_response(cls(message), dialect_for(request.path))


def init_app(app: Flask) -> None:
    from gateway.api import chat, compat, embeddings, health, messages, models, providers, responses, usage  # noqa: F401  (routes register on import)

    app.register_blueprint(bp, url_prefix="/v1")
    app.register_blueprint(compat.bp, url_prefix="/api/v1")
    app.register_blueprint(health.bp)
    app.register_error_handler(HTTPException, _http_error)
