"""The model catalog as cards: slug, context, prices per Mtok and capabilities of each servable model
and of each of its routes, from the in-memory catalog. The public pages and the console's Available
Models show the same cards (templates/public/_models_table.html, _routes_table.html)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.ledger.pricing import MTOK
from gateway.memo import MEMO, ModelInfo, RouteInfo

CAPABILITY_LABELS = {"tools": "tools", "vision": "vision", "streaming": "streaming", "json_mode": "JSON mode"}


def price(micros: int | None) -> str:
    """Micro-dollars per Mtok as a short USD figure: 400000 -> '$0.40', 2500 -> '$0.0025'."""
    if micros is None:
        return "—"
    amount = (Decimal(micros) / MTOK).normalize()
    text = format(amount, "f")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def capabilities(routes: tuple[RouteInfo, ...]) -> list[str] | None:
    """What at least one route declares; None when some route declares nothing (all assumed)."""
    if any(r.capabilities is None for r in routes):
        return None
    found = set().union(*(r.capabilities or () for r in routes))
    return [label for cap, label in CAPABILITY_LABELS.items() if cap in found]


def card(model: ModelInfo) -> dict[str, Any]:
    """What the catalog pages show of one model; prices are the reference route's."""
    ref = model.reference
    return {
        "slug": model.slug,
        "context_window": model.context_window or (ref.context_window if ref else None),
        "max_output_tokens": model.max_output_tokens,
        "input": price(ref.input_micros_per_mtok if ref else None),
        "output": price(ref.output_micros_per_mtok if ref else None),
        "cached": price(ref.cached_input_micros_per_mtok if ref else None),
        "capabilities": capabilities(model.routes),
        "reference": ref,
        "routes": [{"route": r, "reference": i == 0, "input": price(r.input_micros_per_mtok),
                    "output": price(r.output_micros_per_mtok),
                    "cached": price(r.cached_input_micros_per_mtok),
                    "capabilities": capabilities((r,))}
                   for i, r in enumerate(model.routes)],
        "providers": sorted({r.provider.name for r in model.routes}),
    }


def cards() -> list[dict[str, Any]]:
    """Every model that can be served now (has a route on an enabled provider), by slug."""
    return [card(m) for m in sorted(MEMO.catalog.models.values(), key=lambda m: m.slug) if m.routes]
