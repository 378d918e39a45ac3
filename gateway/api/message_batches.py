"""Anthropic's Message Batches API on /v1: `POST /v1/messages/batches`, `GET /v1/messages/batches/{id}`,
`GET /v1/messages/batches/{id}/results` (JSONL), `POST /v1/messages/batches/{id}/cancel`,
`GET /v1/messages/batches`; and the Atlas paths `POST /api/v1/llm/batch` (the same body) and
`GET /api/v1/llm/batch/{id}` (status, counts and the usage and cost written back). Thin over
services/batches.py; every read is within the key's org; errors are Anthropic-shaped."""

from __future__ import annotations

import functools
import re
from datetime import UTC
from typing import Any

import orjson
from flask import Response, request

from gateway import db
from gateway.api.account import page_limit
from gateway.api.blueprint import accepts, atlas, bp, error_response
from gateway.api.principals import as_json, json_object, principal
from gateway.errors import GatewayError, InvalidRequest
from gateway.ledger.pricing import usd
from gateway.models import Batch
from gateway.providers.batch_api import TERMINAL
from gateway.services import batches
from gateway.services.batches import Line, unz

CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def anthropic_errors(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except GatewayError as e:
            return error_response(e, "anthropic")
    return wrapped


def rfc3339(value) -> str | None:
    return None if value is None else value.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def ended(b: Batch) -> bool:
    return b.settled and b.status in TERMINAL


def batch_json(b: Batch) -> dict[str, Any]:
    """A MessageBatch as Anthropic shapes it."""
    done = ended(b)
    if done:
        status = "ended"
    elif b.status == "cancelling":
        status = "canceling"
    else:
        status = "in_progress"
    counts = {"processing": 0 if done else b.total, "succeeded": b.succeeded if done else 0,
              "errored": b.errored if done else 0, "canceled": b.canceled if done else 0,
              "expired": b.expired if done else 0}
    ended_at = b.completed_at or b.cancelled_at or b.expired_at or b.failed_at
    return {"id": b.public_id, "type": "message_batch", "processing_status": status, "request_counts": counts,
            "ended_at": rfc3339(ended_at) if done else None, "created_at": rfc3339(b.created_at),
            "expires_at": rfc3339(b.expires_at), "archived_at": None,
            "cancel_initiated_at": rfc3339(b.cancelling_at),
            "results_url": f"{request.host_url}v1/messages/batches/{b.public_id}/results" if done else None}


def parse_requests(body: dict[str, Any]) -> list[Line]:
    reqs = body.get("requests")
    if not isinstance(reqs, list) or not reqs:
        raise InvalidRequest("requests: must be a non-empty list of {custom_id, params}.", param="requests")
    if len(reqs) > batches.CONFIG.max_lines:
        raise InvalidRequest(f"requests: at most {batches.CONFIG.max_lines} requests per batch.", param="requests")
    lines, seen = [], set()
    for i, item in enumerate(reqs):
        where = f"requests.{i}"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where}: must be an object with custom_id and params.", param="requests")
        custom_id, params = item.get("custom_id"), item.get("params")
        if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
            raise InvalidRequest(f"{where}.custom_id: must be 1 to 64 letters, digits, '-' or '_'.", param="requests")
        if custom_id in seen:
            raise InvalidRequest(f"{where}.custom_id: duplicate custom_id '{custom_id}'; each must be unique.",
                                 param="requests")
        seen.add(custom_id)
        if not isinstance(params, dict) or not isinstance(params.get("model"), str) or not params["model"]:
            raise InvalidRequest(f"{where}.params: must be a Messages request with a model.", param="requests")
        if params.get("stream") is True:
            raise InvalidRequest(f"{where}.params.stream: batch requests cannot stream.", param="requests")
        lines.append(Line(i + 1, custom_id, params))
    return lines


def _create():
    p = principal()
    body = json_object()
    lines = parse_requests(body)
    raw = orjson.dumps(body["requests"], option=orjson.OPT_SORT_KEYS)
    return batches.submit(p, api="anthropic", endpoint="messages", client_endpoint="/v1/messages", lines=lines,
                          input_file_id=None, metadata=None, idempotency_key=request.headers.get("Idempotency-Key"),
                          print_=batches.fingerprint("anthropic", "/v1/messages", raw))


@bp.post("/messages/batches")
@accepts("beta")
@anthropic_errors
def message_batches_create():
    return as_json(batch_json(_create()))


@bp.get("/messages/batches/<batch_id>")
@accepts("beta")
@anthropic_errors
def message_batches_get(batch_id: str):
    p = principal()
    with db.session_scope() as session:
        return as_json(batch_json(batches.get(session, p.org_id, batch_id[:64], "anthropic")))


def result_line(r) -> dict[str, Any]:
    result = orjson.loads(unz(r.result_z)) if r.result_z else {}
    if r.status == "succeeded":
        return {"custom_id": r.custom_id, "result": {"type": "succeeded", "message": result.get("body")}}
    if r.status in ("canceled", "expired"):
        return {"custom_id": r.custom_id, "result": {"type": r.status}}
    error = result.get("error")
    if not (isinstance(error, dict) and error.get("type") == "error"):  # not already Anthropic's shape
        message = (error or {}).get("message") if isinstance(error, dict) else None
        error = {"type": "error", "error": {"type": "api_error", "message": message or "The request failed."}}
    return {"custom_id": r.custom_id, "result": {"type": "errored", "error": error}}


@bp.get("/messages/batches/<batch_id>/results")
@accepts("beta")
@anthropic_errors
def message_batches_results(batch_id: str):
    p = principal()
    with db.session_scope() as session:
        b = batches.get(session, p.org_id, batch_id[:64], "anthropic")
        if not ended(b):
            raise InvalidRequest(f"Message Batch {b.public_id} has not yet ended; results are available once "
                                 "processing_status is 'ended'.")
        lines = [result_line(r) for r in batches.requests_of(session, b.id)]
    return Response(batches.iter_lines(lines), content_type="application/binary")


@bp.post("/messages/batches/<batch_id>/cancel")
@accepts("beta")
@anthropic_errors
def message_batches_cancel(batch_id: str):
    p = principal()
    return as_json(batch_json(batches.cancel(p.org_id, batch_id[:64], "anthropic")))


@bp.get("/messages/batches")
@accepts("limit", "after_id", "before_id", "beta")
@anthropic_errors
def message_batches_list():
    p = principal()
    limit = page_limit()
    with db.session_scope() as session:
        rows, more = batches.page(session, p.org_id, "anthropic", limit, request.args.get("after_id"),
                                  request.args.get("before_id"))
        data = [batch_json(b) for b in rows]
    return as_json({"data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None})


# ---- Atlas ---------------------------------------------------------------------------------------

def atlas_json(b: Batch) -> dict[str, Any]:
    """Status, counts and the usage and cost written back (once the batch has settled)."""
    return {"id": b.public_id, "object": "batch", "api": b.api, "status": b.status,
            "processing_status": batch_json(b)["processing_status"], "counts": batches.counts(b),
            "usage": {"input_tokens": b.input_tokens, "output_tokens": b.output_tokens},
            "cost": {"benchmark": usd(b.benchmark_micros), "charge": usd(b.charge_micros),
                     "saved": usd(b.saved_micros), "held": usd(0 if b.settled else b.held_micros)},
            "created_at": rfc3339(b.created_at),
            "ended_at": rfc3339(b.completed_at or b.cancelled_at or b.expired_at or b.failed_at),
            "results_url": (f"{request.host_url}v1/messages/batches/{b.public_id}/results" if b.api == "anthropic"
                            else f"{request.host_url}v1/files/{b.output_file_id}/content" if b.output_file_id
                            else None) if ended(b) else None}


@atlas.post("/llm/batch")
@accepts()
@anthropic_errors
def atlas_batch_create():
    return as_json(batch_json(_create()))


@atlas.get("/llm/batch/<batch_id>")
@accepts()
@anthropic_errors
def atlas_batch_get(batch_id: str):
    p = principal()
    with db.session_scope() as session:
        return as_json(atlas_json(batches.get(session, p.org_id, batch_id[:64])))
