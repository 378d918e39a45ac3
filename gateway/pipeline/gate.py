"""Gate: scope, credits (and later budgets, plans, rate limits, idempotency) (enforcing)."""

from __future__ import annotations

from gateway.errors import InsufficientCredits, PermissionDenied
from gateway.memo import MEMO
from gateway.pipeline.context import Reply, RequestContext

name, enforcing = "gate", True

INFERENCE_SCOPES = frozenset({"inference", "admin"})


def before(ctx: RequestContext) -> Reply | None:
    principal = ctx.principal
    assert principal is not None
    if principal.scope not in INFERENCE_SCOPES:
        raise PermissionDenied(f"This API key has the '{principal.scope}' scope and cannot make inference calls.")
    if MEMO.balance(principal.org_id) <= 0:
        raise InsufficientCredits(
            f"Your organization '{principal.org_name}' has no credits left. Add credits to continue."
        )
    return None


def after(ctx: RequestContext, reply: Reply | None) -> None:
    return None
