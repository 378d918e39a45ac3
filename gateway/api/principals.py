"""Who is calling a /v1 read or account route, and the input checks those routes share.

Every failure is a GatewayError, which the routes render in OpenAI's error shape: a missing or
wrong key 401, a key without the admin scope 403, a bad parameter or body 400 naming it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from flask import Response, request

from gateway.errors import InvalidJSON, InvalidRequest, PermissionDenied
from gateway.memo import Principal
from gateway.pipeline import auth
from gateway.pipeline.context import RequestContext


def principal() -> Principal:
    """Any valid key of the org, whatever its scope."""
    ctx = RequestContext("account", "openai", b"", request.headers, auth.extract_key(request.headers))
    auth.before(ctx)
    assert ctx.principal is not None
    return ctx.principal


def admin_principal() -> Principal:
    p = principal()
    if p.scope != "admin":
        raise PermissionDenied(f"This API key has the '{p.scope}' scope; this route needs an 'admin' key.")
    return p


def only_params(allowed: Iterable[str]) -> None:
    """Unknown query parameters are a 400: a typo must not silently widen a query."""
    known = set(allowed)
    for name in request.args:
        if name not in known:
            raise InvalidRequest(f"Unknown query parameter '{name[:64]}'.", param=name[:64])


def json_object() -> dict[str, Any]:
    try:
        body = orjson.loads(request.get_data(cache=False) or b"")
    except orjson.JSONDecodeError:
        raise InvalidJSON("We could not parse the JSON body of your request. The body must be valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def as_json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status=status, content_type="application/json")
