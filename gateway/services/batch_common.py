"""What batch submission and settlement share: settings, ids, compression, files, status rollup.

Kept apart so that services/batches.py (submission, reads, cancel) and services/batch_settle.py
(polling, settlement) can both use it without importing each other.
"""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import tokens
from gateway.ledger import attribution
from gateway.models import Batch, BatchFile, BatchPart, BatchRequest, utcnow
from gateway.providers import anthropic_batch, openai_batch
from gateway.providers.batch_api import OPEN, Outcome
from gateway.routing.routes import ProviderInfo, RouteInfo
from gateway.settings import Settings
from gateway.wire.canonical import Usage

# Provider kind -> its batch API adapter.
ADAPTERS = {"openai": openai_batch, "anthropic": anthropic_batch}


# The defaults are GATEWAY_BATCH_* settings' own (gateway/settings.py): one place states them.
_DEFAULT = {f.name: f.default for f in fields(Settings)}


@dataclass
class Config:
    poll_min_seconds: float = _DEFAULT["batch_poll_min_seconds"]
    poll_max_seconds: float = _DEFAULT["batch_poll_max_seconds"]
    max_lines: int = _DEFAULT["batch_max_lines"]
    retention_days: int = _DEFAULT["batch_retention_days"]
    concurrency: int = _DEFAULT["batch_concurrency"]
    yield_in_flight: int = _DEFAULT["batch_yield_in_flight"]
    arbitrage_min_seconds: float = _DEFAULT["batch_arbitrage_min_seconds"]
    arbitrage_max_requests: int = _DEFAULT["batch_arbitrage_max_requests"]
    arbitrage_max_age_seconds: float = _DEFAULT["batch_arbitrage_max_age_seconds"]
    # The completion window every batch gets (`24h`, the only one OpenAI and Anthropic offer); not
    # an operator setting: tests shorten it to see the gateway's own batches expire.
    window_seconds: float = 86400.0


CONFIG = Config()
HOLD_MARGIN_SECONDS = 6 * 3600  # a batch's hold outlives its window by this much (results, settlement)


def hold_ref(public_id: str, micros: int) -> str:
    """A batch's hold's name, rebuilt from its row after a restart or on another worker (the amount
    is in it: a batch whose hold grows gets a new one)."""
    return f"batch:{public_id}:{micros}"


def topup_ref(public_id: str, part_id: int, micros: int) -> str:
    """The name of what a part that fell back to the gateway's run added to its batch's hold."""
    return f"batch:{public_id}:part{part_id}:{micros}"


def part_key(public_id: str, part_id: int) -> str:
    """The part's name at its provider (OpenAI batch `metadata`): a recovery finds its batch by it.
    The batch's random public id keeps it unique across gateways sharing one provider account."""
    return f"{public_id}/{part_id}"


def hold_ttl(expires_at: datetime | None, now: datetime) -> float:
    """How long Redis keeps a batch's hold if nobody settles it: to its window's end, plus margin."""
    left = (expires_at - now).total_seconds() if expires_at is not None else CONFIG.window_seconds
    return max(0.0, left) + HOLD_MARGIN_SECONDS


def configure(settings) -> None:
    CONFIG.poll_min_seconds = settings.batch_poll_min_seconds
    CONFIG.poll_max_seconds = max(settings.batch_poll_max_seconds, settings.batch_poll_min_seconds)
    CONFIG.max_lines = settings.batch_max_lines
    CONFIG.retention_days = settings.batch_retention_days
    CONFIG.concurrency = max(1, settings.batch_concurrency)
    CONFIG.yield_in_flight = max(1, settings.batch_yield_in_flight)
    CONFIG.arbitrage_min_seconds = settings.batch_arbitrage_min_seconds
    CONFIG.arbitrage_max_requests = max(1, settings.batch_arbitrage_max_requests)
    CONFIG.arbitrage_max_age_seconds = settings.batch_arbitrage_max_age_seconds


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


def price(r: BatchRequest, usage: Usage, money) -> tuple[int, int, dict[str, int]]:
    """(benchmark, charge, saved by mechanism) of one succeeded request, after the org's policy,
    attributed as the synchronous path does (ledger/attribution.py): the benchmark is the request
    on the requested model's reference route with the provider's own caching (not a saving of
    ours, so no `prompt_cache` share: the gateway places no breakpoints in a batch), `routing` the
    difference to the route used, and `batch` the batch discount off that route's price (none for
    a batch the gateway runs itself, batch percent 100). The shares sum exactly to benchmark - charge."""
    p = orjson.loads(r.prices_json)
    provider = ProviderInfo(0, r.provider, p["kind"], "", None)
    route = RouteInfo(0, r.model, provider, r.upstream_model, p["in"], p["out"], p["cached"], None, 0)
    same = (p["ref_in"], p["ref_out"], p.get("ref_cached", p["cached"])) == (p["in"], p["out"], p["cached"])
    reference = route if same else RouteInfo(0, r.model, provider, r.upstream_model, p["ref_in"], p["ref_out"],
                                             p.get("ref_cached"), None, 0)
    benchmark, full, saved = attribution.price_miss(money, attribution.Miss(reference, route, usage, usage, usage, {}))
    charge = at_pct(full, p["pct"]) if p["pct"] < 100 else full
    if full != charge:
        saved["batch"] = full - charge
    return benchmark, charge, saved


def usage_of(r: BatchRequest) -> Usage:
    """The usage recorded on a request's row (what it is priced by)."""
    return Usage(r.input_tokens, r.output_tokens, r.cached_tokens, r.cache_write_tokens or 0)


def record_one(r: BatchRequest, o: Outcome, money) -> None:
    """One request's outcome on its row: status, result (compressed), usage and price if it succeeded.
    A success whose usage counts are malformed (wrong types, negative) is still charged: the counts
    it got right are kept, the others estimated (the prompt counted, the output from the reply's
    text), and the row says so (`usage_estimated`), as the synchronous meter does."""
    r.status = o.kind
    r.upstream_id = (o.upstream_id or "")[:128] or None
    r.result_z = z(orjson.dumps({"status_code": o.status_code, "body": o.body, "error": o.error}))
    if o.kind == "succeeded":
        u = _estimated(r, o) if o.usage.unknown else o.usage
        r.input_tokens, r.output_tokens, r.cached_tokens, r.cache_write_tokens = (
            u.input_tokens, u.output_tokens, u.cached_tokens, u.cache_write_tokens)
        r.usage_estimated = bool(o.usage.unknown)
        r.benchmark_micros, r.charge_micros, _ = price(r, usage_of(r), money)
        r.saved_micros = r.benchmark_micros - r.charge_micros
    else:
        r.charge_micros = r.benchmark_micros = r.saved_micros = 0


def _estimated(r: BatchRequest, o: Outcome) -> Usage:
    u = o.usage
    raw = unz(r.body_z)
    try:  # the line's messages as OpenAI counts them; anything else, the body's size bound
        prompt = tokens.count_messages(orjson.loads(raw)["messages"])
    except Exception:
        prompt = tokens.bound(raw)
    inputs = u.input_tokens if u.input_tokens > 0 else prompt
    outputs = u.output_tokens if u.output_tokens > 0 else max(1, tokens.count(" ".join(_texts(o.body))))
    return Usage(inputs, outputs, min(max(u.cached_tokens, 0), inputs), min(max(u.cache_write_tokens, 0), inputs))


def _texts(obj: Any, depth: int = 0) -> list[str]:
    """The reply's text (`content` and `text` strings, anywhere in the body)."""
    if depth > 8:
        return []
    if isinstance(obj, dict):
        out = []
        for k, v in obj.items():
            out += [v] if k in ("content", "text") and isinstance(v, str) else _texts(v, depth + 1)
        return out
    if isinstance(obj, list):
        return [t for item in obj for t in _texts(item, depth + 1)]
    return []
