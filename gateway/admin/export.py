"""User activity export: a CSV of one user's, app's or org's requests over a date range, streamed.

Columns: time, request id, endpoint, model requested and actual (provider/upstream model), tokens,
cost, saved, latency, status, error, and the conversation (input and output text) where content
logging kept it. The rows are walked in pages of PAGE with a keyset over (created_at, id) on the
subject's index (ix_ledger_user_created, ix_ledger_app_created, ix_ledger_org_created): each page
is one short query in its own session, written row by row into a small buffer that is flushed as
it fills, so memory stays flat whatever the size (a million rows included) and the first bytes
leave at once. Cells that a spreadsheet would run as a formula are prefixed with a quote.

The same page sets content logging for the user's org (and its apps): off by default, on with a
retention in days (services/content_logging.py, audited). Each export is audited too.
Failure mode: a subject outside the user's orgs is a 404; bad dates a 400.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

from flask import Response, abort, request
from flask_login import current_user
from sqlalchemy import select, tuple_

from gateway import db
from gateway.admin.blueprint import bp
from gateway.admin.editing import reply, require_admin, visible_orgs, write
from gateway.db import request_session
from gateway.ledger.pricing import usd
from gateway.models import App, ContentLog, LedgerEntry, Org, User, utcnow
from gateway.services import content_logging
from gateway.services.errors import AdminError
from gateway.services.tenancy import audit
from gateway.stores.content_log import SETTINGS

PAGE = 1000
FLUSH_BYTES = 64 * 1024
E = LedgerEntry
SUBJECTS = {"user": E.user_id, "app": E.app_id, "org": E.org_id}
COLUMNS = (E.id, E.created_at, E.request_id, E.endpoint, E.requested_model, E.model, E.provider, E.upstream_model,
           E.input_tokens, E.output_tokens, E.cached_tokens, E.charge_micros, E.saved_micros, E.latency_ms,
           E.status, E.error_type)
HEADER = ("time", "request_id", "endpoint", "model_requested", "model_actual", "provider", "upstream_model",
          "input_tokens", "output_tokens", "cached_tokens", "cost_usd", "saved_usd", "latency_ms", "status",
          "error_type", "input_text", "output_text")
FORMULA = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA):
        return "'" + value
    return value


def page_query(party: str, party_id: int, org_ids: list[int] | None, after: tuple[datetime, int], end: datetime,
               page: int):
    """The next page after `after` (created_at, id): a range on the subject's (id, created_at) index."""
    q = (select(*COLUMNS).where(SUBJECTS[party] == party_id, E.created_at >= after[0], E.created_at < end,
                                tuple_(E.created_at, E.id) > tuple_(*after))
         .order_by(E.created_at, E.id).limit(page))
    return q if org_ids is None else q.where(E.org_id.in_(org_ids))


def pages(party: str, party_id: int, org_ids: list[int] | None, start: datetime, end: datetime,
          page: int = PAGE) -> Iterator[tuple[list[Any], dict[str, tuple[str, str]]]]:
    """(rows, request id -> (input, output)) a page at a time, oldest first; each page one indexed
    range read after the last (created_at, id) seen, in a session of its own."""
    after: tuple[datetime, int] = (start, 0)
    while True:
        with db.session_scope() as session:
            rows = session.execute(page_query(party, party_id, org_ids, after, end, page)).all()
            ids = [r.request_id for r in rows]
            texts = {c.request_id: SETTINGS.decrypt(c) for c in session.scalars(
                select(ContentLog).where(ContentLog.request_id.in_(ids)))} if ids else {}
        if not rows:
            return
        yield rows, texts
        if len(rows) < page:
            return
        after = (rows[-1].created_at, rows[-1].id)


def csv_chunks(walk: Iterator[tuple[list[Any], dict[str, tuple[str, str]]]],
               flush_bytes: int = FLUSH_BYTES) -> Iterator[bytes]:
    """The CSV, row by row into a buffer handed on whenever it holds `flush_bytes`."""
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(HEADER)
    yield buf.getvalue().encode()
    buf.seek(0)
    buf.truncate()
    for rows, texts in walk:
        for r in rows:
            said, answered = texts.get(r.request_id, ("", ""))
            out.writerow([r.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), r.request_id, r.endpoint,
                          cell(r.requested_model), cell(r.model), cell(r.provider), cell(r.upstream_model),
                          r.input_tokens, r.output_tokens, r.cached_tokens, usd(r.charge_micros),
                          usd(r.saved_micros), r.latency_ms, r.status, cell(r.error_type or ""), cell(said),
                          cell(answered)])
            if buf.tell() >= flush_bytes:
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


def subject(party: str, party_id: int) -> tuple[str, list[int] | None]:
    """The subject's name and the orgs the walk is limited to; 404 outside the user's orgs."""
    session = request_session()
    allowed = None if current_user.is_superadmin else [current_user.org_id or -1]
    if party == "user":
        row = session.get(User, party_id)
        name, org_id = (row.email, row.org_id) if row else ("", None)
    elif party == "app":
        row = session.get(App, party_id)
        name, org_id = (row.name, row.org_id) if row else ("", None)
    elif party == "org":
        row = session.get(Org, party_id)
        name, org_id = (row.name, row.id) if row else ("", None)
    else:
        abort(404)
    # A user's rows are every row of their keys: a super-admin (no org) may have some anywhere.
    if row is None or (allowed is not None and org_id not in allowed):
        abort(404)
    return name, allowed


def date_range(args) -> tuple[date, date]:
    """[start, end] as whole UTC days (end included); default the last 7 days."""
    today = utcnow().date()
    try:
        start = date.fromisoformat(args["start"]) if args.get("start") else today - timedelta(days=6)
        end = date.fromisoformat(args["end"]) if args.get("end") else today
    except ValueError:
        abort(400, description="Dates are YYYY-MM-DD.")
    if start > end:
        abort(400, description="The start date is after the end date.")
    return start, end


def as_datetime(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


@bp.get("/export.csv")
def export_csv():
    require_admin()
    party = request.args.get("party", "user")
    party_id = request.args.get("id", type=int)
    if party not in SUBJECTS or not party_id:
        abort(400, description="Pick a user, an app or an org.")
    name, org_ids = subject(party, party_id)
    start, end = date_range(request.args)
    with db.write_lock, db.session_scope() as session:
        audit(session, current_user.email, "export.csv", f"{party} {name}", f"{start}..{end}",
              org_id=None if org_ids is None else org_ids[0])
    walk = pages(party, party_id, org_ids, as_datetime(start), as_datetime(end) + timedelta(days=1))
    filename = f"activity-{party}-{party_id}-{start}-{end}.csv"
    return Response(csv_chunks(walk), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# ---- the page: pick a subject and a range; content logging ---------------------------------------

def _choices() -> dict[str, list[tuple[int, str]]]:
    session = request_session()
    orgs = visible_orgs(session)
    ids = [o.id for o in orgs]
    return {
        "user": [(u.id, u.email) for u in session.scalars(
            select(User).where(User.org_id.in_(ids)).order_by(User.email).limit(1000))],
        "app": [(a.id, a.name) for a in session.scalars(
            select(App).where(App.org_id.in_(ids)).order_by(App.name).limit(1000))],
        "org": [(o.id, o.name) for o in orgs],
    }


def logging_rows() -> list[dict[str, Any]]:
    """Content logging per visible org and its apps."""
    session = request_session()
    out = []
    for org in visible_orgs(session):
        apps = session.scalars(select(App).where(App.org_id == org.id).order_by(App.name)).all()
        out.append({"org": org, "status": content_logging.status(session, org.id),
                    "apps": [(a, content_logging.status(session, org.id, a.id)) for a in apps]})
    return out


def _page(partial: str, **kw: Any) -> Response:
    start, end = date_range(request.args)
    party = request.args.get("party") if request.args.get("party") in SUBJECTS else "user"
    return reply("admin/export/index.html", partial, choices=_choices(), party=party,
                 party_id=request.args.get("id", type=int), start=start, end=end, logging=logging_rows(), **kw)


@bp.get("/export")
def export():
    require_admin()
    return _page("admin/export/_logging.html")


@bp.post("/export/content-logging")
def content_logging_save():
    require_admin()
    form = request.form
    org_id = form.get("org", type=int)
    app_id = form.get("app", type=int)
    if not org_id:
        abort(400, description="Pick an org.")
    try:
        days = content_logging.parse_days(form.get("days"))
        status = write(content_logging.put, org_id, days, app_id=app_id)
    except AdminError as e:
        return _page("admin/export/_logging.html", error=str(e))
    _reload_policy()
    return _page("admin/export/_logging.html", notice=f"Content logging: {status.text}.", event="content-logging")


def _reload_policy() -> None:
    """This process applies the change now; the others from the change log within a second."""
    from gateway.memo import MEMO

    with db.session_scope() as session:
        MEMO.reload(session, "policy")


@bp.app_template_global("content_logging_status")
def content_logging_status(org_id: int, app_id: int | None = None) -> str:
    """"off" or "on, N days" for an org (or app): for the Orgs and Apps pages'
    admin/content_logging/_status.html."""
    return content_logging.status(request_session(), org_id, app_id).text
