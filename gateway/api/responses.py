"""GET /v1/responses/{id}: a stored response, own org only (POST /v1/responses is an inference route)."""

from __future__ import annotations

import orjson
from flask import Response, request

from gateway.api import bp, error_response
from gateway.errors import GatewayError, NotFound, PermissionDenied
from gateway.pipeline import auth
from gateway.pipeline.context import RequestContext
from gateway.pipeline.gate import INFERENCE_SCOPES
from gateway.responses_store import STORE


@bp.get("/responses/<response_id>")
def get_response(response_id: str):
    """The stored response object. Another org's id is answered exactly like an unknown one."""
    try:
        key = auth.extract_key(request.headers)
        ctx = RequestContext("responses.get", "openai", b"", request.headers, key)
        auth.before(ctx)
        assert ctx.principal is not None
        if ctx.principal.scope not in INFERENCE_SCOPES:
            raise PermissionDenied(
                f"This API key has the '{ctx.principal.scope}' scope and cannot read responses.")
        stored = STORE.get(ctx.principal.org_id, response_id)
        if stored is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    except GatewayError as e:
        return error_response(e, "openai")
    return Response(orjson.dumps(stored.response), content_type="application/json")
