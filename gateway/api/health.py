"""GET /healthz (process up), GET /readyz (database reachable, config loaded), GET /metrics (Prometheus)."""

from __future__ import annotations

import hmac

import orjson
from flask import Blueprint, Response, current_app, request
from sqlalchemy import text

from gateway import db
from gateway.api.blueprint import query_check
from gateway.memo import MEMO, snapshot
from gateway.stores import shared

bp = Blueprint("health", __name__)
bp.before_request(query_check)  # probes take no query parameters either


def _json(obj: dict, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status=status, content_type="application/json")


@bp.get("/healthz")
def healthz():
    """Up while the process serves; scaled out, `shared` tells whether Redis is reachable (a Redis
    outage degrades the gateway, it does not take it down: still 200, with a warning)."""
    status = shared.status()
    if status is None:
        return _json({"status": "ok"})
    out = {"status": "ok", "shared": status}
    if status["redis"] == "down":
        out["warnings"] = ["Redis unreachable: per-worker limits in force; shared caches and dedupe skipped"]
    return _json(out)


@bp.get("/metrics")
def metrics():
    """Prometheus text format; a bearer token when GATEWAY_METRICS_TOKEN is set, else loopback only."""
    from gateway import metrics as prom

    settings = current_app.extensions["settings"]
    if settings.metrics_token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), settings.metrics_token.encode()):
            return _json({"error": {"message": "A valid metrics token is required.", "type": "invalid_request_error",
                                    "param": None, "code": "invalid_api_key"}}, 401)
    elif request.remote_addr not in ("127.0.0.1", "::1"):
        return _json({"error": {"message": "Metrics are served to loopback clients unless GATEWAY_METRICS_TOKEN "
                                           "is set.", "type": "invalid_request_error", "param": None,
                                "code": "forbidden"}}, 403)
    return Response(prom.exposition(settings.metrics_multiproc_dir), content_type=prom.CONTENT_TYPE)


@bp.get("/readyz")
def readyz():
    checks = {"database": False, "config": MEMO.loaded}
    try:
        with db.engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = True
    except Exception as e:  # report, never raise: this is a probe
        checks["database_error"] = type(e).__name__
    ready = checks["database"] and checks["config"]
    return _json({"status": "ready" if ready else "not_ready", "checks": checks, **snapshot(MEMO)},
                 200 if ready else 503)
