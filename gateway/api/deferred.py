"""`GET /v1/requests/{id}/result`: the result of a request deferred into a batch (x-gateway-deadline
or its app's default deferral).

Answered from the database (services/arbitrage.py `outcome`), so any worker answers for any
request: 202 with `status` queued (waiting for its batch) or in_progress (its batch runs) until the
result is in; then the result as the synchronous call would have answered it: 200 and the chat
completion, or the request's error status and an OpenAI error, with the cost headers
(x-gateway-benchmark-cost, x-gateway-charge, x-gateway-saved). Within the key's org; any other id is
a 404. The result stays here whether or not the app's webhook received it."""

from __future__ import annotations

import orjson
from flask import Response

from gateway import db
from gateway.api.blueprint import accepts, bp, error_response
from gateway.api.principals import as_json, principal
from gateway.errors import GatewayError, NotFound
from gateway.services import arbitrage


@bp.get("/requests/<request_id>/result")
@accepts()
def request_result(request_id: str):
    try:
        p = principal()
        with db.session_scope() as session:
            found = arbitrage.outcome(session, p.org_id, request_id)
        if found is None:
            raise NotFound(f"No request with id '{request_id[:64]}'.")
    except GatewayError as e:
        return error_response(e, "openai")
    if found.state != "done":
        body = {"id": found.request_id, "object": "gateway.deferred_request", "status": found.status}
        if found.batch_id:
            body["batch_id"] = found.batch_id
        return as_json(body, 202)
    return Response(orjson.dumps(found.body), status=found.status_code, content_type="application/json",
                    headers=found.figures)
