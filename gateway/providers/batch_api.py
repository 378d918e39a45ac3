"""What a provider's batch API returns, in one vocabulary: statuses and per-request outcomes.

Provider batch adapters (openai_batch.py, anthropic_batch.py) are pure over a ProviderInfo and the
lines they are given, like every adapter: they never import the pipeline or the database. Each has
`submit(provider, lines, endpoint, key=None) -> State` (`key`: the gateway's name for the part, kept
on the provider's batch where the API allows), `find(provider, key, since) -> State | None` (the
provider's batch named `key`, None when there is none or the API cannot say), `poll(provider,
upstream_id) -> State`,
`cancel(provider, upstream_id) -> State` and `results(provider, state) -> list[Outcome]`, and
raises the shared upstream errors. Results that do not parse raise InvalidUpstreamResponse.

Which providers have one is the catalog's word (`batch_api: true|false` on a provider); undeclared,
only the vendors' own APIs are assumed to (`has_batch_api`): an OpenAI-compatible server elsewhere
(vLLM, a proxy) usually has chat completions only, and its batch is run by the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import InvalidUpstreamResponse
from gateway.providers import http
from gateway.routing.routes import ProviderInfo
from gateway.wire.canonical import Usage

# Provider kind -> the host of the vendor's own API, whose batch API is assumed when undeclared.
VENDOR_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}
# What a server without the batch endpoints answers them: the part falls back to the gateway's run.
NO_BATCH_API_STATUSES = frozenset({404, 405, 501})


def has_batch_api(provider: ProviderInfo) -> bool:
    """Whether batches of this provider's kind go to its own batch API (else the gateway runs them)."""
    if provider.kind not in VENDOR_HOSTS:
        return False
    declared = getattr(provider, "batch_api", None)
    if declared is not None:
        return bool(declared)
    return urlsplit(provider.base_url).hostname == VENDOR_HOSTS[provider.kind]

# OpenAI's batch statuses are the common vocabulary; Anthropic's map onto them.
OPEN = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
DEADLINE_SECONDS = 120.0  # any one batch API call


@dataclass(slots=True)
class State:
    upstream_id: str
    status: str  # validating | in_progress | finalizing | cancelling | completed | failed | expired | cancelled
    file_id: str | None = None  # the uploaded input file, where the API has one
    output: str | None = None  # where the results are: a file id or a results URL
    errors: str | None = None  # the error file id, where the API has one
    message: str | None = None  # why the provider failed the batch


@dataclass(slots=True)
class Outcome:
    custom_id: str
    kind: str  # succeeded | errored | canceled | expired
    status_code: int = 200
    body: Any = None  # the provider's response body (a completion, a message, an error)
    error: dict[str, Any] | None = None  # {"code"/"type", "message"} when there is no response
    usage: Usage = field(default_factory=Usage)
    upstream_id: str | None = None


def parse_lines(content: bytes, decode: Callable[[Any], Outcome]) -> list[Outcome]:
    """A results file's outcomes, one per JSONL line. A line that is not JSON or not the API's
    shape is skipped (its request, if it was one, has no result: the caller errors it, uncharged);
    a file with lines but none readable is InvalidUpstreamResponse (not results at all)."""
    out: list[Outcome] = []
    lines = [raw for raw in content.splitlines() if raw.strip()]
    for raw in lines:
        try:
            out.append(http.parse(raw, decode))
        except InvalidUpstreamResponse:
            continue
    if lines and not out:
        raise InvalidUpstreamResponse()
    return out
