"""GET /healthz (process up) and GET /readyz (database reachable, config loaded)."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response
from sqlalchemy import text

from gateway import db
from gateway.api.blueprint import query_check
from gateway.memo import MEMO, snapshot

bp = Blueprint("health", __name__)
bp.before_request(query_check)  # probes take no query parameters either


def _json(obj: dict, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status=status, content_type="application/json")


@bp.get("/healthz")
def healthz():
    return _json({"status": "ok"})


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
