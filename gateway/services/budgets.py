"""Budgets: set, clear and list USD caps per day, week or month on an org or one of its users, apps
or keys; seed window spend into memory at start; record soft-budget alerts and post their webhook.

Writes are one short transaction, audited and announced ("budgets"), so running servers apply them
within a second. Every selector is resolved inside the org it names: an org never reaches another's
users, apps or keys. Alerts run off the request path (the gate spawns `alert`); a webhook that fails
is logged, the banner stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway import db
from gateway.memo import announce
from gateway.models import ApiKey, App, AuditLog, Budget, BudgetAlert, LedgerEntry, Org, User, utcnow
from gateway.services.errors import AdminError
from gateway.stores.counters import WINDOWS, previous_start, window_start

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = 5.0
DEFAULT_WEBHOOK: str | None = None  # GATEWAY_BUDGET_WEBHOOK_URL, set by create_app


def configure(settings) -> None:
    global DEFAULT_WEBHOOK
    DEFAULT_WEBHOOK = settings.budget_webhook_url


@dataclass(frozen=True)
class Target:
    """What a budget is on: the org itself, or one of its users, apps or keys."""

    org: Org
    kind: str  # org | user | app | key
    id: int
    label: str

    @property
    def columns(self) -> dict[str, int | None]:
        return {"user_id": self.id if self.kind == "user" else None,
                "app_id": self.id if self.kind == "app" else None,
                "key_id": self.id if self.kind == "key" else None}


def target(session: Session, org: Org | None = None, user_email: str | None = None,
           app_slug: str | None = None, key_id: int | str | None = None) -> Target:
    """Resolve exactly one selector. A user, app or key is looked up in `org` when given (the
    console always gives it); from the CLI a user's email or a key's id names its org."""
    chosen = [x for x in (user_email, app_slug, key_id) if x not in (None, "")]
    if len(chosen) > 1:
        raise AdminError("give one of --user, --app or --key (with --org), or --org alone")
    if user_email:
        q = select(User).where(User.email == user_email.strip().lower())
        user = session.scalar(q.where(User.org_id == org.id) if org else q)
        if user is None or user.org_id is None:
            raise AdminError(f"no user {user_email}" + (f" in org {org.name}" if org else " in an org"))
        return Target(org or session.get(Org, user.org_id), "user", user.id, user.email)
    if app_slug:
        if org is None:
            raise AdminError("an app is named within its org: give --org too")
        app = session.scalar(select(App).where(App.org_id == org.id, App.slug == app_slug))
        if app is None:
            raise AdminError(f"no app {app_slug} in org {org.name}")
        return Target(org, "app", app.id, app.slug)
    if key_id not in (None, ""):
        try:
            kid = int(key_id)
        except (TypeError, ValueError):
            raise AdminError(f"'{key_id}' is not a key id (see `gateway key list`)") from None
        key = session.get(ApiKey, kid)
        if key is None or (org is not None and key.org_id != org.id):
            raise AdminError(f"no key {key_id}" + (f" in org {org.name}" if org else ""))
        return Target(org or session.get(Org, key.org_id), "key", key.id, f"key {key.id} ({key.prefix}…)")
    if org is None:
        raise AdminError("give --org, --user, --app or --key")
    return Target(org, "org", org.id, org.name)


def _find(session: Session, t: Target) -> Budget | None:
    q = select(Budget).where(Budget.org_id == t.org.id)
    for column, value in t.columns.items():
        col = getattr(Budget, column)
        q = q.where(col.is_(None) if value is None else col == value)
    return session.scalar(q)


def set_budget(session: Session, t: Target, micros: int, window: str, hard: bool = True,
               rollover: bool = False, actor: str = "cli") -> Budget:
    if window not in WINDOWS:
        raise AdminError(f"window must be one of {', '.join(WINDOWS)}")
    if micros <= 0:
        raise AdminError("a budget must be above $0 (clear it to remove the cap)")
    b = _find(session, t) or Budget(org_id=t.org.id, **t.columns)
    b.amount_micros, b.window, b.hard, b.rollover = micros, window, hard, rollover
    session.add(b)
    session.flush()
    session.add(AuditLog(actor=actor, action="budget.set", target=f"{t.kind} {t.label}",
                         detail=f"{micros} micros per {window}{'' if hard else ' soft'}"
                                f"{' rollover' if rollover else ''}", org_id=t.org.id))
    announce(session, "budgets")
    return b


def clear_budget(session: Session, t: Target, actor: str = "cli") -> bool:
    b = _find(session, t)
    if b is None:
        return False
    session.query(BudgetAlert).filter(BudgetAlert.budget_id == b.id).delete()
    session.delete(b)
    session.add(AuditLog(actor=actor, action="budget.clear", target=f"{t.kind} {t.label}", org_id=t.org.id))
    announce(session, "budgets")
    return True


@dataclass(frozen=True)
class BudgetView:
    budget: Budget
    kind: str
    label: str


def list_budgets(session: Session, org_id: int) -> list[BudgetView]:
    """The org's budgets, each with what it is on (never another org's)."""
    users = dict(session.execute(select(User.id, User.email).where(User.org_id == org_id)).tuples().all())
    apps = dict(session.execute(select(App.id, App.slug).where(App.org_id == org_id)).tuples().all())
    out = []
    for b in session.scalars(select(Budget).where(Budget.org_id == org_id).order_by(Budget.id)):
        if b.user_id is not None:
            out.append(BudgetView(b, "user", users.get(b.user_id, str(b.user_id))))
        elif b.app_id is not None:
            out.append(BudgetView(b, "app", apps.get(b.app_id, str(b.app_id))))
        elif b.key_id is not None:
            out.append(BudgetView(b, "key", str(b.key_id)))
        else:
            out.append(BudgetView(b, "org", ""))
    return out


def alerts(session: Session, org_ids: list[int] | None, since: datetime | None = None) -> list[BudgetAlert]:
    """Soft-budget alerts of the current month (the console's banner), newest first."""
    since = since or window_start("month", utcnow())
    q = select(BudgetAlert).where(BudgetAlert.created_at >= since)
    if org_ids is not None:
        q = q.where(BudgetAlert.org_id.in_(org_ids))
    return list(session.scalars(q.order_by(BudgetAlert.id.desc()).limit(20)))


# ---- memory ------------------------------------------------------------------------------------

def seed_spend(session: Session, counters, now: datetime | None = None) -> None:
    """Window spend since the start of the previous month, per org, user, app and key, summed per
    day in the database: one query at start, never on the request path."""
    now = now or utcnow()
    since = min(previous_start(w, window_start(w, now)) for w in WINDOWS)
    L = LedgerEntry
    day = func.date(L.created_at)
    rows = session.execute(
        select(L.org_id, L.user_id, L.app_id, L.key_id, day, func.sum(L.charge_micros))
        .where(L.created_at >= since, L.charge_micros > 0)
        .group_by(L.org_id, L.user_id, L.app_id, L.key_id, day)).all()
    out = []
    for org_id, user_id, app_id, key_id, d, micros in rows:
        at = datetime.fromisoformat(str(d)) if not isinstance(d, datetime) else d
        for entity in (("org", org_id), ("user", user_id), ("app", app_id), ("key", key_id)):
            if entity[1] is not None:
                out.append((entity, at, int(micros)))
    counters.seed(out)


# ---- alerts (off the request path) -------------------------------------------------------------

def alert(budget, window_start_at: datetime, threshold: int, spent: int, cap: int, org_webhook: str | None) -> None:
    """Record one alert (once per budget, window and threshold across every process) and post it."""
    import requests  # imported when used: not in every process's start-up memory
    row = {"org_id": budget.org_id, "budget_id": budget.id, "window_start": window_start_at,
           "threshold": threshold, "spent_micros": spent, "cap_micros": cap, "created_at": utcnow()}
    try:
        with db.write_lock, db.session_scope() as session:
            dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
            stmt = dialect.insert(BudgetAlert).values(**row).on_conflict_do_nothing()
            inserted = session.execute(stmt).rowcount
    except Exception:
        log.exception("budget alert for budget %s could not be recorded", budget.id)
        return
    url = org_webhook or DEFAULT_WEBHOOK
    if not inserted or not url:
        return
    payload = {"type": "budget.threshold", "org_id": budget.org_id, "budget_id": budget.id,
               "on": budget.entity[0], "id": budget.entity[1], "window": budget.window,
               "window_start": window_start_at.isoformat() + "Z", "threshold_percent": threshold,
               "spent_usd": spent / 1_000_000, "cap_usd": cap / 1_000_000}
    try:
        requests.post(url, json=payload, timeout=WEBHOOK_TIMEOUT)
    except requests.RequestException as e:
        log.warning("budget webhook %s failed: %s", url, e)
