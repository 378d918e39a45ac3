"""Request logs of the key's org: `GET /v1/requests` (newest first, paged, filterable) and
`GET /v1/requests/{id}`. Read through the ledger's (org_id, created_at) index; another org's
request is a 404. Filters: `start`, `end` (as /v1/usage/summary), `model`, `status`, `key`, `user`,
`app`, `cache`; paging: `limit` (1-100) and `after` (the last request id of the previous page)."""

from __future__ import annotations

from typing import Any

from flask import request
from sqlalchemy import and_, or_, select

from gateway import db
from gateway.api.account import epoch, page_limit
from gateway.api.blueprint import accepts, bp, error_response
from gateway.api.principals import as_json, principal
from gateway.api.usage import parse_time
from gateway.errors import GatewayError, InvalidRequest, NotFound
from gateway.ledger.pricing import usd
from gateway.models import LedgerEntry

PARAMS = ("start", "end", "model", "status", "key", "user", "app", "cache", "limit", "after")
INT_FILTERS = {"status": LedgerEntry.status, "key": LedgerEntry.key_id, "user": LedgerEntry.user_id,
               "app": LedgerEntry.app_id}


def request_json(r: LedgerEntry) -> dict[str, Any]:
    return {
        "id": r.request_id, "object": "gateway.request", "created_at": epoch(r.created_at),
        "endpoint": r.endpoint, "model": r.requested_model, "resolved_model": r.model, "provider": r.provider,
        "upstream_model": r.upstream_model, "upstream_id": r.upstream_id, "byok": r.byok, "stream": r.stream,
        "status": r.status, "error": {"type": r.error_type, "message": r.error_message} if r.error_type else None,
        "usage": {"input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
                  "cached_tokens": r.cached_tokens, "cache_write_tokens": r.cache_write_tokens,
                  "estimated": r.usage_estimated},
        "benchmark_cost": usd(r.benchmark_micros), "benchmark_estimated": r.benchmark_estimated,
        "charge": usd(r.charge_micros), "saved": usd(r.saved_micros),
        "saved_by": dict(part.split("=", 1) for part in r.saved_by.split(",") if "=" in part),
        "cache": r.cache, "latency_ms": r.latency_ms, "ttfb_ms": r.ttfb_ms, "attempts": r.attempts,
        "key_id": r.key_id, "user_id": r.user_id, "app_id": r.app_id,
    }


@bp.get("/requests")
@accepts(*PARAMS)
def requests_list():
    try:
        p = principal()
        args = request.args
        limit = page_limit()
        q = select(LedgerEntry).where(LedgerEntry.org_id == p.org_id)
        if args.get("start"):
            q = q.where(LedgerEntry.created_at >= parse_time("start", args["start"]))
        if args.get("end"):
            q = q.where(LedgerEntry.created_at < parse_time("end", args["end"], is_end=True))
        if args.get("model"):
            q = q.where(LedgerEntry.requested_model == args["model"])
        if args.get("cache"):
            q = q.where(LedgerEntry.cache == args["cache"])
        for name, column in INT_FILTERS.items():
            if (raw := args.get(name)) is not None:
                if not raw.isdigit() or len(raw) > 18:
                    raise InvalidRequest(f"'{name}' must be an integer.", param=name)
                q = q.where(column == int(raw))
        with db.session_scope() as session:
            if after := args.get("after"):
                cursor = session.execute(select(LedgerEntry.created_at, LedgerEntry.id).where(
                    LedgerEntry.request_id == after[:64], LedgerEntry.org_id == p.org_id)).first()
                if cursor is None:
                    raise InvalidRequest(f"'after' names no request of yours: '{after[:64]}'.", param="after")
                q = q.where(or_(LedgerEntry.created_at < cursor[0],
                                and_(LedgerEntry.created_at == cursor[0], LedgerEntry.id < cursor[1])))
            rows = list(session.scalars(q.order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc())
                                        .limit(limit + 1)))
            data = [request_json(r) for r in rows[:limit]]
    except GatewayError as e:
        return error_response(e, "openai")
    return as_json({"object": "list", "data": data, "has_more": len(rows) > limit,
                    "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})


@bp.get("/requests/<request_id>")
@accepts()
def request_get(request_id: str):
    try:
        p = principal()
        with db.session_scope() as session:
            row = session.scalar(select(LedgerEntry).where(LedgerEntry.request_id == request_id[:64]))
            if row is None or row.org_id != p.org_id:  # another org's request does not exist for you
                raise NotFound(f"No request with id '{request_id[:64]}'.")
            out = request_json(row)
    except GatewayError as e:
        return error_response(e, "openai")
    return as_json(out)
