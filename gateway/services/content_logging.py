"""Content logging settings: an org (or one of its apps) keeps its conversations for N days.

Off by default. Org-admins set their own org's, super-admins any org's; every change is audited
and announced (`policy`), so every server process applies it from its next request. Turning it
off stops new logging; what was kept stays until its own expiry (the retention job deletes it).
Failure mode: a bad value or another org's setting is an AdminError / Forbidden, nothing written.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.memo import announce
from gateway.models import App, ContentLogSetting, Org, utcnow
from gateway.services.errors import Actor, AdminError, require, row_or_gone
from gateway.services.tenancy import audit

MAX_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Status:
    days: int  # 0: off
    inherited: bool = False  # an app following its org's setting

    @property
    def text(self) -> str:
        return f"on, {self.days} day{'s' if self.days != 1 else ''}" if self.days else "off"


def parse_days(value: object) -> int | None:
    """'' -> None (no setting of its own); 'off' / 0 -> 0; 1..MAX_DAYS -> days; else an AdminError."""
    raw = str(value if value is not None else "").strip().lower()
    if raw == "":
        return None
    if raw in ("off", "0"):
        return 0
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DAYS:
        raise AdminError(f"Retention is a whole number of days from 1 to {MAX_DAYS}, or off.")
    return int(raw)


def status(session: Session, org_id: int, app_id: int | None = None) -> Status:
    rows = {s.app_id: s.retention_days for s in session.scalars(
        select(ContentLogSetting).where(ContentLogSetting.org_id == org_id,
                                        ContentLogSetting.app_id.is_(None) | (ContentLogSetting.app_id == app_id)))}
    if app_id is not None and app_id in rows:
        return Status(rows[app_id])
    return Status(rows.get(None, 0), inherited=app_id is not None)


def put(session: Session, actor: Actor, org_id: int, days: int | None, app_id: int | None = None) -> Status:
    """Set the org's (or its app's) retention. For an org, 0 or None turns it off; for an app, None
    follows the org again and 0 keeps the app off whatever the org does."""
    require(actor, org_id, "content logging")
    org = row_or_gone(session, Org, org_id, "org")
    if app_id is not None:
        app = session.get(App, app_id)
        if app is None or app.org_id != org_id:
            raise AdminError("That app is not in this org.")
    if days is not None and not 0 <= days <= MAX_DAYS:
        raise AdminError(f"Retention is a whole number of days from 1 to {MAX_DAYS}, or off.")
    if app_id is None and days == 0:
        days = None
    row = session.scalar(select(ContentLogSetting).where(
        ContentLogSetting.org_id == org_id,
        ContentLogSetting.app_id.is_(None) if app_id is None else ContentLogSetting.app_id == app_id))
    if days is None:
        if row is not None:
            session.delete(row)
    else:
        if row is None:
            row = ContentLogSetting(org_id=org_id, app_id=app_id, retention_days=days)
            session.add(row)
        row.retention_days, row.updated_by, row.updated_at = days, actor.email, utcnow()
    target = org.name + (f" app {app_id}" if app_id is not None else "")
    detail = f"retention_days={days}" if days else ("off" if days == 0 or app_id is None else "as the org")
    audit(session, actor.email, "content_logging.set", target, detail, org_id=org_id)
    announce(session, "policy")
    session.flush()
    return status(session, org_id, app_id)
