"""DLP: personal data and secrets become placeholders before anything leaves; answers get the
values back before the client sees them (enforcing).

Runs right after the gate and before the savings layers, so caches, in-flight dedupe and the
stored Responses history all see (and key on) the placeholder form only. The policy comes from
memory (MEMO.dlp_policy: the app's setting for app keys, else the org's); no request header can
turn it off. The request body is rewritten in place (gateway/dlp/walk.py), so a pass-through
route forwards the redacted body with every other field as the client sent it, and a translated
route decodes the redacted body.

The placeholder mapping lives in `ctx.extra["dlp"]` for this request only; `on_reply` restores
whole bodies and wraps streams (gateway/dlp/restore.py). `after` queues one activity row per rule
that matched (counts and positions, never a value) for the ledger writer: no database write on
the request path.

Fail closed: a rule with action `block` answers 400 `dlp_blocked` naming the rule; a detector
failure (or a scope whose custom rule cannot be compiled) answers 503 `dlp_unavailable`. In both
cases nothing is sent upstream.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import gevent
import orjson

from gateway.dlp import restore, walk
from gateway.dlp.engine import Blocked, Redactor
from gateway.errors import DlpBlocked, DlpUnavailable, GatewayError
from gateway.ledger.writer import WRITER
from gateway.memo import MEMO
from gateway.models import DlpEvent
from gateway.pipeline.context import Reply, RequestContext
from gateway.stores import responses as responses_store

log = logging.getLogger(__name__)

name, enforcing = "dlp", True

STREAM_DIALECTS = {"chat.completions": "chat", "messages": "messages", "responses": "responses"}
MAX_POSITIONS = 50  # per activity row
YIELD_AFTER_CHARS = 16_384


def before(ctx: RequestContext) -> Reply | None:
    p = ctx.principal
    if p is None or ctx.endpoint not in walk.WALKERS:
        return None
    policy = MEMO.dlp_policy(p.org_id, p.app_id)
    if policy is None or not policy.active:
        return None
    redactor = ctx.extra[name] = Redactor(policy)
    if policy.error:
        log.error("dlp scope %s cannot be enforced (%s); request refused", policy.scope, policy.error)
        raise DlpUnavailable("Data protection is on for this key but cannot run; the request was not sent.")
    try:
        slots = walk.slots(ctx.endpoint, ctx.body)
        for text in walk.texts(slots):
            redactor.reserve(text)
        if ctx.endpoint == "responses" and ctx.body.get("previous_response_id"):
            # stored turns already hold placeholders: their numbers are taken (the responses stage,
            # after this one, puts the same conversation on the context; an unknown id is its 404)
            stored = responses_store.STORE.get(p.org_id, str(ctx.body["previous_response_id"]))
            if stored is not None:
                redactor.reserve(orjson.dumps(stored.conversation).decode())
        walk.rewrite(slots, lambda text: _redact(redactor, text))
    except Blocked as b:
        raise DlpBlocked(f"This request contains data that the '{b.rule}' data protection rule blocks; "
                         "nothing was sent.", param=b.rule) from None
    except GatewayError:
        raise
    except Exception as e:  # never the message: it may quote the text being checked
        log.error("dlp detector failed (%s); request refused", type(e).__name__)
        raise DlpUnavailable("Data protection could not check this request; it was not sent.") from None
    return None


def _redact(redactor: Redactor, text: str) -> str:
    out = redactor.redact(text)
    if len(text) > YIELD_AFTER_CHARS:  # scanning is CPU work on the event loop: let other requests run
        gevent.sleep(0)
    return out


def on_reply(ctx: RequestContext, reply: Reply) -> Reply:
    redactor: Redactor | None = ctx.extra.get(name)
    if redactor is None or not redactor.restorable or reply.status != 200:
        return reply
    table = redactor.restorable
    if reply.chunks is not None:
        dialect = STREAM_DIALECTS.get(ctx.endpoint)
        if dialect is not None:
            reply.chunks = restore.SseRestorer(dialect, table).wrap(reply.chunks)
    elif reply.body:
        reply.body = restore.restore_body(reply.body, table)
    return reply


def after(ctx: RequestContext, reply: Reply | None) -> None:
    redactor: Redactor | None = ctx.extra.get(name)
    if redactor is None or not redactor.findings or ctx.principal is None:
        return
    by_rule: dict[tuple[str, str], list] = defaultdict(list)
    for f in redactor.findings:
        by_rule[(f.rule, f.action)].append([f.slot, f.start, f.end])
    for (rule, action), positions in by_rule.items():
        WRITER.enqueue_record(DlpEvent, {
            "org_id": ctx.principal.org_id, "app_id": ctx.principal.app_id, "action": action,
            "scope": redactor.policy.scope, "rule": rule, "matches": len(positions), "size": len(ctx.raw),
            "request_id": ctx.request_id, "endpoint": ctx.endpoint,
            "detail": {"positions": positions[:MAX_POSITIONS], "kind": _kind(redactor, rule)},
        })


def _kind(redactor: Redactor, rule: str) -> str:
    return next((f.kind for f in redactor.findings if f.rule == rule), "")
