"""Credits: the double-entry transaction log (top-up, charge, refund, adjustment) and the org's
pricing policy. Console and CLI writes go through here, each in the caller's transaction, audited
and announced so running servers see the new balance within a second.

Every movement is one CreditTransaction: `amount_micros` leaves the `debit` account and enters the
`credit` account. Org.credits_micros is kept equal to the org account's sum in the same
transaction (`derived_balance` recomputes it from the log). Charges are written by the ledger writer,
one row per org per batch (see ledger/writer.py), never on the request path.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from sqlalchemy import case, event, func, select
from sqlalchemy.orm import Session

from gateway.memo import announce
from gateway.models import AuditLog, CreditGrant, CreditTransaction, Org
from gateway.services.errors import AdminError
from gateway.stores.counters import COUNTERS

ORG, FUNDING, USAGE, ADJUSTMENT = "org", "funding", "usage", "adjustment"
POLICIES = ("list", "markup", "discount", "byok")
MAX_MICROS = 1_000_000_000 * 1_000_000  # one movement above $1e9 is a typo, and sums stay inside BIGINT


def _post(session: Session, org: Org, kind: str, debit: str, credit: str, micros: int, reason: str,
          actor: str) -> CreditTransaction:
    if micros <= 0:
        raise AdminError("the amount must be positive")
    if micros > MAX_MICROS:
        raise AdminError("the amount must be at most $1,000,000,000 at a time")
    txn = CreditTransaction(org_id=org.id, kind=kind, debit=debit, credit=credit, amount_micros=micros,
                            reason=reason[:500], actor=actor[:254])
    session.add(txn)
    delta = micros if credit == ORG else -micros
    org.credits_micros = Org.credits_micros + delta  # atomic against the ledger writer's deductions
    session.flush()
    session.refresh(org)
    if kind == "topup":  # the audit wording operators already search for
        action, detail = "credits.add", f"{micros} micros"
    else:
        action, detail = f"credits.{kind}", f"{'+' if delta > 0 else ''}{delta} micros: {reason}"[:500]
    session.add(AuditLog(actor=actor, action=action, target=org.name, detail=detail, org_id=org.id))
    announce(session, "orgs")
    # Shared counters (Redis) move with the committed balance, once the change is durable.
    balance = org.credits_micros
    event.listen(session, "after_commit", lambda _s: COUNTERS.credit(org.id, delta, balance), once=True)
    return txn


def top_up(session: Session, org: Org, micros: int, actor: str = "cli", reason: str = "") -> CreditTransaction:
    """Credits bought or granted: from outside into the org's wallet."""
    session.add(CreditGrant(org_id=org.id, amount_micros=micros, note=reason, created_by=actor))
    return _post(session, org, "topup", FUNDING, ORG, micros, reason, actor)


def refund(session: Session, org: Org, micros: int, reason: str, actor: str = "cli") -> CreditTransaction:
    """Usage given back (a bad answer, an outage): from the house's usage account to the org."""
    if not reason.strip():
        raise AdminError("a refund needs a reason")
    return _post(session, org, "refund", USAGE, ORG, micros, reason.strip(), actor)


def adjust(session: Session, org: Org, micros: int, reason: str, actor: str = "cli") -> CreditTransaction:
    """An operator correction either way: positive adds to the org, negative takes from it."""
    if not reason.strip():
        raise AdminError("an adjustment needs a reason")
    if micros == 0:
        raise AdminError("the amount must not be zero")
    if micros > 0:
        return _post(session, org, "adjustment", ADJUSTMENT, ORG, micros, reason.strip(), actor)
    return _post(session, org, "adjustment", ORG, ADJUSTMENT, -micros, reason.strip(), actor)


def charge_rows(charges: dict[int, tuple[int, int]]) -> list[dict]:
    """The ledger writer's charge postings for one batch: org -> (micros, requests)."""
    return [{"org_id": org_id, "kind": "charge", "debit": ORG, "credit": USAGE, "amount_micros": micros,
             "requests": n, "reason": "usage", "actor": "ledger"}
            for org_id, (micros, n) in charges.items() if micros > 0]


def derived_balance(session: Session, org_id: int) -> int:
    """The org's balance from the log alone: what entered its wallet minus what left it."""
    T = CreditTransaction
    signed = case((T.credit == ORG, T.amount_micros), else_=-T.amount_micros)
    return int(session.scalar(select(func.coalesce(func.sum(signed), 0)).where(
        T.org_id == org_id, (T.credit == ORG) | (T.debit == ORG))) or 0)


def transactions(session: Session, org_id: int, limit: int = 100, before_id: int | None = None
                 ) -> list[CreditTransaction]:
    """The org's log, newest first (page with `before_id`)."""
    q = select(CreditTransaction).where(CreditTransaction.org_id == org_id)
    if before_id is not None:
        q = q.where(CreditTransaction.id < before_id)
    return list(session.scalars(q.order_by(CreditTransaction.id.desc()).limit(limit)))


def parse_signed_usd(value: str | None) -> int:
    """'-2.50' or '$3' -> micro-dollars, for adjustments (either sign, not zero)."""
    text = (value or "").strip().replace("$", "")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise AdminError(f"'{value}' is not an amount in USD (e.g. 25 or -0.50)")
    micros = int((amount * 1_000_000).to_integral_value())
    if micros == 0:
        raise AdminError("the amount must not be zero")
    if abs(micros) > MAX_MICROS:
        raise AdminError("the amount must be at most $1,000,000,000 at a time")
    return micros


def set_pricing(session: Session, org: Org, policy: str, percent: str | float | None = None,
                fee_micros: int = 0, actor: str = "cli") -> None:
    """list | markup P% | discount P% | byok (tokens free, optional flat fee per request)."""
    if policy not in POLICIES:
        raise AdminError(f"pricing must be one of {', '.join(POLICIES)}")
    bps = 0
    if policy in ("markup", "discount"):
        try:
            bps = int((Decimal(str(percent)) * 100).to_integral_value())
        except (InvalidOperation, TypeError, ValueError):
            raise AdminError(f"{policy} needs a percentage, e.g. 10") from None
        if bps <= 0 or (policy == "discount" and bps > 10_000) or bps > 1_000_000:
            raise AdminError("the percentage must be above 0 (and at most 100 for a discount)")
    if fee_micros < 0 or (fee_micros and policy != "byok"):
        raise AdminError("a per-request fee applies to the byok policy only")
    org.pricing, org.pricing_bps, org.request_fee_micros = policy, bps, fee_micros
    session.add(AuditLog(actor=actor, action="org.pricing", target=org.name,
                         detail=f"{policy} {bps / 100:g}% fee={fee_micros}", org_id=org.id))
    announce(session, "orgs")
