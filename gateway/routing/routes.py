"""A provider and a route as the hot path sees them: plain frozen values, built by memo from the catalog.

They live apart from memo (which reads the database) so that provider adapters, which take a
route with its provider settings, depend on values only, never on the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    id: int
    name: str
    kind: str
    base_url: str
    api_key: str | None = field(repr=False)  # decrypted, memory only
    enabled: bool = True
    responses_api: bool | None = None  # serves /v1/responses natively; None: only OpenAI's own API
    allow_private: bool = False  # may reach loopback and private addresses (providers/egress.py)
    batch_api: bool | None = None  # has a batch API of its kind; None: providers/batch_api.has_batch_api decides


@dataclass(frozen=True, slots=True)
class RouteInfo:
    id: int
    model_slug: str
    provider: ProviderInfo
    upstream_model: str
    input_micros_per_mtok: int
    output_micros_per_mtok: int
    cached_input_micros_per_mtok: int | None
    context_window: int | None
    position: int
    weight: int = 1
    capabilities: frozenset[str] | None = None  # None: not declared, so nothing is ruled out
    batch_price_pct: int | None = None  # batch price, percent of list (None: the provider's default)

    def supports(self, needs: frozenset[str]) -> bool:
        return self.capabilities is None or needs <= self.capabilities
