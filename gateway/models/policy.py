"""Policy: runtime gateway settings, agent configurations, tenant access rules, savings overrides,
budgets and their alerts, plans."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class GatewaySetting(Base):
    """A setting changed at run time from the console (routing strategy, savings defaults...)."""

    __tablename__ = "gateway_setting"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(254), default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AgentConfig(Base):
    """A named agent: `agent:<name>` uses `normal`, `agent:<name>:heavy` and `:max` the others."""

    __tablename__ = "agent_config"
    __table_args__ = (UniqueConstraint("name", "org_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id"), index=True)  # None: global
    normal: Mapped[str] = mapped_column(String(160))
    heavy: Mapped[str | None] = mapped_column(String(160))
    max: Mapped[str | None] = mapped_column(String(160))
    agent_id: Mapped[str | None] = mapped_column(String(120))  # the client's own id for this agent
    role: Mapped[str | None] = mapped_column(String(120))  # what the agent does (coder, reviewer...)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class FeatureOptIn(Base):
    """An org's own choice for one savings layer (on or off), made from its dashboard. It counts
    only while the layer is allowed for the org (services/features.py); otherwise it is ignored."""

    __tablename__ = "feature_opt_in"
    __table_args__ = (UniqueConstraint("org_id", "layer"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    layer: Mapped[str] = mapped_column(String(32))
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_by: Mapped[str] = mapped_column(String(254), default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AccessPolicy(Base):
    """What an org, one of its apps, or one key may use. Unset lists allow everything; a set list
    denies whatever it does not name. Prices are caps in micro-dollars per million tokens."""

    __tablename__ = "access_policy"
    __table_args__ = (UniqueConstraint("org_id", "app_id", "key_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    app_id: Mapped[int | None] = mapped_column(ForeignKey("app.id"))
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_key.id"))
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON)
    allowed_providers: Mapped[list[str] | None] = mapped_column(JSON)
    max_input_micros_per_mtok: Mapped[int | None] = mapped_column(BigInt)
    max_output_micros_per_mtok: Mapped[int | None] = mapped_column(BigInt)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SavingsOverride(Base):
    """Per org (or per app) settings for one savings layer, over the config's `savings:` defaults."""

    __tablename__ = "savings_override"
    __table_args__ = (UniqueConstraint("org_id", "app_id", "layer"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    app_id: Mapped[int | None] = mapped_column(ForeignKey("app.id"))
    layer: Mapped[str] = mapped_column(String(32))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Budget(Base):
    """A USD cap per UTC day, week (from Monday) or month on an org, or one of its users, apps or keys.

    Exactly one of user_id / app_id / key_id is set, or none for the whole org. Hard: over the cap a
    request answers 429 `budget_exceeded` before any upstream call. Soft: alerts at 50/80/100%.
    Rollover: what the previous window left unused is added, at most one window's cap."""

    __tablename__ = "budget"
    __table_args__ = (UniqueConstraint("org_id", "user_id", "app_id", "key_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    app_id: Mapped[int | None] = mapped_column(ForeignKey("app.id"))
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_key.id"))
    amount_micros: Mapped[int] = mapped_column(BigInt)
    window: Mapped[str] = mapped_column(String(8))  # day | week | month
    hard: Mapped[bool] = mapped_column(Boolean, default=True)
    rollover: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BudgetAlert(Base):
    """A soft budget crossed a threshold in a window: shown as a console banner, posted once to the
    webhook. Unique per (budget, window, threshold), so every process alerts at most once."""

    __tablename__ = "budget_alert"
    __table_args__ = (UniqueConstraint("budget_id", "window_start", "threshold"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    budget_id: Mapped[int] = mapped_column(ForeignKey("budget.id", ondelete="CASCADE"))
    window_start: Mapped[datetime]
    threshold: Mapped[int] = mapped_column(Integer)  # percent: 50 | 80 | 100
    spent_micros: Mapped[int] = mapped_column(BigInt, default=0)
    cap_micros: Mapped[int] = mapped_column(BigInt, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Plan(Base):
    """Limits an org subscribes to. A None limit is unlimited; an org without a plan has none."""

    __tablename__ = "plan"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    rpm: Mapped[int | None] = mapped_column(Integer)  # per org
    tpm: Mapped[int | None] = mapped_column(BigInt)
    key_rpm: Mapped[int | None] = mapped_column(Integer)  # per key
    key_tpm: Mapped[int | None] = mapped_column(BigInt)
    max_keys: Mapped[int | None] = mapped_column(Integer)
    batch: Mapped[bool] = mapped_column(Boolean, default=True)
    monthly_micros: Mapped[int | None] = mapped_column(BigInt)  # the plan's price, for display
    features: Mapped[list[str] | None] = mapped_column(JSON)  # savings layers allowed; None: all
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
