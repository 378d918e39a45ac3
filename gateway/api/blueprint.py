"""The /v1 blueprint and its error rendering: JSON only, bearer or x-api-key auth, no session, no CSRF.

Route modules register on `bp` and import it from here, never from the package, so the package can
import them without a cycle. Werkzeug's own errors (unknown route, wrong method, body too large) on
/v1 and /api come back in the API's error shapes, in the dialect of the path."""

from __future__ import annotations

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from gateway import errors

bp = Blueprint("v1", __name__)
atlas = Blueprint("atlas", __name__)  # /api/v1: the paths of an earlier product shape, same handlers


def dialect_for(path: str) -> str:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def error_response(e: errors.GatewayError, dialect: str, request_id: str | None = None) -> Response:
    from gateway.api.inference import error_parts

    status, headers, body = error_parts(e, dialect, request_id)
    return Response(body, status=status, headers=headers)


_HTTP_ERRORS = {
    400: errors.InvalidRequest, 404: errors.NotFound, 405: errors.MethodNotAllowed, 413: errors.PayloadTooLarge,
}


def http_error(e: HTTPException):
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
