"""Per-user usage: each user's (or app's) requests, input and output tokens, cost and saved over a
period, from the party rollups (never the raw ledger); filter by org and period; each user drills
down to their requests in Gateway logs and to their activity export."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import request

from gateway.admin.blueprint import bp
from gateway.admin.editing import chosen_orgs, require_admin, visible_orgs
from gateway.admin.home import dollars
from gateway.db import request_session
from gateway.htmx import render_page_or_partial
from gateway.ledger.trends import party_usage
from gateway.models import utcnow

PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30),
           "90d": timedelta(days=90)}
PARTIES = {"user": "User", "app": "App"}
LIMIT = 500


def period_window(raw: str | None, now: datetime) -> tuple[str, datetime, datetime]:
    period = raw if raw in PERIODS else "7d"
    return period, now - PERIODS[period], now


@bp.get("/usage")
def usage():
    require_admin()
    org_ids, picked = chosen_orgs(request.args.get("org"))
    period, start, end = period_window(request.args.get("period"), utcnow())
    party = request.args.get("by") if request.args.get("by") in PARTIES else "user"
    session = request_session()
    rows = party_usage(session, org_ids, party, start, end, limit=LIMIT)
    totals = {k: sum(r.sums[k] for r in rows) for k in ("requests", "input_tokens", "output_tokens",
                                                          "charge_micros", "saved_micros")}
    return render_page_or_partial(
        "admin/usage/index.html", "admin/usage/_table.html", rows=rows, totals=totals, party=party,
        parties=PARTIES, period=period, periods=list(PERIODS), orgs=visible_orgs(session), picked=picked,
        dollars=dollars, limit=LIMIT, start=start, end=end)
