"""Content logging stage (advisory): keeps the conversation of a request whose org or app turned
content logging on (stores/content_log.py), encrypted, handed to the ledger writer's queue.

It sits after data protection and before the savings layers: cache hits are logged too, and the
texts are in placeholder form (the provider's view). `before` is one dict lookup when nobody has
content logging on; a stream is teed (context.tee, bounded) only for those who do.
"""

from __future__ import annotations

from gateway.ledger.writer import WRITER
from gateway.models import ContentLog
from gateway.pipeline.context import Reply, RequestContext, tee
from gateway.stores.content_log import SETTINGS, STREAM_MAX, input_text, output_text

name, enforcing = "content_log", False


def before(ctx: RequestContext) -> Reply | None:
    p = ctx.principal
    if p is not None and SETTINGS.days and (days := SETTINGS.retention(p.org_id, p.app_id)) > 0:
        ctx.extra["content_log"] = days
    return None


def on_reply(ctx: RequestContext, reply: Reply) -> Reply:
    if "content_log" in ctx.extra:
        if reply.chunks is not None:
            reply.chunks = tee(reply.chunks, ctx.extra, "content_chunks", STREAM_MAX)
        else:
            ctx.extra["content_body"] = reply.body
    return reply


def after(ctx: RequestContext, reply: Reply | None) -> None:
    days = ctx.extra.get("content_log")
    if not days or ctx.principal is None:
        return
    p = ctx.principal
    out = output_text(ctx.extra.get("content_body"), ctx.extra.get("content_chunks"))
    WRITER.enqueue_record(ContentLog, SETTINGS.row(
        org_id=p.org_id, app_id=p.app_id, user_id=p.user_id, request_id=ctx.request_id, days=days,
        input_text=input_text(ctx.body), output_text=out))
