"""Tenancy: orgs, apps, console users, API keys and credit grants."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class Org(Base):
    __tablename__ = "org"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    credits_micros: Mapped[int] = mapped_column(BigInt, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class App(Base):
    __tablename__ = "app"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    """A console user. Super-admins see every org; others see their own org only."""

    __tablename__ = "user"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_superadmin: Mapped[bool] = mapped_column(Boolean, default=False)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id"), index=True)
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
