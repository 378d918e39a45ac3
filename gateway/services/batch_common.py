"""What batch submission and settlement share: settings, ids, compression, files, status rollup.

Kept apart so that services/batches.py (submission, reads, cancel) and services/batch_settle.py
(polling, settlement) can both use it without importing each other.
"""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import Batch, BatchFile, BatchPart, BatchRequest, utcnow
from gateway.providers import anthropic_batch, openai_batch
from gateway.providers.batch_api import OPEN

# Provider kind -> its batch API adapter.
ADAPTERS = {"openai": openai_batch, "anthropic": anthropic_batch}


@dataclass
class Config:
    poll_min_seconds: float = 5.0
    poll_max_seconds: float = 600.0
    max_lines: int = 50_000
    retention_days: int = 29


CONFIG = Config()


def configure(settings) -> None:
    CONFIG.poll_min_seconds = settings.batch_poll_min_seconds
    CONFIG.poll_max_seconds = max(settings.batch_poll_max_seconds, settings.batch_poll_min_seconds)
    CONFIG.max_lines = settings.batch_max_lines
    CONFIG.retention_days = settings.batch_retention_days


def z(data: bytes) -> bytes:
    return zlib.compress(data, 6)


def unz(data: bytes | None) -> bytes:
    return zlib.decompress(data) if data else b""


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def at_pct(micros: int, pct: int) -> int:
    return (micros * pct + 99) // 100  # rounded up: a hold never falls short


def store_file(session: Session, org_id: int, purpose: str, filename: str, content: bytes, lines: int,
               prefix: str = "file-") -> BatchFile:
    now = utcnow()
    f = BatchFile(public_id=new_id(prefix), org_id=org_id, purpose=purpose, filename=filename[:255] or "file.jsonl",
                  bytes=len(content), lines=lines, content_z=z(content), created_at=now,
                  expires_at=now + timedelta(days=CONFIG.retention_days))
    session.add(f)
    session.flush()
    return f


def refresh_status(session: Session, batch: Batch, now: datetime) -> None:
    """The batch's status from its parts while any is open (the poller settles the rest)."""
    parts = list(session.scalars(select(BatchPart).where(BatchPart.batch_id == batch.id)))
    open_parts = [p for p in parts if not p.done]
    if not open_parts:
        if batch.status in OPEN:
            batch.status = "finalizing"  # every part has answered: the settle step finishes it
            batch.finalizing_at = batch.finalizing_at or now
        return
    if batch.status == "cancelling":
        return
    statuses = {p.status for p in open_parts}
    status = ("validating" if "validating" in statuses else "in_progress" if "in_progress" in statuses
              else "finalizing")
    batch.status = status
    if status in ("in_progress", "finalizing"):
        batch.in_progress_at = batch.in_progress_at or now
    if status == "finalizing":
        batch.finalizing_at = batch.finalizing_at or now


def requests_of(session: Session, batch_id: int) -> list[BatchRequest]:
    return list(session.scalars(select(BatchRequest).where(BatchRequest.batch_id == batch_id)
                                .order_by(BatchRequest.line)))


def epoch(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() if value.tzinfo else
                                          (value - datetime(1970, 1, 1)).total_seconds())


def iter_lines(items: Iterable[dict]) -> bytes:
    return b"".join(orjson.dumps(i) + b"\n" for i in items)
