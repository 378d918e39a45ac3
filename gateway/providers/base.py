"""The Provider protocol: small on purpose; optional abilities are detected, not required."""

from __future__ import annotations

from typing import Protocol

from gateway.memo import RouteInfo
from gateway.pipeline.context import Reply, RequestContext


class Provider(Protocol):
    kind: str
    dialects: frozenset[str]  # endpoints it serves natively, e.g. {"chat.completions"}

    def call(self, ctx: RequestContext, route: RouteInfo) -> Reply:
        """Send ctx's request to `route`; a whole reply, or a stream once the upstream said 200.

        Raises UpstreamError (with `retryable`) for any upstream failure before the reply starts.
        A failure mid-stream is reported inside the stream in the client's dialect.
        """
        ...
