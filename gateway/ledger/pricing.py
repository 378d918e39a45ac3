"""Prices usage in integer micro-dollars. Route prices are micro-dollars per million tokens."""

from __future__ import annotations

from decimal import Decimal

from gateway.routing.routes import RouteInfo
from gateway.wire.canonical import Usage

MTOK = 1_000_000


# Prompt-cache writes cost more than plain input where the provider charges for them
# (Anthropic's 5-minute cache, also through Bedrock: 1.25x); elsewhere they are plain input.
CACHE_WRITE_PREMIUM = {"anthropic": (5, 4), "bedrock": (5, 4)}


def cost_micros(route: RouteInfo | None, usage: Usage) -> int:
    """What `usage` costs on `route`: cached prompt tokens at the route's cached price, cache
    writes at the provider's write premium, the rest at the input and output prices."""
    if route is None:
        return 0
    cached = min(usage.cached_tokens, usage.input_tokens)
    written = min(usage.cache_write_tokens, usage.input_tokens - cached)
    cached_price = route.cached_input_micros_per_mtok
    if cached_price is None:
        cached_price = route.input_micros_per_mtok
    num, den = CACHE_WRITE_PREMIUM.get(route.provider.kind, (1, 1))
    total = ((usage.input_tokens - cached - written) * route.input_micros_per_mtok
             + cached * cached_price
             + written * route.input_micros_per_mtok * num // den
             + usage.output_tokens * route.output_micros_per_mtok)
    return (total + MTOK // 2) // MTOK


def list_price_micros(route: RouteInfo | None, usage: Usage) -> int:
    """The benchmark: every prompt token at the full input price, as with no savings at all."""
    if route is None:
        return 0
    total = usage.input_tokens * route.input_micros_per_mtok + usage.output_tokens * route.output_micros_per_mtok
    return (total + MTOK // 2) // MTOK


def usd(micros: int) -> str:
    """Micro-dollars as a USD decimal string: 1234 -> '0.001234'."""
    return str((Decimal(micros) / MTOK).quantize(Decimal("0.000001")))


def usd_to_micros(value: float | str | Decimal) -> int:
    return int((Decimal(str(value)) * MTOK).to_integral_value())
