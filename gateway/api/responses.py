"""GET and DELETE /v1/responses/{id}: a stored response, own org only (POST /v1/responses is an
inference route, see gateway.api.inference)."""

from __future__ import annotations

import orjson
from flask import Response, request

from gateway.api.blueprint import bp, error_response
from gateway.errors import GatewayError, NotFound, PermissionDenied, UpstreamError
from gateway.memo import MEMO, ProviderInfo
from gateway.pipeline import auth
from gateway.pipeline.context import RequestContext
from gateway.pipeline.gate import INFERENCE_SCOPES
from gateway.providers import http
from gateway.stores.responses import STORE, Stored


def _owned(response_id: str, verb: str) -> Stored:
    """The caller's stored response. Another org's id is answered exactly like an unknown one."""
    key = auth.extract_key(request.headers)
    ctx = RequestContext("responses.get", "openai", b"", request.headers, key)
    auth.before(ctx)
    assert ctx.principal is not None
    if ctx.principal.scope not in INFERENCE_SCOPES:
        raise PermissionDenied(f"This API key has the '{ctx.principal.scope}' scope and cannot {verb} responses.")
    stored = STORE.get(ctx.principal.org_id, response_id)
    if stored is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return stored


@bp.get("/responses/<response_id>")
def get_response(response_id: str):
    try:
        stored = _owned(response_id, "read")
    except GatewayError as e:
        return error_response(e, "openai")
    return Response(orjson.dumps(stored.response), content_type="application/json")


@bp.delete("/responses/<response_id>")
def delete_response(response_id: str):
    """Forget a stored response. When the upstream provider holds it too (a pass-through with
    `store`), it is deleted there first: if that fails, nothing is deleted and the client may retry."""
    try:
        stored = _owned(response_id, "delete")
        provider = MEMO.catalog.providers.get(stored.provider) if stored.upstream_stored else None
        if provider is not None:
            _delete_upstream(provider, response_id)
        STORE.delete(stored.org_id, response_id)
    except GatewayError as e:
        return error_response(e, "openai")
    return Response(orjson.dumps({"id": response_id, "object": "response", "deleted": True}),
                    content_type="application/json")


def _delete_upstream(provider: ProviderInfo, response_id: str) -> None:
    headers = {"Authorization": f"Bearer {provider.api_key}"} if provider.api_key else {}
    try:
        resp = http.session_for(provider.base_url).request(
            "DELETE", f"{provider.base_url}/responses/{response_id}", headers=headers)
    except UpstreamError:
        raise UpstreamError("Could not reach the upstream provider to delete the response; retry later.") from None
    if resp.status_code >= 400 and resp.status_code != 404:  # 404: already gone there
        raise UpstreamError(f"The upstream provider refused to delete the response (HTTP {resp.status_code}).")
