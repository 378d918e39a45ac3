"""Prices usage in integer micro-dollars. Route prices are micro-dollars per million tokens."""

from __future__ import annotations

from decimal import Decimal

from gateway.memo import RouteInfo
from gateway.wire.canonical import Usage

MTOK = 1_000_000


def cost_micros(route: RouteInfo | None, usage: Usage) -> int:
    """What `usage` costs on `route`, cached prompt tokens at the route's cached price."""
    if route is None:
        return 0
    cached = min(usage.cached_tokens, usage.input_tokens)
    cached_price = route.cached_input_micros_per_mtok
    if cached_price is None:
        cached_price = route.input_micros_per_mtok
    total = ((usage.input_tokens - cached) * route.input_micros_per_mtok
             + cached * cached_price
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
