"""Idempotency: `Idempotency-Key` on an inference POST makes a retry safe (enforcing).

Scoped to the key's org and kept 24 hours (gateway.stores.idempotency). The same key with the
same endpoint and body replays the first reply (status, headers, body; a stream as a stream) with
`idempotent-replayed: true`, without calling a provider and charging nothing: the replay's own
ledger row has charge 0, cache `replay` and the saving under `idempotent_replay`. The same key
with another body is 422 `idempotency_key_reused`; while the first request still runs, 409
`idempotency_key_in_use` with `retry-after` (the IETF Idempotency-Key draft's semantics).

Only a completed success is kept: a request that failed, or a stream the client left, releases
its key, so a retry runs again. It runs just before the gate's money checks, after the same scope
check: a replay, a 409 or a 422 costs nothing, so none takes a credit hold or a rate-limit token
(a retry of a request still running gets its 409 even when the balance covers one hold only).
A reply larger than MAX_STORED_BYTES is relayed, not kept.
"""

from __future__ import annotations

import dataclasses
import hashlib

import orjson

from gateway.errors import IdempotencyKeyInUse, IdempotencyKeyReused, InvalidRequest
from gateway.pipeline import gate, meter
from gateway.pipeline.context import Reply, RequestContext, keep
from gateway.stores.idempotency import STORE, Record
from gateway.wire.canonical import Usage

name, enforcing = "idempotency", True

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
MAX_STORED_BYTES = 8 << 20
RETRY_AFTER_SECONDS = 1
MECHANISM = "idempotent_replay"
# The cost, request id and framing headers describe one request: the replay gets its own.
_OWN_HEADERS = frozenset({"content-length", "content-type", "x-request-id", "transfer-encoding"})


def fingerprint(ctx: RequestContext) -> str:
    """The endpoint and the body as JSON with sorted keys: clients serialize the same request in
    different bytes (key order, spacing), and a retry is the same request."""
    body = orjson.dumps(ctx.body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(ctx.endpoint.encode() + b"\0" + body).hexdigest()


def before(ctx: RequestContext) -> Reply | None:
    key = ctx.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest(f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable characters.",
                             param=HEADER)
    assert ctx.principal is not None
    if ctx.principal.scope not in gate.INFERENCE_SCOPES:
        return None  # the gate refuses it
    fp = fingerprint(ctx)
    found = STORE.claim(ctx.principal.org_id, key, fp, ctx.request_id)
    if found is None:
        ctx.extra[name] = {"key": key}
        return None
    if found.fingerprint != fp:
        raise IdempotencyKeyReused(f"This {HEADER} was used with a different request; use a new key for a new "
                                   "request.", param=HEADER)
    if found.running:
        raise IdempotencyKeyInUse(f"A request with this {HEADER} is still being processed; retry after it "
                                  "completes.", retry_after=RETRY_AFTER_SECONDS)
    return replay(ctx, found)


def replay(ctx: RequestContext, found: Record) -> Reply:
    """The stored reply, priced as a replay: nothing charged, the original's usage as the benchmark."""
    ctx.cache, ctx.cache_mechanism, ctx.charge_micros = "replay", MECHANISM, 0
    ctx.usage = Usage(**{k: v for k, v in (found.usage or {}).items() if k in _USAGE_FIELDS})
    ctx.status = found.status
    ctx.mark_first_byte()
    meter.price(ctx)
    headers = {**(found.headers or {}), **meter.cost_headers(ctx), "idempotent-replayed": "true",
               "x-gateway-original-request-id": found.request_id}
    if found.chunks is not None:
        return Reply(status=found.status, chunks=iter(found.parts()), content_type=found.content_type,
                     headers=headers)
    return Reply(status=found.status, body=found.body, content_type=found.content_type, headers=headers)


_USAGE_FIELDS = frozenset(f.name for f in dataclasses.fields(Usage))


def on_reply(ctx: RequestContext, reply: Reply) -> Reply:
    """Keep what the client receives (a stream is teed as it passes, never buffered first)."""
    state = ctx.extra.get(name)
    if state is None:
        return reply
    state["headers"] = {k: v for k, v in reply.headers.items()
                        if k.lower() not in _OWN_HEADERS and not k.lower().startswith("x-gateway-")}
    return keep(reply, state, "chunks", MAX_STORED_BYTES)


def after(ctx: RequestContext, reply: Reply | None) -> None:
    state = ctx.extra.get(name)
    if state is None:
        return
    assert ctx.principal is not None
    org_id, key = ctx.principal.org_id, state["key"]
    done = reply is not None and ctx.error is None and 200 <= reply.status < 300
    if reply is not None and reply.chunks is not None:
        done = done and "chunks" in state and ctx.status < 400
        body = b"".join(state.get("chunks") or ())
        chunks: list[int] | None = [len(c) for c in state.get("chunks") or ()]
    else:
        body = state.get("body") or b""
        chunks = None
        done = done and "body" in state and len(body) <= MAX_STORED_BYTES
    if not done:
        STORE.release(org_id, key, ctx.request_id)
        return
    assert reply is not None
    STORE.complete(org_id, key, ctx.request_id, status=reply.status, content_type=reply.content_type,
                   headers=state.get("headers") or {}, body=body, chunks=chunks,
                   usage=dataclasses.asdict(ctx.usage))
