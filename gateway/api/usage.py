"""GET /v1/usage/summary (and /api/v1/llm/usage): the key's org's requests, costs and savings by mechanism
and by model; GET /v1/usage/timeseries: the same figures per hour or day, grouped.

Read from the hourly usage rollups (never the raw ledger), so the resolution is one hour: the
window echoed back is the requested one widened to whole hours. `start`/`end` take ISO 8601 dates
or date-times (UTC unless an offset is given) or unix seconds; `end` is exclusive, and a bare date
as `end` includes that whole day. Default: the last 7 days. Money is USD decimal strings;
`by_mechanism` lists every mechanism, those that saved nothing included.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from flask import Response, request

from gateway import db
from gateway.api.blueprint import accepts, atlas, bp, error_response
from gateway.errors import GatewayError, InvalidRequest
from gateway.ledger import rollups
from gateway.ledger.pricing import usd
from gateway.ledger.rollups import UNREAD_WRITES, Summary, summarize
from gateway.memo import Principal
from gateway.pipeline import auth
from gateway.pipeline.context import RequestContext

DEFAULT_DAYS = 7
UNIX = re.compile(r"^\d{1,11}(\.\d+)?$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _principal() -> Principal:
    """Any valid key, whatever its scope (as GET /v1/models)."""
    ctx = RequestContext("usage", "openai", b"", request.headers, auth.extract_key(request.headers))
    auth.before(ctx)
    assert ctx.principal is not None
    return ctx.principal


def parse_time(name: str, raw: str, is_end: bool = False) -> datetime:
    """A query bound as naive UTC; InvalidRequest (400) names the parameter."""
    raw = raw.strip()
    try:
        if UNIX.match(raw):
            return datetime.fromtimestamp(float(raw), UTC).replace(tzinfo=None)
        if DAY.match(raw):
            day = date.fromisoformat(raw)
            return datetime(day.year, day.month, day.day) + (timedelta(days=1) if is_end else timedelta())
        value = datetime.fromisoformat(raw)
    except (ValueError, OverflowError, OSError):
        value = None
    if value is None:
        raise InvalidRequest(f"Invalid '{name}': '{raw[:64]}'. Use an ISO 8601 date (2025-01-31), date-time"
                             " (2025-01-31T12:00:00Z) or unix seconds.", param=name)
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _window() -> tuple[datetime, datetime]:
    args = request.args
    now = datetime.now(UTC).replace(tzinfo=None)
    end = parse_time("end", args["end"], is_end=True) if args.get("end") else now
    start = parse_time("start", args["start"]) if args.get("start") else end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        raise InvalidRequest("'start' must be before 'end'.", param="start")
    return start, end


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _figures(sums: dict[str, int]) -> dict[str, Any]:
    return {"requests": sums["requests"], "errors": sums["errors"], "input_tokens": sums["input_tokens"],
            "output_tokens": sums["output_tokens"], "benchmark_cost": usd(sums["benchmark_micros"]),
            "charge": usd(sums["charge_micros"]), "saved": usd(sums["saved_micros"])}


def _unread(summary: Summary) -> dict[str, Any]:
    """Cache writes the gateway placed that nothing read in time; their premium is already in
    prompt_cache's figure (a negative part of it)."""
    note = summary.notes.get(UNREAD_WRITES) or {}
    return {"writes": note.get("requests", 0), "tokens": note.get("input_tokens", 0),
            "cost": usd(-note.get("saved_micros", 0))}


def summary_object(org: str, summary: Summary, model: str | None) -> dict[str, Any]:
    by_saved = sorted(summary.mechanisms.items(), key=lambda item: (-item[1][0], item[0]))
    return {
        "object": "usage.summary",
        "org": org,
        "start": _iso(summary.start),
        "end": _iso(summary.end),
        "model": model,
        "currency": "USD",
        "totals": _figures(summary.totals),
        "by_mechanism": [{"mechanism": m, "saved": usd(saved), "requests": n} for m, (saved, n) in by_saved],
        "prompt_cache_unread_writes": _unread(summary),
        "by_model": [{"model": line.model, **_figures(line.totals),
                      "by_mechanism": {m: usd(v) for m, v in sorted(line.saved_by.items())}}
                     for line in summary.models],
    }


@bp.get("/usage/summary")
@accepts("start", "end", "model")
def usage_summary():
    try:
        principal = _principal()
        start, end = _window()
    except GatewayError as e:
        return error_response(e, "openai")
    model = (request.args.get("model") or "").strip() or None
    with db.session_scope() as session:  # scoped to the key's org: never another org's numbers
        summary = summarize(session, [principal.org_id], start, end, model)
    return Response(orjson.dumps(summary_object(principal.org_name, summary, model)),
                    content_type="application/json")


# ---- GET /v1/usage/timeseries --------------------------------------------------------------------

MAX_BUCKETS = {"hour": 31 * 24, "day": 366}
GROUP_FIELDS = {"model": "model", "key": "key_id", "user": "user_id", "app": "app_id", "mechanism": "mechanism"}


@bp.get("/usage/timeseries")
@accepts("start", "end", "bucket", "group_by")
def usage_timeseries():
    """The org's usage per hour or day, optionally grouped by model, key, user, app or savings
    mechanism (for `mechanism`, each group is what that mechanism saved and on how many requests)."""
    try:
        principal = _principal()
        bucket = request.args.get("bucket", "day")
        if bucket not in MAX_BUCKETS:
            raise InvalidRequest("'bucket' must be 'hour' or 'day'.", param="bucket")
        group_by = request.args.get("group_by") or None
        if group_by is not None and group_by not in GROUP_FIELDS:
            raise InvalidRequest(f"'group_by' must be one of {', '.join(GROUP_FIELDS)}.", param="group_by")
        start, end = _window()
        if (end - start) / (timedelta(days=1) if bucket == "day" else timedelta(hours=1)) > MAX_BUCKETS[bucket]:
            raise InvalidRequest(f"At most {MAX_BUCKETS[bucket]} {bucket}s per request: narrow 'start'..'end'.",
                                 param="start")
    except GatewayError as e:
        return error_response(e, "openai")
    with db.session_scope() as session:  # the key's org only
        series = rollups.timeseries(session, principal.org_id, start, end, bucket, group_by)
    field = GROUP_FIELDS.get(group_by or "")
    data = [{"start": _iso(b["start"]), "end": _iso(b["end"]),
             "groups": [{**({field: g["key"]} if field else {}), **_figures(g)} for g in b["groups"]]}
            for b in series]
    return Response(orjson.dumps({"object": "usage.timeseries", "org": principal.org_name, "bucket": bucket,
                                  "group_by": group_by, "start": _iso(start), "end": _iso(end), "currency": "USD",
                                  "data": data}), content_type="application/json")


# The Atlas path of the usage summary.
atlas.add_url_rule("/llm/usage", "llm_usage", usage_summary, methods=["GET"])
