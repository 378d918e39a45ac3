"""Prices usage in integer micro-dollars. Route prices are micro-dollars per million tokens.

An org's pricing policy (memo.OrgMoney) turns a route's price into what the org pays: `list` as is,
`markup`/`discount` by a percentage, `byok` nothing for tokens plus an optional flat fee per request.
`worst_case_micros` is the hold placed before a provider call: it must never be below the charge
the request can end with when the upstream honours the output cap.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from gateway.memo import OrgMoney
from gateway.routing.routes import RouteInfo
from gateway.wire.canonical import Usage

MTOK = 1_000_000
_ONE, _ZERO = Fraction(1), Fraction(0)


# Prompt-cache writes cost more than plain input where the provider charges for them
# (Anthropic's 5-minute cache, also through Bedrock: 1.25x); elsewhere they are plain input.
CACHE_WRITE_PREMIUM = {"anthropic": (5, 4), "bedrock": (5, 4)}


def cost_micros(route: RouteInfo | None, usage: Usage) -> int:
    """What `usage` costs on `route`: cached prompt tokens at the route's cached price, cache
    writes at the provider's write premium, the rest at the input and output prices."""
    parts = _cost_parts(route, usage)
    if parts is None:
        return 0
    plain, written, num, den = parts
    return (plain + written * num // den + MTOK // 2) // MTOK


def exact_cost(route: RouteInfo | None, usage: Usage) -> Fraction:
    """cost_micros before rounding (the write premium exact too): the meter splits savings
    between mechanisms from these, so no mechanism carries another's rounding."""
    parts = _cost_parts(route, usage)
    if parts is None:
        return Fraction(0)
    plain, written, num, den = parts
    return Fraction(plain, MTOK) + Fraction(written * num, den * MTOK)


def _cost_parts(route: RouteInfo | None, usage: Usage) -> tuple[int, int, int, int] | None:
    """(everything but cache writes, cache writes at the input price, premium num, den), in
    micro-dollars per million tokens."""
    if route is None:
        return None
    cached = min(usage.cached_tokens, usage.input_tokens)
    written = min(usage.cache_write_tokens, usage.input_tokens - cached)
    cached_price = route.cached_input_micros_per_mtok
    if cached_price is None:
        cached_price = route.input_micros_per_mtok
    num, den = CACHE_WRITE_PREMIUM.get(route.provider.kind, (1, 1))
    plain = ((usage.input_tokens - cached - written) * route.input_micros_per_mtok
             + cached * cached_price + usage.output_tokens * route.output_micros_per_mtok)
    return plain, written * route.input_micros_per_mtok, num, den


def policy_factor(money: OrgMoney) -> Fraction:
    """The org's policy as a multiplier of token prices (policy_micros without its rounding)."""
    if money.pricing == "list":
        return _ONE
    if money.pricing == "byok":
        return _ZERO
    bps = 10_000 + money.pricing_bps if money.pricing == "markup" else 10_000 - money.pricing_bps
    return Fraction(bps, 10_000)


def list_price_micros(route: RouteInfo | None, usage: Usage) -> int:
    """The benchmark: every prompt token at the full input price, as with no savings at all."""
    if route is None:
        return 0
    total = usage.input_tokens * route.input_micros_per_mtok + usage.output_tokens * route.output_micros_per_mtok
    return (total + MTOK // 2) // MTOK


def usd(micros: int) -> str:
    """Micro-dollars as a USD decimal string: 1234 -> '0.001234' (integer arithmetic: several
    response headers per request carry one)."""
    micros = int(micros)
    whole, frac = divmod(-micros if micros < 0 else micros, MTOK)
    return f"{'-' if micros < 0 else ''}{whole}.{frac:06d}"


def usd_to_micros(value: float | str | Decimal) -> int:
    return int((Decimal(str(value)) * MTOK).to_integral_value())


def policy_micros(money: OrgMoney, micros: int) -> int:
    """A token price after the org's policy (rounded half up; byok: tokens are free)."""
    if money.pricing == "list" or micros == 0:
        return micros
    if money.pricing == "byok":
        return 0
    bps = 10_000 + money.pricing_bps if money.pricing == "markup" else 10_000 - money.pricing_bps
    return (micros * bps + 5_000) // 10_000


def request_fee(money: OrgMoney) -> int:
    return money.request_fee_micros if money.pricing == "byok" else 0


def worst_case_micros(routes: list[RouteInfo] | tuple[RouteInfo, ...], input_tokens: int, output_tokens: int,
                      money: OrgMoney) -> int:
    """The most the request can be charged on any route it may take (fallbacks included): every
    prompt token at the full input price (no cache discount), every allowed output token."""
    top = premium = 0
    for r in routes:  # list_price_micros inline: every request is held
        top = max(top, (input_tokens * r.input_micros_per_mtok + output_tokens * r.output_micros_per_mtok
                        + MTOK // 2) // MTOK)
        if r.provider.kind in CACHE_WRITE_PREMIUM:  # cache writes cost up to 1.25x input: covered
            premium = max(premium, (input_tokens * r.input_micros_per_mtok + MTOK // 2) // MTOK // 4)
    return policy_micros(money, top + premium) + request_fee(money)
