"""Top-up requests: credits asked for on the dashboard, approved or rejected by a super-admin on the
Credits page, and the payment hook.

A request is a row (pending); an approval posts one top-up through services/credits.py (the
transaction log, the balance, the audit) in the same transaction as the status change. The change
is a conditional UPDATE (`WHERE status = 'pending'`), so two approvals of one request, in two tabs
or two processes, credit it once: the second finds nothing pending and is refused.

Payment hook: with GATEWAY_TOPUP_URL set, each request and each decision is also POSTed there as a
JSON event (`topup.requested`, `topup.approved`, `topup.rejected`) after its transaction commits,
in the background: a hook that is down or slow delays nothing and loses no request (the row is the
record; the failure is logged).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from gateway.ledger.pricing import usd
from gateway.models import Org, TopupRequest, User, utcnow
from gateway.services import credits as credit_service
from gateway.services.errors import Actor, AdminError, Forbidden
from gateway.services.tenancy import audit

log = logging.getLogger(__name__)

HOOK_TIMEOUT = 5.0
HOOK_URL: str | None = None  # GATEWAY_TOPUP_URL, set by create_app
MAX_PENDING = 10  # per org: a form resubmitted in a loop is not a queue for the operator to clear
NOTE_MAX = 500


def configure(settings) -> None:
    global HOOK_URL
    HOOK_URL = settings.topup_url


def request_topup(session: Session, actor: Actor, org: Org, micros: int, note: str = "",
                  user: User | None = None) -> TopupRequest:
    """A pending request for `micros` of credits for `org` (the actor's own org: anyone signed in
    to it may ask; the super-admins decide)."""
    if not actor.is_superadmin and actor.org_id != org.id:
        raise Forbidden("You can only ask for credits for your own org.")
    note = (note or "").strip()
    if len(note) > NOTE_MAX:
        raise AdminError(f"A note has at most {NOTE_MAX} characters.")
    if micros <= 0:
        raise AdminError("The amount must be positive.")
    waiting = len(session.scalars(select(TopupRequest.id).where(
        TopupRequest.org_id == org.id, TopupRequest.status == "pending").limit(MAX_PENDING)).all())
    if waiting >= MAX_PENDING:
        raise AdminError(f"Your org already has {MAX_PENDING} requests waiting; an operator will answer them first.")
    row = TopupRequest(org_id=org.id, user_id=user.id if user else None, amount_micros=micros, note=note,
                       status="pending", requested_by=actor.email)
    session.add(row)
    session.flush()
    audit(session, actor.email, "topup.request", org.name, f"#{row.id} {micros} micros", org_id=org.id)
    _hook_after_commit(session, "topup.requested", row, org)
    return row


def decide(session: Session, actor: Actor, request_id: int, approve: bool) -> TopupRequest:
    """Approve (the credits are added now) or reject a pending request; a decided one is refused."""
    if not actor.is_superadmin:
        raise Forbidden("Only a super-admin can approve or reject top-up requests.")
    row = session.get(TopupRequest, request_id)
    if row is None:
        raise AdminError("That top-up request does not exist.")
    status = "approved" if approve else "rejected"
    claimed = session.execute(
        update(TopupRequest).where(TopupRequest.id == request_id, TopupRequest.status == "pending")
        .values(status=status, decided_by=actor.email, decided_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount
    if claimed != 1:
        raise AdminError(f"Top-up request #{request_id} was already decided.")
    session.refresh(row)
    org = session.get(Org, row.org_id)
    if approve:
        txn = credit_service.top_up(session, org, row.amount_micros, actor=actor.email,
                                    reason=f"top-up request #{row.id}" + (f": {row.note}" if row.note else ""))
        row.txn_id = txn.id
    audit(session, actor.email, f"topup.{'approve' if approve else 'reject'}", org.name,
          f"#{row.id} {row.amount_micros} micros", org_id=org.id)
    _hook_after_commit(session, f"topup.{status}", row, org)
    return row


def listed(session: Session, org_ids: list[int] | None, status: str | None = None,
           limit: int = 100) -> list[TopupRequest]:
    """Requests of `org_ids` (None: every org), newest first, optionally of one status."""
    q = select(TopupRequest)
    if org_ids is not None:
        q = q.where(TopupRequest.org_id.in_(org_ids))
    if status:
        q = q.where(TopupRequest.status == status)
    return list(session.scalars(q.order_by(TopupRequest.id.desc()).limit(limit)))


# ---- the payment hook --------------------------------------------------------------------------

def event_payload(kind: str, row: TopupRequest, org: Org) -> dict[str, Any]:
    return {"type": kind, "id": row.id, "org_id": org.id, "org": org.name, "amount_usd": usd(row.amount_micros),
            "amount_micros": row.amount_micros, "note": row.note, "status": row.status,
            "requested_by": row.requested_by, "decided_by": row.decided_by,
            "created_at": row.created_at.isoformat() + "Z" if row.created_at else None}


def _hook_after_commit(session: Session, kind: str, row: TopupRequest, org: Org) -> None:
    url = HOOK_URL
    if not url:
        return
    payload = event_payload(kind, row, org)

    def send(_session) -> None:
        import gevent  # the console request answers now; the hook is posted beside it

        gevent.spawn(post_event, url, payload)

    event.listen(session, "after_commit", send, once=True)


def post_event(url: str, payload: dict[str, Any]) -> bool:
    import requests  # imported when used: not in every process's start-up memory

    try:
        resp = requests.post(url, json=payload, timeout=HOOK_TIMEOUT)
    except requests.RequestException as e:
        log.warning("top-up hook %s failed: %s", url, e)
        return False
    if resp.status_code >= 400:
        log.warning("top-up hook %s answered %s", url, resp.status_code)
    return resp.status_code < 400
