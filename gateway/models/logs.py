"""Logs that are not per request: the audit trail and cross-process change events."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class AuditLog(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(254), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ChangeEvent(Base):
    """Appended by every admin write (console or CLI); servers poll it to refresh memo.py."""

    __tablename__ = "change_event"
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    topic: Mapped[str] = mapped_column(String(32))  # keys | catalog | orgs
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
