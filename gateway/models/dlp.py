"""Data protection: settings per org or app, an org's custom rules, activity and its daily rollup.

Activity rows and rollups hold rule ids, counts and positions only: never a detected value (the
mapping from placeholders to values lives in one request's memory and nowhere else).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class DlpSetting(Base):
    """Protection for one org (app_id None: user keys and keys with neither user nor app) or one of
    its apps (app keys; an app without a row follows its org). `rules`: rule id -> action."""

    __tablename__ = "dlp_setting"
    __table_args__ = (UniqueConstraint("org_id", "app_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    app_id: Mapped[int | None] = mapped_column(ForeignKey("app.id"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    rules: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    regions: Mapped[list[str] | None] = mapped_column(JSON)  # phone regions; None: the defaults
    updated_by: Mapped[str] = mapped_column(String(254), default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DlpCustomRule(Base):
    """An org's own pattern, enabled per scope as `custom:<name>` in DlpSetting.rules."""

    __tablename__ = "dlp_custom_rule"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    name: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(24))
    pattern: Mapped[str] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(254), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DlpEvent(Base):
    """One rule's matches in one request: counts and positions, never the value."""

    __tablename__ = "dlp_event"
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    app_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(8))  # redact | mask | block | log
    scope: Mapped[str] = mapped_column(String(32))  # org:3 | app:7
    rule: Mapped[str] = mapped_column(String(64))
    matches: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)  # bytes of the request body
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    endpoint: Mapped[str] = mapped_column(String(32), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {"positions": [[text, start, end]...]}


class DlpRollup(Base):
    """Per org, day, rule and action: requests and matches (the console's rule-by-day counts)."""

    __tablename__ = "dlp_rollup"
    __table_args__ = (UniqueConstraint("org_id", "day", "rule", "action"),)
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    day: Mapped[datetime] = mapped_column()
    rule: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(8))
    requests: Mapped[int] = mapped_column(BigInt, default=0)
    matches: Mapped[int] = mapped_column(BigInt, default=0)
