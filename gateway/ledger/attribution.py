"""Benchmark, charge and savings by mechanism of one request, in the provider's units, summing
exactly: for every row, sum(saved.values()) == benchmark - charge, in integer micro-dollars.

Pure (no I/O): the meter gathers the usages, this prices them. A request that reached a provider
is described by three usages of the same output and one removal map:

- `direct`: the request as the client sent it, sent straight to the requested model's reference
  route: its prompt in the provider's tokens (the sent prompt plus what the layers removed), with
  the caching the provider would have done by itself (OpenAI's automatic prefix cache; on
  Anthropic only the client's own breakpoints).
- `plain`: the request as sent, with the cache reads and writes the provider would have made
  without the gateway's own breakpoints.
- `sent`: the request as sent, as the provider billed it.

The difference telescopes, each step one mechanism:

    benchmark - charge = (direct on the reference - plain on the reference)   rewrites: compression,
                                                                              context_dedupe, by
                                                                              the tokens each removed
                       + (plain on the reference - plain on the route used)   routing
                       + (plain on the route used - sent on the route used)   prompt_cache

each term exact (a Fraction, the org's pricing policy applied). The benchmark and the charge are
rounded once each, as before; the integer total is then shared out by largest remainder
(`allocate`), ties broken in MECHANISMS order, so a mechanism whose exact share is zero shows no
saving at all and none carries another's rounding. A write the gateway placed that costs more than
plain input is a negative prompt_cache share on the row that wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from math import floor

from gateway.ledger import pricing
from gateway.ledger.rollups import MECHANISMS
from gateway.memo import OrgMoney
from gateway.routing.routes import RouteInfo
from gateway.wire.canonical import Usage

_ORDER = {m: i for i, m in enumerate(MECHANISMS)}


@dataclass(frozen=True, slots=True)
class Miss:
    reference: RouteInfo | None  # the requested model's reference route: the benchmark's prices
    route: RouteInfo | None  # the route that answered
    direct: Usage
    plain: Usage
    sent: Usage
    removed: Mapping[str, int]  # mechanism -> prompt tokens it removed, in the provider's tokens


def price_miss(money: OrgMoney, miss: Miss, fee: int = 0,
               layer_costs: Mapping[str, int] | None = None) -> tuple[int, int, dict[str, int]]:
    """(benchmark, charge, saved by mechanism) of a request a provider answered. `layer_costs`:
    what a layer spent on this request in the org's money (a verifier call), charged here and
    taken from that layer's saving."""
    costs = {m: c for m, c in layer_costs.items() if c} if layer_costs else {}
    benchmark = pricing.policy_micros(money, pricing.cost_micros(miss.reference, miss.direct)) + fee
    charge = pricing.policy_micros(money, pricing.cost_micros(miss.route, miss.sent)) + fee + sum(costs.values())
    ref, route = miss.reference, miss.route
    if (not costs and not (miss.removed and any(n > 0 for n in miss.removed.values()))
            and (ref is route or ref == route) and _same(miss.direct, miss.plain) and _same(miss.plain, miss.sent)):
        # The common miss: nothing removed, rerouted or cached by the gateway, so every exact share
        # below is zero and allocate() would give the whole difference (a fee's rounding) to routing.
        return benchmark, charge, ({"routing": benchmark - charge} if benchmark != charge else {})
    factor = pricing.policy_factor(money)
    plain_ref = pricing.exact_cost(ref, miss.plain)
    plain_route = pricing.exact_cost(route, miss.plain)
    rewrites = factor * (pricing.exact_cost(ref, miss.direct) - plain_ref)
    exact: dict[str, Fraction] = {}
    removed = {m: n for m, n in miss.removed.items() if n > 0}
    if removed:
        whole = sum(removed.values())
        for mechanism, n in removed.items():
            exact[mechanism] = rewrites * n / whole
    else:  # nothing removed: a difference here is the route's (another provider's cache)
        exact["routing"] = rewrites
    exact["routing"] = exact.get("routing", Fraction(0)) + factor * (plain_ref - plain_route)
    exact["prompt_cache"] = factor * (plain_route - pricing.exact_cost(route, miss.sent))
    for mechanism, cost in costs.items():
        exact[mechanism] = exact.get(mechanism, Fraction(0)) - cost
    return benchmark, charge, allocate(benchmark - charge, exact)


def _same(a: Usage, b: Usage) -> bool:
    """The same counts (what prices a usage)."""
    return (a.input_tokens == b.input_tokens and a.output_tokens == b.output_tokens
            and a.cached_tokens == b.cached_tokens and a.cache_write_tokens == b.cache_write_tokens)


def allocate(total: int, exact: Mapping[str, Fraction]) -> dict[str, int]:
    """Integers summing to `total`, each as near its exact share as the sum allows: floors first,
    then the units left over (or owed) go one each by largest remainder, ties in MECHANISMS order.
    Shares that are exactly zero get nothing; with no share at all, a total is `routing`'s."""
    shares = [(m, v) for m, v in exact.items() if v != 0]
    if not shares:
        return {"routing": total} if total else {}
    floors = {m: floor(v) for m, v in shares}
    left = total - sum(floors.values())
    each, extra = divmod(left, len(shares))  # |left| exceeds the count only under a policy's double rounding
    ranked = sorted(shares, key=lambda mv: (-(mv[1] - floors[mv[0]]), _ORDER.get(mv[0], len(_ORDER)), mv[0]))
    out = {}
    for i, (m, _v) in enumerate(ranked):
        value = floors[m] + each + (1 if i < extra else 0)
        if value:
            out[m] = value
    return out
