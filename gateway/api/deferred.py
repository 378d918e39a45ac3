"""`GET /v1/requests/{id}/result`: the result of a request deferred into a batch (x-gateway-deadline).

202 with `status` queued (waiting for its batch) or in_progress (its batch runs) until the result is
in; then the result as the synchronous call would have answered it: 200 and the chat completion, or
the request's error status and an OpenAI error. Within the key's org; any other id is a 404."""

from __future__ import annotations

import orjson
from flask import Response
from sqlalchemy import select

from gateway import db
from gateway.api.blueprint import accepts, bp, error_response
from gateway.api.principals import as_json, principal
from gateway.errors import GatewayError, NotFound
from gateway.ledger.pricing import usd
from gateway.models import Batch, BatchRequest
from gateway.services import arbitrage
from gateway.services.batch_common import unz


@bp.get("/requests/<request_id>/result")
@accepts()
def request_result(request_id: str):
    try:
        p = principal()
        rid = request_id[:64]
        if arbitrage.QUEUED.get(rid) == p.org_id:
            return as_json({"id": rid, "object": "gateway.deferred_request", "status": "queued"}, 202)
        with db.session_scope() as session:
            r = session.scalar(select(BatchRequest).where(BatchRequest.request_id == rid,
                                                          BatchRequest.org_id == p.org_id))
            if r is None:
                raise NotFound(f"No request with id '{rid}'.")
            batch = session.get(Batch, r.batch_id)
            if r.status == "pending" or not batch.settled:
                return as_json({"id": rid, "object": "gateway.deferred_request", "status": "in_progress",
                                "batch_id": batch.public_id}, 202)
            result = orjson.loads(unz(r.result_z)) if r.result_z else {}
            figures = {"x-request-id": rid, "x-gateway-benchmark-cost": usd(r.benchmark_micros),
                       "x-gateway-charge": usd(r.charge_micros), "x-gateway-saved": usd(r.saved_micros)}
    except GatewayError as e:
        return error_response(e, "openai")
    if r.status == "succeeded":
        return Response(orjson.dumps(result.get("body")), status=200, content_type="application/json",
                        headers=figures)
    error = result.get("error") or {}
    body = result.get("body") if isinstance(result.get("body"), dict) and "error" in result["body"] else {
        "error": {"message": str(error.get("message") or f"The request was {r.status}."),
                  "type": "api_error", "param": None, "code": str(error.get("code") or r.status)}}
    status = result.get("status_code") or 502
    return Response(orjson.dumps(body), status=status if 400 <= status < 600 else 502,
                    content_type="application/json", headers=figures)
