"""Stored responses: who owns a response id and the conversation behind it, per org.

The request path reads and writes an in-memory LRU per org only; rows reach the database through
the ledger writer (`WRITER.enqueue_record`), never synchronously. A lookup that misses the LRU
(evicted, or after a restart) reads the database once and caches the row again.

Tenant isolation is the point of this module: every read takes the caller's org, and an id
created by another org is indistinguishable from an id that does not exist.

Scaled out (`GATEWAY_REDIS_URL`), recent responses and deletions are shared by every worker: `put`
also writes `gw:resp:<org>:<id>` (an hour; up to 1 MB), `delete` leaves a tombstone
`gw:resp:gone:<org>:<id>` for a day, drops the item and tells the other workers to forget their
copy (stores/shared_bus.py). A read asks Redis first (one MGET of item and tombstone), so a
response made on one worker continues on another before its row is written, and one deleted on
any worker is gone on all. Keys carry the org. If Redis is unreachable, reads fall back to memory
and the database (deletes still reach the database at once; another worker's memory may keep a
deleted response until Redis is back or it is evicted).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, select

from gateway import db
from gateway.errors import NotFound
from gateway.ledger.writer import WRITER
from gateway.models import StoredResponse
from gateway.stores import shared, shared_bus
from gateway.wire.openai_responses import input_items

log = logging.getLogger(__name__)

PER_ORG = 1000  # responses kept in memory per org; older ones are read back from the database
RECENT_SECONDS = 3600  # how long Redis keeps a response when scaled out (then the database serves it)
TOMBSTONE_SECONDS = 86_400  # how long a deletion is remembered there
MAX_SHARED_BYTES = 1 << 20  # a larger conversation is not copied to Redis (the database serves it)
PREFIX = "gw:resp:"


class PreviousResponseNotFound(NotFound):
    code = "previous_response_not_found"


@dataclass(frozen=True, slots=True)
class Stored:
    id: str
    org_id: int
    conversation: list[dict[str, Any]]  # input items (history expanded) + output items; never mutated
    response: dict[str, Any]  # the response object as the client received it
    model: str = ""
    provider: str = ""  # the upstream provider that also holds this id (pass-through); "" when built here
    upstream_stored: bool = False


class ResponseStore:
    def __init__(self, per_org: int = PER_ORG) -> None:
        self.per_org = per_org
        self._orgs: dict[int, OrderedDict[str, Stored]] = {}
        self._lock = threading.Lock()  # cheap; guards against the rare native-thread caller

    def put(self, rec: Stored) -> None:
        """Keep `rec` in memory now and queue its row for the writer."""
        self._cache(rec)
        if shared.enabled():
            self._shared_put(rec)
        WRITER.enqueue_record(StoredResponse, {
            "response_id": rec.id, "org_id": rec.org_id, "model": rec.model[:160], "provider": rec.provider,
            "upstream_stored": rec.upstream_stored, "conversation": rec.conversation,
            "response": rec.response,
        })

    def get(self, org_id: int, response_id: str) -> Stored | None:
        """The org's response with this id, or None (also when another org owns it)."""
        if shared.enabled():
            found, rec = self._shared_get(org_id, response_id)
            if found:
                return rec
        with self._lock:
            lru = self._orgs.get(org_id)
            if lru is not None and (rec := lru.get(response_id)) is not None:
                lru.move_to_end(response_id)
                return rec
        rec = self._load(org_id, response_id)
        if rec is not None:
            self._cache(rec)
        return rec

    def delete(self, org_id: int, response_id: str) -> None:
        """Forget the org's response: memory now, then its rows (after any queued insert of it landed)."""
        with self._lock:
            lru = self._orgs.get(org_id)
            if lru is not None:
                lru.pop(response_id, None)
        if shared.enabled():
            self._shared_delete(org_id, response_id)
        WRITER.flush()  # a row still queued would otherwise be written after the delete
        with db.write_lock, db.session_scope() as s:
            s.execute(delete(StoredResponse).where(StoredResponse.org_id == org_id,
                                                   StoredResponse.response_id == response_id))

    def clear(self) -> None:
        with self._lock:
            self._orgs.clear()

    def forget(self, org_id: int, response_id: str) -> None:
        """Drop this worker's copy (another worker deleted it)."""
        with self._lock:
            lru = self._orgs.get(org_id)
            if lru is not None:
                lru.pop(response_id, None)

    # ---- shared through Redis (scaled out) ----------------------------------------------------
    @staticmethod
    def _key(org_id: int, response_id: str) -> str:
        return f"{PREFIX}{org_id}:{response_id}"

    def _shared_put(self, rec: Stored) -> None:
        client = shared.client()
        if client is None:
            return
        value = orjson.dumps([rec.conversation, rec.response, rec.model, rec.provider, rec.upstream_stored])
        if len(value) > MAX_SHARED_BYTES:
            return
        try:
            client.set(self._key(rec.org_id, rec.id), value, ex=RECENT_SECONDS)
        except Exception as e:
            shared.failed(e)

    def _shared_get(self, org_id: int, response_id: str) -> tuple[bool, Stored | None]:
        """(True, the answer) when Redis settles it: the item, or its tombstone (None); else (False, None)."""
        client = shared.client()
        if client is None:
            return False, None
        key = self._key(org_id, response_id)
        try:
            raw, gone = client.mget(key, PREFIX + "gone:" + key.removeprefix(PREFIX))
        except Exception as e:
            shared.failed(e)
            return False, None
        shared.recovered()
        if gone is not None:
            self.forget(org_id, response_id)
            return True, None
        if raw is None:
            return False, None
        try:
            conversation, response, model, provider, upstream_stored = orjson.loads(raw)
        except (TypeError, ValueError):
            return False, None
        rec = Stored(response_id, org_id, conversation, response, model, provider, upstream_stored)
        self._cache(rec)
        return True, rec

    def _shared_delete(self, org_id: int, response_id: str) -> None:
        client = shared.client()
        if client is None:
            return
        key = self._key(org_id, response_id)
        try:
            pipe = client.pipeline(transaction=True)
            pipe.set(PREFIX + "gone:" + key.removeprefix(PREFIX), 1, ex=TOMBSTONE_SECONDS)
            pipe.delete(key)
            pipe.execute()
        except Exception as e:
            shared.failed(e)
            return
        shared_bus.publish("responses", orjson.dumps([org_id, response_id]))

    def _cache(self, rec: Stored) -> None:
        with self._lock:
            lru = self._orgs.setdefault(rec.org_id, OrderedDict())
            lru[rec.id] = rec
            lru.move_to_end(rec.id)
            while len(lru) > self.per_org:
                lru.popitem(last=False)

    @staticmethod
    def _load(org_id: int, response_id: str) -> Stored | None:
        # A miss is rare (eviction, restart); one indexed read by (org_id, response_id).
        with db.session_scope() as s:
            row = s.scalars(select(StoredResponse).where(
                StoredResponse.org_id == org_id, StoredResponse.response_id == response_id,
            ).order_by(StoredResponse.id.desc()).limit(1)).first()
            if row is None:
                return None
            return Stored(row.response_id, row.org_id, row.conversation, row.response, row.model,
                          row.provider, row.upstream_stored)


STORE = ResponseStore()


def _forget_message(payload: bytes) -> None:
    org_id, response_id = orjson.loads(payload)
    STORE.forget(int(org_id), str(response_id))


shared_bus.subscribe("responses", _forget_message)


# ---- the conversation of one request -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Conversation:
    """What a Responses request continues: the org's stored turns before it."""

    history: list[dict[str, Any]]  # input and output items so far; never mutated
    provider: str = ""  # the provider that also holds `previous_response_id` ("" when built here)


def conversation(org_id: int, previous_id: str | None) -> Conversation:
    """The org's conversation behind `previous_id` (empty without one); 404 when the org has none."""
    if not previous_id:
        return Conversation([])
    rec = STORE.get(org_id, previous_id)
    if rec is None:
        raise PreviousResponseNotFound(f"Previous response with id '{previous_id}' not found.",
                                       param="previous_response_id")
    return Conversation(rec.conversation, rec.provider if rec.upstream_stored else "")


def remember(org_id: int, body: dict[str, Any], history: list[dict[str, Any]], response: dict[str, Any], *,
             provider: str = "", upstream_stored: bool = False, model: str = "") -> None:
    """Store a finished response unless the client sent `store: false`."""
    if body.get("store") is False or not response.get("id"):
        return
    conversation = [*history, *input_items(body), *(response.get("output") or ())]
    if model and response.get("model") != model:  # stored as served: the slug, not the upstream's name
        response = {**response, "model": model}
    model = model or str(response.get("model", ""))
    STORE.put(Stored(response["id"], org_id, conversation, response, model, provider, upstream_stored))
