"""Output budget shaping: a request that names no output limit gets the model's configured cap;
a limit the client gave is never touched, even one above the cap.

The cap is `default_max_tokens` when set (never above the model's `max_output_tokens`, which the
upstream would refuse), else the model's `max_output_tokens` from the catalog; with neither, nothing
is done. The field is the client dialect's own: `max_completion_tokens` on chat completions (what
OpenAI takes for every model: `max_tokens` is deprecated there and refused by reasoning models;
it reads back as the canonical max_tokens when a route translates), `max_tokens` on messages,
`max_output_tokens` on responses.

Nothing is removed from the prompt, so nothing goes into `removed_tokens`: the cap bounds what an
answer can cost; `ctx.extra["output_budget"]` records that it applied. Advisory: a failure leaves
the request as the client sent it. Settings (savings.output_budget): enabled, default_max_tokens.
"""

from __future__ import annotations

from gateway.pipeline import savings
from gateway.pipeline.context import Reply, RequestContext

name, enforcing = "output_budget", False

FIELDS = {"chat.completions": ("max_completion_tokens", "max_tokens"), "messages": ("max_tokens",),
          "responses": ("max_output_tokens",)}  # the first is the one set
MINIMUM = {"responses": 16}  # the Responses API refuses a smaller max_output_tokens


def before(ctx: RequestContext) -> Reply | None:
    fields = FIELDS.get(ctx.endpoint)
    if fields is None or not savings.enabled(ctx, name):
        return None
    if any(ctx.body.get(f) is not None for f in fields):
        return None  # the client's own limit, whatever it is
    if ctx.canonical is not None and ctx.canonical.max_tokens is not None:
        return None
    cap = budget(ctx)
    if cap is None:
        return None
    cap = max(cap, MINIMUM.get(ctx.endpoint, 1))
    if ctx.canonical is not None:
        ctx.canonical.max_tokens = cap  # what translated routes send
    # Same-dialect routes send the client's body, rewritten or not (dispatch.rewritten_body): the
    # cap goes there under the dialect's own key, and pass-through stays pass-through.
    ctx.body[fields[0]] = cap
    ctx.extra[name] = {"max_tokens": cap}
    return None


def budget(ctx: RequestContext) -> int | None:
    model_cap = ctx.model.max_output_tokens if ctx.model else None
    configured = savings.settings(ctx, name).get("default_max_tokens")
    if configured:
        return min(int(configured), model_cap) if model_cap else int(configured)
    return model_cap
