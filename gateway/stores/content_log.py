"""Content logging: which orgs and apps keep their conversations, and the texts, encrypted.

Off by default. An org (or one of its apps) turns it on with a retention in days
(services/content_logging.py, audited); the settings are held in memory here, reloaded with the
`policy` topic, so the hot path asks memory only. A request's input and output text is encrypted
with AES-256-GCM (a key derived from the gateway's secret key, bound to the request id) at the end
of the request and handed to the ledger writer's queue; the writer inserts it with the next batch.
A retention job deletes rows past `expires_at` (jobs.py).

Texts are what the provider saw and answered: after data protection replaced personal data with
placeholders, before the values are restored. Each side is capped at TEXT_MAX characters.
Failure mode: a text that cannot be captured or encrypted is not logged (the request is unaffected).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import crypto
from gateway.memo import MEMO
from gateway.models import ContentLog, ContentLogSetting, utcnow

log = logging.getLogger(__name__)

TEXT_MAX = 64_000
STREAM_MAX = 1_000_000  # bytes of a stream kept to read its text from
DEPTH = 12
# Stream events that repeat the whole answer (OpenAI Responses): read once, from the deltas.
REPEATS = frozenset({"response.completed", "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.incomplete", "response.failed"})


def aad(request_id: str, side: str) -> bytes:
    return f"content:{request_id}:{side}".encode()


class ContentSettings:
    def __init__(self) -> None:
        self.days: dict[tuple[int, int | None], int] = {}  # (org, app or None) -> retention days (0: off)
        self.key: bytes = b""

    def load(self, session: Session, cipher_key: bytes) -> None:
        self.days = {(s.org_id, s.app_id): s.retention_days for s in session.scalars(select(ContentLogSetting))}
        # a key of its own, derived from memo's: a content row never decrypts as a provider key
        self.key = hashlib.sha256(b"gateway content log v1" + cipher_key).digest()

    def retention(self, org_id: int, app_id: int | None) -> int:
        """Days kept for this caller's requests; 0 when off. An app's own setting wins over its org's."""
        if not self.days:
            return 0
        if app_id is not None and (org_id, app_id) in self.days:
            return self.days[(org_id, app_id)]
        return self.days.get((org_id, None), 0)

    def row(self, *, org_id: int, app_id: int | None, user_id: int | None, request_id: str, days: int,
            input_text: str, output_text: str) -> dict[str, Any]:
        now = utcnow()
        return {"org_id": org_id, "app_id": app_id, "user_id": user_id, "request_id": request_id,
                "input_enc": crypto.encrypt(self.key, input_text[:TEXT_MAX], aad(request_id, "in")),
                "output_enc": crypto.encrypt(self.key, output_text[:TEXT_MAX], aad(request_id, "out")),
                "created_at": now, "expires_at": now + timedelta(days=days)}

    def decrypt(self, row: ContentLog | Any) -> tuple[str, str]:
        """(input, output) of a stored row; ("", "") for one that does not decrypt (a changed secret)."""
        try:
            return (crypto.decrypt(self.key, row.input_enc, aad(row.request_id, "in")),
                    crypto.decrypt(self.key, row.output_enc, aad(row.request_id, "out")))
        except Exception:
            return "", ""


SETTINGS = ContentSettings()
MEMO.listen("policy", SETTINGS.load)


# ---- texts from bodies ----------------------------------------------------------------------------

def _strings(value: Any, out: list[str], depth: int = 0) -> None:
    """Text parts of a message content: a string, or parts with "text" (nested lists bounded)."""
    if depth > DEPTH:
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out, depth + 1)
    elif isinstance(value, dict):
        for key in ("text", "content", "output", "input"):
            if key in value:
                _strings(value[key], out, depth + 1)


def input_text(body: dict[str, Any]) -> str:
    """The conversation as sent: one "role: text" line per message (chat, messages, responses)."""
    lines: list[str] = []
    if body.get("system") is not None:
        parts: list[str] = []
        _strings(body["system"], parts)
        lines.append("system: " + " ".join(parts))
    for key in ("messages", "input"):
        value = body.get(key)
        if isinstance(value, str):
            lines.append("user: " + value)
        elif isinstance(value, list):
            for message in value[:1000]:
                parts = []
                if isinstance(message, dict):
                    _strings(message.get("content", message.get("output", "")), parts)
                    role = message.get("role") or message.get("type") or ""
                else:
                    _strings(message, parts)
                    role = ""
                lines.append(f"{str(role)[:32]}: {' '.join(parts)}")
    return "\n".join(lines)[:TEXT_MAX]


def _answer(obj: Any, out: list[str]) -> None:
    """Answer text of one JSON object: a whole reply or one stream event, in any dialect."""
    if not isinstance(obj, dict) or obj.get("type") in REPEATS:
        return
    for choice in obj.get("choices") or []:
        if isinstance(choice, dict):
            for key in ("message", "delta"):
                part = choice.get(key)
                if isinstance(part, dict) and isinstance(part.get("content"), str):
                    out.append(part["content"])
            if isinstance(choice.get("text"), str):
                out.append(choice["text"])
    if isinstance(obj.get("content"), list):  # Anthropic message
        _strings([c for c in obj["content"] if isinstance(c, dict) and c.get("type") == "text"], out)
    delta = obj.get("delta")
    if isinstance(delta, dict) and isinstance(delta.get("text"), str):  # Anthropic content_block_delta
        out.append(delta["text"])
    elif isinstance(delta, str) and str(obj.get("type", "")).startswith("response.output_text"):
        out.append(delta)
    if isinstance(obj.get("output"), list):  # OpenAI Responses
        for item in obj["output"]:
            if isinstance(item, dict) and item.get("type") == "message":
                _strings(item.get("content"), out)


def output_text(body: bytes | None, chunks: Iterable[bytes] | None) -> str:
    out: list[str] = []
    try:
        if chunks is not None:
            data = b"".join(chunks)
            for line in data.splitlines():
                if line.startswith(b"data:") and line[5:].strip() not in (b"", b"[DONE]"):
                    try:
                        _answer(orjson.loads(line[5:]), out)
                    except orjson.JSONDecodeError:
                        continue
        elif body:
            _answer(orjson.loads(body), out)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return (body or b"")[:TEXT_MAX].decode("utf-8", "replace")
    return "".join(out)[:TEXT_MAX]
