"""Plans: named limits (rpm, tpm per org; key_rpm, key_tpm per key; max_keys; batch; features) an
org subscribes to, declared in the config YAML (`plans:`) or edited in the console.

An org has at most one plan; an org without one has no plan limits. Writes announce "orgs" (the
in-memory plan rides on the org), so running servers apply them within a second.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.ledger.pricing import usd_to_micros
from gateway.memo import announce
from gateway.models import ApiKey, AuditLog, Org, Plan
from gateway.services.errors import AdminError

LIMITS = ("rpm", "tpm", "key_rpm", "key_tpm", "max_keys")
# What the console offers to create (a starting point, edited afterwards).
PRESETS: dict[str, dict[str, Any]] = {
    "trial": {"rpm": 10, "tpm": 20_000, "key_rpm": 10, "key_tpm": 20_000, "max_keys": 2, "batch": False,
              "monthly_usd": 0},
    "starter": {"rpm": 60, "tpm": 200_000, "max_keys": 10, "batch": True, "monthly_usd": 49},
    "growth": {"rpm": 600, "tpm": 2_000_000, "max_keys": 50, "batch": True, "monthly_usd": 249},
    "pro": {"rpm": 3000, "tpm": 10_000_000, "max_keys": 250, "batch": True, "monthly_usd": 999},
}


def upsert(session: Session, spec: dict[str, Any], actor: str = "cli") -> Plan:
    """Create or replace a plan from its config shape ({name, rpm, tpm, ..., monthly_usd, features}).
    Omitted limits are unlimited."""
    from gateway.pipeline.savings import LAYERS

    name = str(spec.get("name") or "").strip()
    if not name or len(name) > 64:
        raise AdminError("a plan needs a name of at most 64 characters")
    values: dict[str, Any] = {}
    for field in LIMITS:
        v = spec.get(field)
        if v in (None, ""):
            values[field] = None
            continue
        try:
            v = int(v)
        except (TypeError, ValueError):
            raise AdminError(f"{field} must be a whole number") from None
        if v <= 0:
            raise AdminError(f"{field} must be above 0 (leave it empty for no limit)")
        values[field] = v
    features = spec.get("features")
    if features is not None:
        features = [f.strip() for f in features if f and f.strip()]
        unknown = sorted(set(features) - set(LAYERS))
        if unknown:
            raise AdminError(f"unknown features {', '.join(unknown)} (savings layers: {', '.join(LAYERS)})")
    monthly = spec.get("monthly_usd")
    try:
        monthly_micros = None if monthly in (None, "") else usd_to_micros(Decimal(str(monthly)))
    except ArithmeticError:
        raise AdminError("monthly_usd must be an amount in USD") from None
    if monthly_micros is not None and monthly_micros < 0:
        raise AdminError("monthly_usd must not be negative")
    plan = session.scalar(select(Plan).where(Plan.name == name)) or Plan(name=name)
    for field, v in values.items():
        setattr(plan, field, v)
    plan.batch = bool(spec.get("batch", True))
    plan.monthly_micros = monthly_micros
    plan.features = features
    session.add(plan)
    session.flush()
    session.add(AuditLog(actor=actor, action="plan.set", target=name,
                         detail=", ".join(f"{k}={v}" for k, v in values.items() if v is not None)))
    announce(session, "orgs")
    return plan


def by_name(session: Session, name: str) -> Plan:
    plan = session.scalar(select(Plan).where(Plan.name == name))
    if plan is None:
        known = ", ".join(session.scalars(select(Plan.name).order_by(Plan.name))) or "none defined"
        raise AdminError(f"no plan named '{name}' (plans: {known})")
    return plan


def delete(session: Session, plan: Plan, actor: str = "cli") -> None:
    users = session.scalar(select(func.count()).select_from(Org).where(Org.plan_id == plan.id))
    if users:
        raise AdminError(f"plan '{plan.name}' is in use by {users} org(s): move them to another plan first")
    session.delete(plan)
    session.add(AuditLog(actor=actor, action="plan.delete", target=plan.name))
    announce(session, "orgs")


def set_org_plan(session: Session, org: Org, plan: Plan | None, actor: str = "cli") -> None:
    org.plan_id = plan.id if plan else None
    session.add(AuditLog(actor=actor, action="org.plan", target=org.name,
                         detail=plan.name if plan else "none", org_id=org.id))
    announce(session, "orgs")


def check_key_quota(session: Session, org: Org) -> None:
    """Refuse a new key beyond the plan's max_keys (active keys count)."""
    if org.plan_id is None:
        return
    plan = session.get(Plan, org.plan_id)
    if plan is None or plan.max_keys is None:
        return
    active = session.scalar(select(func.count()).select_from(ApiKey).where(
        ApiKey.org_id == org.id, ApiKey.revoked_at.is_(None)))
    if active >= plan.max_keys:
        raise AdminError(f"org {org.name} has {active} active keys, the most its plan '{plan.name}' allows "
                         f"({plan.max_keys}); revoke a key or move the org to a larger plan")


def list_plans(session: Session) -> list[Plan]:
    return list(session.scalars(select(Plan).order_by(Plan.name)))
