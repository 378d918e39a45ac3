"""Scheduled job ticks claimed by one worker: the row's unique (job, tick) is the lock."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class JobRun(Base):
    __tablename__ = "job_run"
    __table_args__ = (UniqueConstraint("job", "tick", name="uq_job_run_job_tick"),)

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    job: Mapped[str] = mapped_column(String(64))
    tick: Mapped[int] = mapped_column(BigInt)  # epoch seconds // the job's interval
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
