"""Semantic cache: a request that differs from a cached one only in the wording of its last user
message, in ways known to keep its meaning, is answered from the cached response, in the client's
dialect, stream or not.

Advisory: a failure here (no embedder, a failing embeddings route) skips the cache, never the request.

Eligible requests are those the exact cache would serve (cache_keys.eligible: a reproducible chat
request; `x-gateway-cache: bypass` and `Cache-Control: no-store` skip) whose last message is a
user message of plain text, in a conversation of at most `max_turns` user turns. The context
key is a sha256 of everything but that text (endpoint, scope, resolved model, parameters, system
prompt, tools, earlier turns), of the text's pasted context (a long message's paragraphs before its
question: semantic_match.split_context) and of the embedder's id; only entries with the same
context key are compared, so pasted context must be identical.

The decision is semantic_match.refusal over the whole question, never a similarity score: typos,
case, white space, politeness, vouched synonyms and a moved prepositional phrase keep an answer;
any other difference (number, unit, name, negation, format, scope, a swapped relation) refuses.
Embeddings only pick candidates: a context with at most FEW live entries is compared directly (no
embedding on the request path); a larger one is searched in the scope's index
(gateway.stores.semantic_index) for the CANDIDATES nearest at cosine >= `threshold`, the question
alone embedded (the embedder reads 256 word pieces; pasted context is compared by its hash). A
miss is stored in the background (its embedding off the request path); the next request of the
same context waits for that store, so it is found.

A hit answers with `x-gateway-cache: semantic` and `x-gateway-similarity` (cosine, 4 decimals; 1
when no embedding was needed), mechanism `semantic_cache`, charge 0; the replayed usage is the
benchmark. A miss whose nearest candidate was refused says why in `x-gateway-semantic-reason`
(a reason, never the other prompt's words). Settings (savings.semantic_cache): enabled (off by
default), threshold, max_turns, ttl_seconds, max_entries (per scope and model), embeddings_model (a
gateway embeddings model slug instead of the local model), shared_scope. Headers:
`x-gateway-semantic-cache: on|off`. Optional verifier model for borderline refusals (settings
verifier_model, verifier_timeout_seconds; see semantic_verifier): a "yes" serves the candidate
with `x-gateway-semantic-reason: verified`, its call's cost counted as this layer's. Quality on
the labelled development set (tests/data/semantic_dev.py, holdout half):
`python -m bench.semantic_threshold`.
"""

from __future__ import annotations

import dataclasses
import logging
from hashlib import sha256
from typing import Any

import gevent
import orjson

from gateway.errors import GatewayError
from gateway.pipeline import savings
from gateway.pipeline.context import Reply, RequestContext
from gateway.pipeline.savings import cache_keys, embeddings, exact_cache, semantic_verifier
from gateway.pipeline.savings.semantic_match import refusal, split_context

log = logging.getLogger(__name__)

name, enforcing = "semantic_cache", False

MAX_CAPTURE_BYTES = exact_cache.MAX_CAPTURE_BYTES
CANDIDATES = 5  # nearest entries the decision looks at, best first
FEW = 16  # a context with at most this many entries is compared without embedding the request
STORED_FINISH = ("stop", "length", "tool_calls")  # answers worth replaying
STORE_WAIT_SECONDS = 2.0  # how long a request waits for the same context's store still embedding
_storing: dict[str, gevent.Greenlet] = {}  # context key -> the store in progress


# ---- the stage ----------------------------------------------------------------------------------

def before(ctx: RequestContext) -> Reply | None:
    if not savings.enabled(ctx, name) or not cache_keys.eligible(ctx) or ctx.model is None:
        return None
    values = savings.settings(ctx, name)
    parts = split(ctx.body)
    if parts is None or parts[2] > int(values["max_turns"]):
        return None
    context, text, _ = parts
    embedder = embeddings.for_settings(values)
    if embedder is None:  # no local model installed: logged once by embeddings.local()
        return None
    pasted, question = split_context(text)
    scope = savings.scope(ctx, name)
    key = context_key(ctx.endpoint, scope, ctx.model.slug, embedder.id, context, pasted)
    state = ctx.extra[name] = {"scope": scope, "key": key, "text": text, "question": question,
                               "embedder": embedder}
    if (pending := _storing.get(key)) is not None:
        pending.join(timeout=STORE_WAIT_SECONDS)
    from gateway.stores.semantic_index import INDEX  # numpy loads only once the layer is used

    few = INDEX.few(scope, ctx.model.slug, key, FEW)
    if few is not None:
        candidates = [(1.0, entry) for entry in few]
    else:
        try:
            state["vector"] = vector = embedder.embed(question, ctx)
        except GatewayError as e:  # an embeddings route failed: skip, the request goes on
            log.warning("semantic cache skipped: embeddings model %s failed (%s)", values.get("embeddings_model"),
                        e.message)
            return None
        candidates = INDEX.search(scope, ctx.model.slug, key, vector, float(values["threshold"]), CANDIDATES)
    borderline = None  # the best candidate refused only for a borderline reason (semantic_verifier)
    verifying = semantic_verifier.configured(values) is not None
    for score, entry in candidates:
        reason = refusal(entry.text, text)
        if reason is None:
            return _hit(ctx, entry, score)
        state.setdefault("reason", reason)
        if verifying and borderline is None and semantic_verifier.borderline(entry.text, text, reason):
            borderline = (score, entry)
    if borderline is not None:
        score, entry = borderline
        if semantic_verifier.verify(ctx, values, entry.text, entry.response.text, text):
            state["reason"] = "verified"
            reply = _hit(ctx, entry, score)
            reply.headers["x-gateway-semantic-reason"] = "verified"
            return reply
    return None


def _hit(ctx: RequestContext, entry, score: float) -> Reply:
    reply = exact_cache.answer(ctx, entry.response, cache="semantic", mechanism=name)
    reply.headers["x-gateway-similarity"] = f"{min(score, 1.0):.4f}"
    return reply


def on_reply(ctx: RequestContext, reply: Reply) -> Reply:
    state = ctx.extra.get(name)
    if state is not None and "reason" in state:
        reply.headers["x-gateway-semantic-reason"] = state["reason"]
    return exact_cache.capture(ctx, reply, name)


def after(ctx: RequestContext, reply: Reply | None) -> None:
    """Store a clean miss (runs after metering, so ctx.usage is what the upstream reported); the
    question's embedding is computed in the background, off the request path."""
    state = ctx.extra.get(name)
    if (state is None or reply is None or ctx.cache != "miss" or ctx.error is not None
            or reply.status != 200 or ctx.usage_estimated):
        return
    resp = exact_cache.captured(ctx, state)
    if resp is None or resp.finish_reason not in STORED_FINISH:
        return
    resp.usage = dataclasses.replace(ctx.usage)  # a relay may hide usage from the client; this is the cost
    values = savings.settings(ctx, name)
    assert ctx.principal is not None and ctx.model is not None
    store = gevent.spawn(_store, ctx, state, resp, float(values["ttl_seconds"]), int(values["max_entries"]))
    _storing[state["key"]] = store
    store.link(lambda g, key=state["key"]: _storing.pop(key, None) if _storing.get(key) is g else None)


def _store(ctx: RequestContext, state: dict[str, Any], resp, ttl: float, max_entries: int) -> None:
    from gateway.stores.semantic_index import INDEX

    assert ctx.principal is not None and ctx.model is not None
    try:
        vector = state.get("vector")
        if vector is None:
            vector = state["embedder"].embed(state["question"], ctx)
    except Exception:  # advisory: an answer not stored is a later miss, nothing more
        log.warning("semantic cache entry not stored: embedding failed", exc_info=True)
        return
    INDEX.put(state["scope"], ctx.model.slug, state["key"], state["text"], vector, resp,
              org_id=ctx.principal.org_id, ttl=ttl, max_entries=max_entries)


def settle(timeout: float = 10.0) -> None:
    """Wait for the stores in progress (tests, benchmarks, and a graceful stop)."""
    gevent.joinall(list(_storing.values()), timeout=timeout)


# ---- what is compared -----------------------------------------------------------------------------

def split(body: dict[str, Any]) -> tuple[dict[str, Any], str, int] | None:
    """(the body without the last user message's text, that text, the number of user turns), or
    None when the last message is not a user message of plain text (images, tool results...)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    if last.get("role") != "user":
        return None
    text = _plain_text(last.get("content"))
    if not text or not text.strip():
        return None
    turns = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "user")
    context = {k: v for k, v in body.items() if k not in cache_keys.VOLATILE and k != "model"}
    context["messages"] = [*messages[:-1], {**last, "content": None}]
    return context, text, turns


def _plain_text(content: Any) -> str | None:
    """A message's text when all of it is text (OpenAI and Anthropic shapes); None otherwise."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content):
        return "\n".join(p["text"] for p in content)
    return None


def context_key(endpoint: str, scope: str, model: str, embedder_id: str, context: dict[str, Any],
                pasted: str = "") -> str:
    digest = sha256(f"{endpoint}\0{scope}\0{model}\0{embedder_id}\0".encode())
    digest.update(orjson.dumps(context, option=orjson.OPT_SORT_KEYS))
    digest.update(b"\0" + pasted.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()
