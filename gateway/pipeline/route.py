"""Route: alias -> model -> ordered routes, fallback chain included (enforcing)."""

from __future__ import annotations

from gateway.errors import ModelNotFound
from gateway.memo import MEMO
from gateway.pipeline.context import Reply, RequestContext

name, enforcing = "route", True


def before(ctx: RequestContext) -> Reply | None:
    catalog = MEMO.catalog
    org_id = ctx.principal.org_id if ctx.principal else None
    model = catalog.resolve(ctx.requested_model, org_id)
    if model is None or not model.routes:
        raise ModelNotFound(f"The model `{ctx.requested_model}` does not exist or you do not have access to it.",
                            param="model")
    ctx.model = model
    plan = list(model.routes)
    seen = {model.slug}
    for slug in catalog.fallbacks.get(model.slug) or catalog.fallbacks.get("*", ()):
        fallback = catalog.models.get(slug)
        if fallback is not None and slug not in seen:
            seen.add(slug)
            plan.extend(fallback.routes)
    ctx.plan = plan
    return None


def after(ctx: RequestContext, reply: Reply | None) -> None:
    return None
