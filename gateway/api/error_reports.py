"""POST /v1/error-reports: a client's own error report (a failed tool call, a crash in an agent),
kept beside the gateway's errors in the console's Error reports (source "client").

Any valid key (inference, read or admin); the report belongs to the key's org, user and app. Body:
a JSON object with `type` and `message` (required), `model`, `agent`, `version`, `request_id`
(optional), every one a string within its cap; anything else is a 400 in OpenAI's error shape
naming the field. At most GATEWAY_ERROR_REPORTS_PER_MINUTE per key (60 by default; a token
bucket): beyond, 429 with `retry-after`. The row goes to the ledger writer's queue (no database write here): 202.
"""

from __future__ import annotations

import math
import time

import orjson
from flask import Response, current_app, request

from gateway.api.blueprint import accepts, bp, error_response
from gateway.api.principals import principal
from gateway.errors import GatewayError, InvalidJSON, InvalidRequest, PayloadTooLarge, RateLimited
from gateway.ledger.writer import WRITER
from gateway.models import ErrorReport
from gateway.stores.counters import COUNTERS, Limit

BODY_MAX = 16 * 1024
FIELDS = {"type": 64, "message": 2000, "model": 160, "agent": 120, "version": 64, "request_id": 64}
REQUIRED = ("type", "message")


def parse(raw: bytes) -> dict[str, str]:
    """The report's fields, checked; InvalidRequest names the first one that is wrong."""
    if len(raw) > BODY_MAX:
        raise PayloadTooLarge(f"An error report has at most {BODY_MAX} bytes.")
    try:
        body = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:  # nesting beyond orjson's limit lands here too
        raise InvalidJSON("We could not parse the JSON body of your request. The body must be valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for name in body:
        if name not in FIELDS:
            shown = str(name)[:64]
            raise InvalidRequest(f"Unknown parameter '{shown}'.", param=shown)
    out: dict[str, str] = {}
    for name, cap in FIELDS.items():
        value = body.get(name)
        if value is None:
            if name in REQUIRED:
                raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"'{name}' must be a string.", param=name)
        value = value.replace("\x00", "")  # NUL: not storable in PostgreSQL text, never meaningful here
        if len(value) > cap:
            raise InvalidRequest(f"'{name}' has at most {cap} characters.", param=name)
        if name in REQUIRED and not value.strip():
            raise InvalidRequest(f"'{name}' must not be empty.", param=name)
        out[name] = value
    return out


@bp.post("/error-reports")
@accepts()
def error_report_create():
    try:
        p = principal()
        per_minute = current_app.extensions["settings"].error_reports_per_minute
        state = COUNTERS.take([Limit(f"error-reports:key:{p.key_id}", per_minute, 1)], time.monotonic())[0]
        if state.retry_after:
            e = RateLimited(f"Rate limit reached for error reports: {per_minute} per minute per key.")
            e.retry_after = math.ceil(state.retry_after)
            raise e
        fields = parse(request.get_data(cache=False))
    except GatewayError as e:
        return error_response(e, "openai")
    WRITER.enqueue_record(ErrorReport, {
        "org_id": p.org_id, "source": "client", "type": fields["type"].strip(), "message": fields["message"],
        "model": fields.get("model", ""), "agent": fields.get("agent", ""), "version": fields.get("version", ""),
        "request_id": fields.get("request_id", ""), "status": None, "key_id": p.key_id, "user_id": p.user_id,
        "app_id": p.app_id})
    return Response(orjson.dumps({"object": "error_report", "status": "accepted"}), status=202,
                    content_type="application/json")
