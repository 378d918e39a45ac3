"""Error reports from ledger rows: every failed request becomes one `error_report` row, written by
the ledger writer in the same transaction as the rows (never on the request path).

Source: "upstream" when a provider was tried (the failure came back from it or on the way to it),
"client" for a client that went away mid-stream (499), "gateway" otherwise (auth, limits, credits,
bad input). Clients add their own reports with POST /v1/error-reports (source "client", api/).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MESSAGE_MAX = 2000


def source_of(row: dict[str, Any]) -> str:
    if row["status"] == 499:
        return "client"
    return "upstream" if row.get("attempts") and row.get("provider") else "gateway"


def from_ledger(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """An error_report row per ledger row with status >= 400."""
    out = []
    for row in rows:
        if row["status"] < 400:
            continue
        out.append({
            "org_id": row["org_id"], "source": source_of(row),
            "type": (row.get("error_type") or ("client_closed" if row["status"] == 499 else "error"))[:64],
            "model": (row.get("requested_model") or "")[:160],
            "message": (row.get("error_message") or "")[:MESSAGE_MAX], "status": row["status"],
            "key_id": row.get("key_id"), "user_id": row.get("user_id"), "app_id": row.get("app_id"),
            "agent": "", "version": "", "request_id": row["request_id"], "created_at": row["created_at"],
        })
    return out
