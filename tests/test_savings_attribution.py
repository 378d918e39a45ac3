"""Per-mechanism savings sum exactly to benchmark - charge (ledger.attribution), over hundreds of
random requests: random prices and provider kinds, usages with cache reads and writes, tokens
removed by the rewriting layers, every pricing policy, request fees and layer costs. A seeded
generator keeps every run the same."""

import random
from fractions import Fraction

from gateway.ledger import attribution, pricing
from gateway.ledger.rollups import MECHANISMS
from gateway.memo import OrgMoney
from gateway.routing.routes import ProviderInfo, RouteInfo
from gateway.wire.canonical import Usage

KINDS = ("openai", "anthropic", "bedrock", "gemini", "openrouter")


def route(rng: random.Random, kind: str | None = None) -> RouteInfo:
    kind = kind or rng.choice(KINDS)
    price = rng.choice([1, 7, 150, 1000, 2500, 3000, 15000, 75000])
    cached = rng.choice([None, price // 10, price // 2, price // 4 + 1])
    provider = ProviderInfo(id=1, name=kind, kind=kind, base_url="http://x", api_key="", enabled=True)
    return RouteInfo(id=rng.randint(1, 9), model_slug="m", provider=provider, upstream_model="u",
                     input_micros_per_mtok=price, output_micros_per_mtok=price * rng.choice([1, 2, 4, 5]),
                     cached_input_micros_per_mtok=cached, context_window=None, position=0)


def money(rng: random.Random) -> OrgMoney:
    pricing_ = rng.choice(["list", "list", "markup", "discount", "byok"])
    return OrgMoney(pricing=pricing_, pricing_bps=rng.choice([0, 1, 333, 1500, 5000, 9999]),
                    request_fee_micros=rng.choice([0, 7, 1000]))


def usage(rng: random.Random, prompt: int, output: int) -> Usage:
    cached = rng.choice([0, 0, rng.randint(0, prompt)])
    written = rng.choice([0, rng.randint(0, prompt - cached)])
    return Usage(prompt, output, cached, written)


def case(rng: random.Random) -> tuple[OrgMoney, attribution.Miss, int, dict[str, int]]:
    reference = route(rng)
    used = reference if rng.random() < 0.5 else route(rng)
    prompt = rng.choice([rng.randint(0, 50), rng.randint(0, 5000), rng.randint(0, 400_000)])
    output = rng.randint(0, 4000)
    sent = usage(rng, prompt, output)
    caused = rng.random() < 0.3
    plain = Usage(prompt, output) if caused else sent
    removed = {}
    for mechanism in ("compression", "context_dedupe"):
        if rng.random() < 0.4:
            removed[mechanism] = rng.randint(1, 20_000)
    asked = prompt + sum(removed.values())
    direct = usage(rng, asked, output) if rng.random() < 0.5 else Usage(asked, output, min(sent.cached_tokens, asked))
    fee = rng.choice([0, 0, 11])
    costs = {"semantic_cache": rng.randint(1, 900)} if rng.random() < 0.15 else {}
    return money(rng), attribution.Miss(reference, used, direct, plain, sent, removed), fee, costs


def exact_shares(m: OrgMoney, miss: attribution.Miss, costs: dict[str, int]) -> dict[str, Fraction]:
    """The same telescoping, written out independently of the module's own bookkeeping."""
    f = pricing.policy_factor(m)
    c = pricing.exact_cost
    shares: dict[str, Fraction] = {}
    rewrites = f * (c(miss.reference, miss.direct) - c(miss.reference, miss.plain))
    whole = sum(miss.removed.values())
    for mech, n in miss.removed.items():
        shares[mech] = rewrites * n / whole
    shares["routing"] = (0 if whole else rewrites) + f * (c(miss.reference, miss.plain) - c(miss.route, miss.plain))
    shares["prompt_cache"] = f * (c(miss.route, miss.plain) - c(miss.route, miss.sent))
    for mech, cost in costs.items():
        shares[mech] = shares.get(mech, 0) - cost
    return shares


def test_savings_sum_exactly_to_benchmark_minus_charge_on_random_requests():
    rng = random.Random(20261204)
    for _ in range(1500):
        m, miss, fee, costs = case(rng)
        benchmark, charge, saved = attribution.price_miss(m, miss, fee, costs)
        assert sum(saved.values()) == benchmark - charge, (m, miss, saved)
        assert benchmark == pricing.policy_micros(m, pricing.cost_micros(miss.reference, miss.direct)) + fee
        assert charge == pricing.policy_micros(m, pricing.cost_micros(miss.route, miss.sent)) + fee + sum(
            costs.values())
        shares = exact_shares(m, miss, costs)
        for mech, value in saved.items():
            assert mech in MECHANISMS and value != 0
            # never a share out of nothing; each within rounding of its exact value
            assert shares.get(mech, 0) != 0 or set(saved) == {"routing"}
            if m.pricing in ("list", "byok"):
                assert abs(value - shares.get(mech, 0)) < 2, (mech, value, shares)
        if m.pricing == "list":  # one rounding each side: nobody carries more than one micro of it
            for mech, share in shares.items():
                assert abs(saved.get(mech, 0) - share) < 2


def test_same_route_and_the_providers_own_caching_show_no_saving_at_all():
    """Six requests like the ones that showed routing -0.000006: same route, the provider's cache."""
    rng = random.Random(6)
    for _ in range(300):
        ref = route(rng)
        sent = usage(rng, rng.randint(0, 9000), rng.randint(0, 900))
        miss = attribution.Miss(ref, ref, sent, sent, sent, {})
        benchmark, charge, saved = attribution.price_miss(OrgMoney(), miss)
        assert benchmark == charge and saved == {}


def test_rounding_goes_by_largest_remainder_in_a_fixed_order():
    assert attribution.allocate(3, {"compression": Fraction(3, 2), "context_dedupe": Fraction(3, 2)}) == {
        "compression": 2, "context_dedupe": 1}  # a tie: MECHANISMS order
    assert attribution.allocate(1, {"routing": Fraction(1, 3), "prompt_cache": Fraction(2, 3)}) == {"prompt_cache": 1}
    assert attribution.allocate(-2, {"prompt_cache": Fraction(-5, 4), "routing": Fraction(-3, 4)}) == {
        "prompt_cache": -1, "routing": -1}
    assert attribution.allocate(0, {}) == {} and attribution.allocate(5, {}) == {"routing": 5}
    assert attribution.allocate(0, {"compression": Fraction(1, 3), "routing": Fraction(-1, 3)}) == {}


def test_a_cache_write_the_gateway_caused_is_a_cost_of_prompt_cache():
    provider = ProviderInfo(id=1, name="a", kind="anthropic", base_url="http://x", api_key="")
    ref = RouteInfo(id=1, model_slug="m", provider=provider, upstream_model="u", input_micros_per_mtok=3000,
                    output_micros_per_mtok=15000, cached_input_micros_per_mtok=300, context_window=None, position=0)
    sent = Usage(10_000, 100, 0, 8_000)  # written, never read yet: 8,000 x 750 per Mtok more
    benchmark, charge, saved = attribution.price_miss(OrgMoney(), attribution.Miss(
        ref, ref, Usage(10_000, 100), Usage(10_000, 100), sent, {}))
    assert saved == {"prompt_cache": benchmark - charge} and saved["prompt_cache"] == -6


# ---- the prefix log behind the estimates (gateway.stores.prefixes) ---------------------------------

def test_prefix_log_is_per_scope_expires_and_stays_bounded():
    from gateway.stores.prefixes import PrefixLog

    log = PrefixLog(max_entries=3, ttl=10)
    a, b = (1, 1, "m"), (2, 5, "m")
    log.add(a, [b"p1", b"p2"], now=0)
    assert log.longest(a, [b"p1", b"p2", b"p3"], now=5) == 1
    assert log.longest(b, [b"p1", b"p2"], now=5) == -1  # another org's key: never seen
    assert log.longest(a, [b"p1", b"p2"], now=10) == -1  # past the lifetime
    log.add(a, [b"p3", b"p4"], now=20)
    assert log.longest(a, [b"p1"], now=20) == -1  # the oldest went out first (3 entries at most)


def test_prefix_log_reports_a_write_nobody_read_once():
    from gateway.stores.prefixes import PrefixLog

    log = PrefixLog(ttl=10)
    a = (1, 1, "m")
    log.wrote(a, [b"head", b"turns"], tokens=2000, premium_micros=500, now=0)
    log.wrote(a, [b"other"], tokens=100, premium_micros=25, now=1)
    log.read(a, [b"x", b"turns"], now=5)  # the first is read in time
    assert log.unread(1, now=9) == []  # nothing expired yet
    (unread,) = log.unread(1, now=12)
    assert (unread.tokens, unread.premium_micros) == (100, 25)
    assert log.unread(1, now=30) == [] and log.unread(2, now=30) == []
