"""BYOK: which credential a route's call carries, the org's own key or the operator's.

`call(ctx, route, call_route)` is what dispatch runs for one attempt. When the org has a key for
the route's provider, the call goes out with it (the route is copied with that key; the catalog's
route is never touched), `ctx.extra["byok"]` names the key, and the meter charges nothing for the
tokens (the org pays the provider). A BYOK key the provider refuses (401/403) answers 401
`byok_key_rejected` in the client's dialect, is recorded for the console, and is never retried
with the operator's key: the error is not retryable, so dispatch stops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

from gateway.errors import ByokKeyRejected, UpstreamError
from gateway.ledger.writer import WRITER
from gateway.memo import RouteInfo
from gateway.models import ByokRejection
from gateway.pipeline.context import Reply, RequestContext
from gateway.stores.byok import KEYS

REFUSED = frozenset({401, 403})


def paid_routes(org_id: int, routes: Sequence[RouteInfo]) -> Sequence[RouteInfo]:
    """The routes the org pays tokens on: those whose provider has no key of the org's own (the
    gate holds the worst case over these; a request every route of which is BYOK holds the fee only)."""
    if org_id not in KEYS.orgs:
        return routes
    return [r for r in routes if KEYS.get(org_id, r.provider.name) is None]


def call(ctx: RequestContext, route: RouteInfo, call_route: Callable[[RequestContext, RouteInfo], Reply]) -> Reply:
    assert ctx.principal is not None
    own = KEYS.get(ctx.principal.org_id, route.provider.name)
    if own is None:
        ctx.extra.pop("byok", None)  # an earlier attempt on another provider may have used one
        return call_route(ctx, route)
    ctx.extra["byok"] = own.id
    provider = dataclasses.replace(route.provider, api_key=own.api_key)
    try:
        reply = call_route(ctx, dataclasses.replace(route, provider=provider))
    except UpstreamError as e:
        if (checked := _checked(ctx, route, own.id, e)) is e:
            raise
        raise checked from e
    if reply.chunks is not None:  # a translated stream meets the refusal at its first chunk
        reply.chunks = _watched(ctx, route, own.id, reply.chunks)
    return reply


def _watched(ctx: RequestContext, route: RouteInfo, key_id: int, chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from chunks
    except UpstreamError as e:
        if (checked := _checked(ctx, route, key_id, e)) is e:
            raise
        raise checked from e
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _checked(ctx: RequestContext, route: RouteInfo, key_id: int, e: UpstreamError) -> UpstreamError:
    """A refusal of the org's key becomes ByokKeyRejected (and a row for the console); others pass."""
    if e.upstream_status not in REFUSED or isinstance(e, ByokKeyRejected):
        return e
    assert ctx.principal is not None
    WRITER.enqueue_record(ByokRejection, {"org_id": ctx.principal.org_id, "byok_key_id": key_id,
                                          "upstream_status": e.upstream_status, "request_id": ctx.request_id})
    return ByokKeyRejected(f"The provider '{route.provider.name}' rejected your organization's own API key "
                           "(BYOK). Update it with POST /v1/byok/keys.")
