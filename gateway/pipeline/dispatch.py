"""Dispatch: call the route's adapter, classify failures, walk the fallback chain."""

from __future__ import annotations

import logging

from gateway.errors import GatewayError, UpstreamError
from gateway.pipeline.context import Reply, RequestContext
from gateway.providers import registry

log = logging.getLogger(__name__)


def dispatch(ctx: RequestContext) -> Reply:
    """Try the plan's routes in order; a retryable failure moves on, anything else stops.

    The last failure is what the client sees when every route failed.
    """
    last: GatewayError | None = None
    for route in ctx.plan:
        ctx.route = route
        ctx.attempts += 1
        adapter = registry.adapter(route.provider.kind)
        try:
            return adapter.call(ctx, route)
        except UpstreamError as e:
            last = e
            if not e.retryable:
                raise
            log.warning("route %s/%s failed (%s); trying the next", route.provider.name, route.upstream_model,
                        e.message)
    assert last is not None
    raise last
