"""Requests the gateway makes to itself from inside the pipeline: a savings layer's call to a summary
model or an embeddings model, run through every stage as the caller (same key: same org, rules,
credits; its own ledger row).

The layers are stages of the pipeline, so they cannot import it (an import cycle); the pipeline
installs its `run` here when it loads instead. Failure mode: a sub-request started before the
pipeline has loaded raises RuntimeError; otherwise `run` raises what the pipeline raises
(GatewayError, already recorded on the sub-request's context).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.pipeline.context import Reply, RequestContext

_run: Callable[[RequestContext], Reply] | None = None


def install(run_pipeline: Callable[[RequestContext], Reply]) -> None:
    global _run
    _run = run_pipeline


def run(ctx: RequestContext) -> Reply:
    if _run is None:
        raise RuntimeError("the pipeline has not been loaded")
    return _run(ctx)
