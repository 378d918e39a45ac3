"""Tenancy: orgs, apps, users, API keys, credit grants and the credit transaction log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, false
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class Org(Base):
    __tablename__ = "org"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    credits_micros: Mapped[int] = mapped_column(BigInt, default=0)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plan.id"))  # None: no plan limits
    # Pricing policy: list | markup | discount | byok; the percentage in basis points (1% = 100).
    pricing: Mapped[str] = mapped_column(String(16), default="list")
    pricing_bps: Mapped[int] = mapped_column(Integer, default=0)
    request_fee_micros: Mapped[int] = mapped_column(BigInt, default=0)  # byok: flat fee per request
    budget_webhook_url: Mapped[str | None] = mapped_column(String(500))  # soft-budget alerts
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def _slug_from_name(context) -> str:
    """An app made without a slug gets one from its name ("Web Shop" -> "web-shop")."""
    import re

    name = str(context.get_current_parameters().get("name") or "")
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")[:64] or "app"


class App(Base):
    """A program calling the API on behalf of an org; its keys answer 401 while it is inactive."""

    __tablename__ = "app"
    __table_args__ = (Index("ix_app_org_slug", "org_id", "slug", unique=True),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    slug: Mapped[str] = mapped_column(String(64), default=_slug_from_name)
    contact_email: Mapped[str] = mapped_column(String(254), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Deferred results are POSTed here, signed with the app's secret (AES-GCM under GATEWAY_SECRET_KEY).
    webhook_url: Mapped[str | None] = mapped_column(String(500))
    webhook_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Requests without x-gateway-deadline are deferred as if they sent this many seconds (None: never).
    arbitrage_deadline_seconds: Mapped[int | None] = mapped_column(Integer)


class User(Base):
    """A person: console sign-in and, optionally, keys of their own. Super-admins see every org;
    others see their own org only. A disabled user cannot sign in and their keys answer 401."""

    __tablename__ = "user"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_superadmin: Mapped[bool] = mapped_column(Boolean, default=False)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id"), index=True)
    role: Mapped[str] = mapped_column(String(16), default="org-admin")  # super-admin | org-admin | member
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | disabled
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    # Part of every session cookie; bumped on logout and password change, which ends every
    # session signed before (a copied cookie stops working).
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A one-time password (first run, the CLI, a reset in the console): changed at the next sign-in.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_key"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    name: Mapped[str] = mapped_column(String(120), default="")
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256, never the secret
    prefix: Mapped[str] = mapped_column(String(16))  # shown in the console to tell keys apart
    scope: Mapped[str] = mapped_column(String(16), default="inference")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    app_id: Mapped[int | None] = mapped_column(ForeignKey("app.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class CreditGrant(Base):
    """Credits added to an org (top-ups, grants); charges live in the ledger."""

    __tablename__ = "credit_grant"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    amount_micros: Mapped[int] = mapped_column(BigInt)
    note: Mapped[str] = mapped_column(String(255), default="")
    created_by: Mapped[str] = mapped_column(String(254), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CreditTransaction(Base):
    """One double-entry movement of credits: `amount_micros` (> 0) leaves `debit` and enters `credit`.

    Accounts: "org" (the org's wallet, `org_id`), "funding" (top-ups come from outside), "usage"
    (charges go to the house), "adjustment" (operator corrections either way). Kinds: topup, charge,
    refund, adjustment. An org's balance is what entered "org" minus what left it; Org.credits_micros
    is that sum kept current. Charges are written per ledger-writer batch (`requests` rows summed).
    """

    __tablename__ = "credit_txn"
    __table_args__ = (Index("ix_credit_txn_org_created", "org_id", "created_at"),)
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))
    kind: Mapped[str] = mapped_column(String(16))
    debit: Mapped[str] = mapped_column(String(16))
    credit: Mapped[str] = mapped_column(String(16))
    amount_micros: Mapped[int] = mapped_column(BigInt)
    requests: Mapped[int] = mapped_column(Integer, default=0)  # charges: ledger rows summed
    reason: Mapped[str] = mapped_column(String(500), default="")
    actor: Mapped[str] = mapped_column(String(254), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
