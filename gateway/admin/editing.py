"""Console editing helpers: one admin write per short transaction; the form answered to htmx or a browser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, abort, make_response, redirect, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway import db
from gateway.htmx import is_htmx, render_page_or_partial, trigger
from gateway.models import Org
from gateway.services.errors import AdminError, Forbidden, may_edit

T = TypeVar("T")
GLOBAL = "global"


def write(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """Run a catalog_admin write as the signed-in user, in its own transaction. Forbidden is a 403;
    any other AdminError propagates for the view to show in its form (nothing was written)."""
    try:
        with db.write_lock, db.session_scope() as session:
            return fn(session, current_user, *args, **kw)
    except Forbidden as e:
        abort(403, description=str(e))
    except IntegrityError:  # another process wrote the same name between our check and our commit
        raise AdminError("That conflicts with a change made at the same moment elsewhere; reload and try again.") \
            from None


def reply(page: str, partial: str, *, error: str | None = None, event: str | None = None,
          **context: Any) -> Response:
    """The form back: htmx swaps in the partial (200 even on error, since htmx does not swap a 4xx);
    a plain form post gets the whole page, 422 on error. A successful change fires `event`
    (HX-Trigger), on which the page's tables refresh themselves."""
    resp = render_page_or_partial(page, partial, error=error, **context)
    if error and not is_htmx():
        resp.status_code = 422
    if event and not error:
        trigger(resp, event)
    return resp


def removed(endpoint: str, event: str) -> Response:
    """After a delete: htmx swaps the row for nothing and fires `event`; a browser goes back to the page."""
    if is_htmx():
        return trigger(make_response(""), event)
    return redirect(url_for(endpoint))


def delete(fn: Callable[..., None], row_id: int, endpoint: str, event: str) -> Response:
    try:
        write(fn, row_id)
    except AdminError:
        abort(404)
    return removed(endpoint, event)


def require_superadmin() -> None:
    if not current_user.is_superadmin:
        abort(403, description="Only a super-admin can see this page.")


def require_admin() -> None:
    """Org-admins and super-admins only: a member's place is their own dashboard."""
    if not current_user.is_superadmin and getattr(current_user, "role", "member") != "org-admin":
        abort(403, description="This page is for org admins.")


def chosen_orgs(raw: str | None) -> tuple[list[int] | None, int | None]:
    """The orgs a read covers and the one picked: a super-admin sees every org (None) or the one
    asked for (`?org=`); anyone else their own org, whatever they ask."""
    picked = int(raw) if raw and raw.isdigit() else None
    if current_user.is_superadmin:
        return ([picked] if picked else None), picked
    own = current_user.org_id or -1
    return [own], own


def visible_orgs(session: Session) -> list[Org]:
    """Every org for a super-admin; otherwise the user's own org only."""
    q = select(Org).order_by(Org.name)
    if not current_user.is_superadmin:
        q = q.where(Org.id == (current_user.org_id or -1))
    return list(session.scalars(q).all())


def scope_choices(session: Session) -> list[tuple[str, str]]:
    """(value, label) for a scope select: global for super-admins, then the orgs the user may edit."""
    choices = [(GLOBAL, "Global (every org)")] if current_user.is_superadmin else []
    return choices + [(str(o.id), f"Org {o.name}") for o in visible_orgs(session)]


def parse_scope(value: str | None) -> int | None:
    """'global' (or nothing) -> None; an org id -> int. Permission is checked by the write itself."""
    if value in (None, "", GLOBAL):
        return None
    try:
        return int(value)
    except ValueError:
        abort(400, description="Unknown scope.")


def org_names(session: Session) -> dict[int, str]:
    return dict(session.execute(select(Org.id, Org.name)).tuples().all())


def editable_or_404(model: type[T], row_id: int) -> T:
    """Row `row_id` of a scoped `model` if the user may edit it; 404 otherwise (another org's rows
    are not shown to exist)."""
    row = db.request_session().get(model, row_id)
    if row is None or not may_edit(current_user, row.org_id):
        abort(404)
    return row


def scoped_rows(session: Session, model: type, key: str) -> list[dict[str, Any]]:
    """The global rows of `model` (an Alias or AgentConfig: named, global or one org's) and those of
    the orgs the user sees, by name: {key: row, "org": its org's name or None, "editable": bool}."""
    orgs = [o.id for o in visible_orgs(session)]
    names = org_names(session)
    q = select(model).where(model.org_id.is_(None) | model.org_id.in_(orgs)).order_by(model.name, model.org_id)
    return [{key: row, "org": names.get(row.org_id) if row.org_id else None,
             "editable": may_edit(current_user, row.org_id)} for row in session.scalars(q).all()]
