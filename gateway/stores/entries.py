"""Cache entries: what the exact cache and the semantic index both keep, and how their rows round-trip.

An `Entry` is one cached answer in memory; its row (`cache_entry` or `semantic_entry`) is written by
the ledger writer from `row_fields(...)` and read back at start by `unexpired_rows(...)`, which
also deletes the expired rows. Times are epoch seconds in memory and naive UTC in the database.

Failure mode: a row written by another version may carry more or fewer fields; `response_from_dict`
keeps the fields this version knows and raises TypeError/ValueError on a row it cannot read (the
loaders skip that row with a warning).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway.memo import MEMO
from gateway.models import CacheEntry, SemanticEntry
from gateway.wire.canonical import ChatResponse, Part, ToolCall, Usage


@dataclass(frozen=True, slots=True)
class Entry:
    response: ChatResponse  # shared by every hit: never mutate it
    created: float  # epoch seconds
    expires: float
    context_key: str = ""  # semantic index: the conversation around the question (hits must match it)
    text: str = ""  # semantic index: the last user message it answered (the near-miss guard compares it)


def epoch(moment: datetime) -> float:
    """A naive UTC datetime (as stored) in epoch seconds."""
    return moment.replace(tzinfo=UTC).timestamp()


def naive_utc(seconds: float) -> datetime:
    """Epoch seconds as the naive UTC datetime the database stores."""
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


# ---- canonical ChatResponse <-> JSON (the `response` column) ----------------------------------

def response_to_dict(resp: ChatResponse) -> dict[str, Any]:
    return dataclasses.asdict(resp)


def _only(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The fields `cls` knows: rows written by another version may carry more, or fewer."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def response_from_dict(data: dict[str, Any]) -> ChatResponse:
    fields = _only(ChatResponse, data)
    fields["content"] = [Part(**_only(Part, p)) for p in data.get("content") or []]
    fields["tool_calls"] = [ToolCall(**_only(ToolCall, c)) for c in data.get("tool_calls") or []]
    fields["usage"] = Usage(**_only(Usage, data.get("usage") or {}))
    return ChatResponse(**fields)


# ---- rows ---------------------------------------------------------------------------------------

def row_fields(entry: Entry, *, org_id: int, scope: str, model: str) -> dict[str, Any]:
    """The columns both tables share, for `WRITER.enqueue_record` (scope and model cut to fit)."""
    return {"org_id": org_id, "scope": scope[:80], "model": model[:160],
            "response": response_to_dict(entry.response), "created_at": naive_utc(entry.created),
            "expires_at": naive_utc(entry.expires)}


def entry_of(row: CacheEntry | SemanticEntry) -> Entry:
    """The in-memory entry of a stored row; TypeError/ValueError when the row is unreadable."""
    return Entry(response_from_dict(row.response), epoch(row.created_at), epoch(row.expires_at),
                 getattr(row, "context_key", ""), getattr(row, "text", ""))


def unexpired_rows(session: Session, table: type[CacheEntry] | type[SemanticEntry],
                   now: float) -> Iterator[CacheEntry | SemanticEntry]:
    """Delete the rows expired at `now`, then yield the others newest first (read in batches)."""
    session.execute(delete(table).where(table.expires_at <= naive_utc(now)))
    yield from session.scalars(select(table).where(table.expires_at > naive_utc(now))
                               .order_by(table.id.desc()).execution_options(yield_per=500))


def load_bound(layer: str, default: int) -> int:
    """How many entries a load keeps per scope or partition: the layer's max_entries, else `default`."""
    config = (MEMO.policy.settings.get("savings") or {}).get(layer) or {}
    return int(config.get("max_entries") or default)
