"""The hot path as one ordered list of stages, and run(ctx).

A stage is a module with `name`, `enforcing` and `before(ctx)`. `before` may return a reply (a
cache hit), which skips the rest and the provider call. An optional `on_reply(ctx, reply) -> reply`
sees the reply before the client does (to tee a stream, say). An optional `after(ctx, reply)` runs
in reverse order for the stages whose `before` ran: on success, on error, and for streams when the
stream ends (or the client goes away). Enforcing stages fail closed; advisory
ones are skipped with a warning. The gate comes before the savings layers: a key without the
scope or an org without credits gets no answer, not even a cached one. With tracing on
(gateway/tracing.py) the request, each stage's `before` and each upstream attempt are spans; off,
the request pays one `if`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import ModuleType

from greenlet import GreenletExit

from gateway import tracing, wire
from gateway.errors import GatewayError, InternalError, ShuttingDown
from gateway.pipeline import auth, content_log, decode, dlp, drain, gate, idempotency, meter, responses, route, subrequest
from gateway.pipeline import dispatch as dispatching
from gateway.pipeline.context import Reply, RequestContext
from gateway.pipeline.savings import (
    compress,
    context_dedupe,
    exact_cache,
    inflight,
    output_budget,
    prompt_cache,
    semantic_cache,
)

log = logging.getLogger(__name__)

Stage = ModuleType
STAGES: list[Stage] = [
    auth, decode, route, idempotency, gate, dlp, responses,  # enforcing
    content_log,  # advisory: conversations kept where an org opted in (before the caches: hits too)
    exact_cache, semantic_cache, inflight, prompt_cache, compress, context_dedupe, output_budget,  # savings
]


def run(ctx: RequestContext) -> Reply:
    """Run the stages and the provider call. Errors come back as GatewayError, already recorded."""
    ran = 0  # the stages whose `before` ran: always the first `ran` of STAGES
    reply: Reply | None = None
    if tracing.TRACER is not None:
        tracing.begin(ctx)
    before = _before if ctx.trace is None else _traced_before  # untraced: no cost per stage
    try:
        with drain.waiting():  # a server past its drain timeout ends the request here (a 503)
            for stage in STAGES:
                ran += 1
                if (reply := before(stage, ctx)) is not None:
                    break
            else:
                reply = dispatching.dispatch(ctx)
        reply = _on_reply(ctx, ran, reply)
    except GatewayError as e:
        ctx.fail(e)
        _finish(ctx, ran, None)
        raise
    except Exception as e:
        log.exception("request %s failed", ctx.request_id)
        err = InternalError("The server had an error while processing your request.")
        ctx.fail(err)
        _finish(ctx, ran, None)
        raise err from e
    except GreenletExit:  # killed by a server stopping (gunicorn past its graceful timeout): still one row
        ctx.fail(ShuttingDown())
        _finish(ctx, ran, None)
        raise
    if reply.chunks is not None:
        if ctx.trace is not None:
            reply.chunks = tracing.watch(ctx, reply.chunks)
        reply.chunks = _finishing(ctx, ran, reply, reply.chunks)
    else:
        meter.price(ctx, output_guess=len(reply.body or b"") // 8)  # JSON around the text: about half
        _finish(ctx, ran, reply)
    return reply


_HOOKS: list[tuple[list, list]] = []  # per count of stages run: their on_reply and after hooks, last first


def _hooks(ran: int) -> tuple[list[tuple[Stage, object]], list[tuple[Stage, object]]]:
    """(on_reply hooks, after hooks) of the first `ran` stages, in reverse: looked up once, not per request."""
    if not _HOOKS:
        for n in range(len(STAGES) + 1):
            first = STAGES[:n][::-1]
            _HOOKS.append(([(s, s.on_reply) for s in first if getattr(s, "on_reply", None)],
                           [(s, s.after) for s in first if getattr(s, "after", None)]))
    return _HOOKS[ran]


def _on_reply(ctx: RequestContext, ran: int, reply: Reply) -> Reply:
    for stage, hook in _hooks(ran)[0]:
        try:
            reply = hook(ctx, reply)
        except Exception:
            if stage.enforcing:
                raise
            log.warning("advisory stage %s on_reply skipped", stage.name, exc_info=True)
    return reply


def _before(stage: Stage, ctx: RequestContext) -> Reply | None:
    try:
        return stage.before(ctx)
    except Exception:
        if stage.enforcing:
            raise
        log.warning("advisory stage %s skipped", stage.name, exc_info=True)
        return None


def _traced_before(stage: Stage, ctx: RequestContext) -> Reply | None:
    return tracing.stage(ctx, stage.name, lambda: _before(stage, ctx))


def _finish(ctx: RequestContext, ran: int, reply: Reply | None) -> None:
    for stage, after in _hooks(ran)[1]:
        try:
            after(ctx, reply)
        except Exception:
            log.warning("stage %s after() failed", stage.name, exc_info=True)
    meter.record(ctx)
    if ctx.trace is not None:  # after metering: the span carries the charge
        tracing.end(ctx, reply)


def _finishing(ctx: RequestContext, ran: int, reply: Reply,
               chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Relay a stream; at its end (or the client's disconnect) price it and record its row.

    A clean end is followed by an SSE comment with the final cost, which SSE clients ignore. A
    server stopping past its drain timeout interrupts the wait for the next chunk (never a write
    to the client): the row is recorded with the usage seen so far, then the stream ends with the
    error event of the client's dialect.
    """
    completed = False
    cut: GatewayError | None = None
    relayed = 0  # chunks: about one output token each, should the usage need estimating
    mark = drain.Stream()
    try:
        while True:
            try:
                if mark.stopped:
                    raise ShuttingDown()
                mark.waiting = True
                try:
                    chunk = next(chunks)
                finally:
                    mark.waiting = False
            except StopIteration:
                completed = True
                break
            except ShuttingDown as e:
                cut = e
                break
            relayed += 1
            yield chunk
    except GeneratorExit:
        if ctx.error is None:
            ctx.status = 499  # client closed the connection mid-stream
        raise
    except GreenletExit:  # killed while waiting on the upstream (gunicorn past its graceful timeout)
        ctx.fail(ShuttingDown())
        raise
    finally:
        mark.close()
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # the upstream stream ends with ours (its own finally meters what it saw)
        if cut is not None:
            ctx.fail(cut)
        meter.price(ctx, output_guess=relayed)
        _finish(ctx, ran, reply)
    if cut is not None:
        codec = wire.CODECS.get(ctx.endpoint)
        if codec is not None:
            yield codec.error_event(cut)
    elif completed:
        yield meter.cost_trailer(ctx)


subrequest.install(run)  # the savings layers' own calls (summaries, embeddings) run through here
