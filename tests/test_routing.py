"""Routing with two fake upstreams: fallback triggers, retries, breakers, strategies, aliases,
agents, pinning, capabilities and tenant rules."""

import random

import gevent
import openai
import pytest
from gevent.server import StreamServer

from gateway import db, seed
from gateway.memo import MEMO, announce
from gateway.models import AccessPolicy, Alias, utcnow
from gateway.pipeline import dispatch
from gateway.routing import strategies
from gateway.routing.health import CLOSED, HALF_OPEN, HEALTH, OPEN
from tests.conftest import UPSTREAM_KEY, free_port, served, wait_for
from tests.fakes import FakeOpenAI

MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def second_upstream():
    with served(FakeOpenAI(api_key=UPSTREAM_KEY)) as fake:
        yield fake


@pytest.fixture(scope="module")
def headers_then_hangup():
    """An upstream that answers 200 with SSE headers and hangs up before the first byte of body."""
    def handle(sock, _addr):
        sock.recv(65536)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.stop()


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def apply(gw, config: dict) -> None:
    for provider in config.get("providers", []):
        provider.setdefault("allow_private", True)  # the fake upstreams listen on 127.0.0.1
    with db.write_lock, db.session_scope() as session:
        seed.apply(session, config, "test-secret")
    gw.flush()


def route_(provider, upstream, inp=1000, out=2000, **kw):
    return {"provider": provider, "upstream_model": upstream, "input_per_mtok": inp, "output_per_mtok": out, **kw}


@pytest.fixture
def gw(gateway, second_upstream, fake_openai):
    """Providers `a` (the conftest fake) and `b` (a second fake), and a model with a route on each."""
    second_upstream.reset()
    apply(gateway, {
        "providers": [{"name": "a", "kind": "openai", "base_url": fake_openai.url, "api_key": UPSTREAM_KEY,
                       "allow_private": True},
                      {"name": "b", "kind": "openai", "base_url": second_upstream.url, "api_key": UPSTREAM_KEY,
                       "allow_private": True}],
        "models": [{"slug": "duo/chat", "routes": [route_("a", "fake-gpt", 3000, 6000), route_("b", "fake-gpt", 500, 900)]}],
    })
    return gateway


def set_routing(gw, **values) -> None:
    with db.write_lock, db.session_scope() as session:
        seed.put_setting(session, "routing", values, actor="test")
        announce(session, "policy")
    gw.flush()


def ask(gw, model="duo/chat", key=None, **kw):
    return gw.sdk(key).chat.completions.with_raw_response.create(model=model, messages=MSG, **kw)


def row_of(gw, raw):
    (row,) = gw.rows(request_id=raw.headers["x-request-id"])
    return row


# ---- fallback triggers ---------------------------------------------------------------------------

@pytest.mark.parametrize("primary", ["error-500", "error-503", "error-429"])
def test_fallback_on_5xx_and_429(gw, second_upstream, primary):
    apply(gw, {"providers": [], "models": [{"slug": "fb/x", "routes": [route_("a", primary)]},
                                            {"slug": "fb/y", "routes": [route_("b", "fake-gpt", 100, 200)]}],
               "fallbacks": {"fb/x": ["fb/y"]}})
    raw = ask(gw, "fb/x")
    assert raw.parse().choices[0].message.content == "Hello from fake fake-gpt."
    row = row_of(gw, raw)
    assert (row.provider, row.model, row.attempts) == ("b", "fb/x", 2)
    # billed at the route used, benchmarked at the requested model's reference route
    assert row.charge_micros == 5 * 100 + 4 * 200
    assert row.benchmark_micros == 5 * 1000 + 4 * 2000


def test_fallback_on_timeout_and_connection_error(gateway_factory, second_upstream, fake_openai):
    gw = gateway_factory(upstream_idle_timeout=0.3)
    apply(gw, {"providers": [{"name": "a", "kind": "openai", "base_url": fake_openai.url, "api_key": UPSTREAM_KEY},
                             {"name": "dead", "kind": "openai", "base_url": closed_port_url(), "api_key": "k"},
                             {"name": "b", "kind": "openai", "base_url": second_upstream.url, "api_key": UPSTREAM_KEY}],
               "models": [{"slug": "fb/slow", "routes": [route_("a", "slow-2000"), route_("b", "fake-gpt")]},
                          {"slug": "fb/dead", "routes": [route_("dead", "fake-gpt"), route_("b", "fake-gpt")]}]})
    for model in ("fb/slow", "fb/dead"):
        raw = ask(gw, model)
        assert row_of(gw, raw).provider == "b"


def test_fallback_when_a_stream_fails_before_its_first_byte(gw, headers_then_hangup, second_upstream):
    apply(gw, {"providers": [{"name": "hangup", "kind": "openai", "base_url": headers_then_hangup, "api_key": "k"}],
               "models": [{"slug": "fb/stream", "routes": [route_("hangup", "fake-gpt"), route_("b", "fake-gpt")]}]})
    chunks = list(gw.sdk().chat.completions.create(model="fb/stream", messages=MSG, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from fake fake-gpt."
    assert second_upstream.requests[-1]["body"]["stream"] is True


def test_client_errors_do_not_fall_back(gw, second_upstream):
    apply(gw, {"providers": [], "models": [{"slug": "fb/bad", "routes": [route_("a", "error-400"),
                                                                          route_("b", "fake-gpt")]}]})
    with pytest.raises(openai.BadRequestError):
        ask(gw, "fb/bad")
    assert second_upstream.requests == []


# ---- retries -------------------------------------------------------------------------------------

@pytest.fixture
def sleeps(monkeypatch):
    slept = []
    monkeypatch.setattr(dispatch, "_sleep", lambda s: slept.append(s))
    return slept


def test_retries_honour_retry_after(gw, fake_openai, sleeps):
    set_routing(gw, retries=2)
    apply(gw, {"providers": [], "models": [{"slug": "r/limited", "routes": [route_("a", "error-429")]}]})
    with pytest.raises(openai.RateLimitError):
        ask(gw, "r/limited")
    assert sleeps == [1.0, 1.0]  # the fake says retry-after: 1
    assert sum(r["body"]["model"] == "error-429" for r in fake_openai.requests) == 3


def test_retries_back_off_with_jitter_within_bounds(gw, sleeps, monkeypatch):
    monkeypatch.setattr(dispatch, "_rng", random.Random(7))
    set_routing(gw, retries=3, backoff_base_ms=100, backoff_max_ms=250)
    apply(gw, {"providers": [], "models": [{"slug": "r/flaky", "routes": [route_("a", "error-503")]}]})
    with pytest.raises(openai.APIStatusError):
        ask(gw, "r/flaky")
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps, start=1):
        assert 0 <= delay <= min(0.25, 0.1 * 2 ** (attempt - 1))


def test_retries_stop_at_the_deadline(gw, sleeps, second_upstream):
    set_routing(gw, retries=5, deadline_seconds=0.5)  # retry-after 1 s would pass the deadline
    apply(gw, {"providers": [], "models": [{"slug": "r/x", "routes": [route_("a", "error-429")]},
                                            {"slug": "r/y", "routes": [route_("b", "fake-gpt")]}],
               "fallbacks": {"r/x": ["r/y"]}})
    assert row_of(gw, ask(gw, "r/x")).provider == "b"
    assert sleeps == []


# ---- circuit breaker -----------------------------------------------------------------------------

def test_breaker_opens_probes_and_closes(gw, fake_openai, second_upstream, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(HEALTH, "clock", lambda: now[0])
    set_routing(gw, breaker_failures=2, breaker_cooldown_seconds=30)
    apply(gw, {"providers": [], "models": [{"slug": "cb/x", "routes": [route_("a", "error-500"),
                                                                        route_("b", "fake-gpt")]}]})
    route_a = MEMO.catalog.models["cb/x"].routes[0]
    for _ in range(2):
        assert row_of(gw, ask(gw, "cb/x")).provider == "b"
    assert HEALTH.state(route_a.id) == OPEN
    calls = sum(r["body"]["model"] == "error-500" for r in fake_openai.requests)
    row = row_of(gw, ask(gw, "cb/x"))  # open: skipped without a call
    assert row.attempts == 1 and sum(r["body"]["model"] == "error-500" for r in fake_openai.requests) == calls
    now[0] += 31
    assert HEALTH.state(route_a.id) == HALF_OPEN
    # the probe: point route a at a healthy upstream model, and the success closes the breaker
    apply(gw, {"providers": [], "models": [{"slug": "cb/x", "routes": [route_("a", "fake-gpt"),
                                                                        route_("b", "fake-gpt")]}]})
    route_a = MEMO.catalog.models["cb/x"].routes[0]
    HEALTH.routes[route_a.id] = HEALTH.get(route_a.id)
    HEALTH.get(route_a.id).state, HEALTH.get(route_a.id).opened_at = OPEN, now[0] - 31
    assert row_of(gw, ask(gw, "cb/x")).provider == "a"
    assert HEALTH.state(route_a.id) == CLOSED


def test_half_open_admits_one_probe_and_a_failed_probe_reopens():
    now = [0.0]
    board = type(HEALTH)(failures=1, cooldown=10, clock=lambda: now[0])
    board.started(1)
    board.failed(1, 5)
    assert not board.allow(1)
    now[0] = 11
    assert board.allow(1) and not board.allow(1)  # one probe at a time
    board.started(1)
    board.failed(1, 5)
    assert board.state(1) == OPEN and not board.allow(1)


# ---- strategies ----------------------------------------------------------------------------------

def test_priority_then_cheapest_switch_at_run_time(gw):
    assert row_of(gw, ask(gw)).provider == "a"
    set_routing(gw, strategy="cheapest")
    assert row_of(gw, ask(gw)).provider == "b"


def test_fastest_and_least_busy(gw):
    a, b = MEMO.catalog.models["duo/chat"].routes
    HEALTH.get(a.id).ewma_latency_ms, HEALTH.get(b.id).ewma_latency_ms = 50.0, 10.0
    set_routing(gw, strategy="fastest")
    assert row_of(gw, ask(gw)).provider == "b"
    HEALTH.get(a.id).in_flight, HEALTH.get(b.id).in_flight = 0, 3
    set_routing(gw, strategy="least_busy")
    assert row_of(gw, ask(gw)).provider == "a"


def test_weighted_split_follows_the_weights():
    routes = [r for r in _fake_routes([(1, 3), (2, 1)])]
    rng = random.Random(1)
    firsts = [strategies.weighted(routes, HEALTH, rng)[0].id for _ in range(4000)]
    share = firsts.count(1) / len(firsts)
    assert 0.7 < share < 0.8  # weights 3:1
    assert strategies.weighted(list(_fake_routes([(1, 0), (2, 5)])), HEALTH, rng)[0].id == 2


def _fake_routes(id_weights):
    from gateway.memo import ProviderInfo, RouteInfo

    for rid, weight in id_weights:
        yield RouteInfo(rid, "m", ProviderInfo(rid, f"p{rid}", "openai", "http://x", None), "u", 1, 1, None, None,
                        rid, weight)


def test_a_strategy_alias_spreads_over_several_models(gw):
    apply(gw, {"providers": [], "models": [{"slug": "s/pricey", "routes": [route_("a", "fake-gpt", 9000, 9000)]},
                                            {"slug": "s/cheap", "routes": [route_("b", "fake-gpt", 10, 10)]}],
               "aliases": {"best-value": {"strategy": "cheapest", "models": ["s/pricey", "s/cheap"]}}})
    row = row_of(gw, ask(gw, "best-value"))
    assert (row.provider, row.model) == ("b", "s/cheap")


# ---- aliases, agents, pinning, capabilities ------------------------------------------------------

def test_org_alias_beats_the_global_one(gw):
    gw.new_org("acme", usd=100)  # room for the call's hold at the test catalog's prices
    acme_key = gw.new_key("acme")
    with db.write_lock, db.session_scope() as s:
        s.add(Alias(name="fast", target="duo/chat", org_id=gw.org("acme").id))
        announce(s, "catalog")
    gw.flush()
    assert row_of(gw, ask(gw, "fast", key=acme_key)).model == "duo/chat"
    assert row_of(gw, ask(gw, "fast")).model == "test/fake-gpt"  # the default org keeps the global alias


def test_agent_configurations_pick_the_tier(gw):
    apply(gw, {"providers": [], "models": [], "agents": [{"name": "coder", "normal": "test/cheap",
                                                          "heavy": "duo/chat"}]})
    assert row_of(gw, ask(gw, "agent:coder")).model == "test/cheap"
    assert row_of(gw, ask(gw, "agent:coder:heavy")).model == "duo/chat"
    with pytest.raises(openai.NotFoundError) as e:
        ask(gw, "agent:coder:max")
    assert "no max model" in e.value.message


def test_pinning_by_header_and_body(gw, fake_openai, second_upstream):
    raw = gw.sdk().chat.completions.with_raw_response.create(
        model="duo/chat", messages=MSG, extra_headers={"x-gateway-provider": "b"})
    assert row_of(gw, raw).provider == "b"
    raw = ask(gw, extra_body={"provider": {"ignore": ["a"]}})
    assert row_of(gw, raw).provider == "b"
    assert "provider" not in second_upstream.requests[-1]["body"]  # a gateway directive, not forwarded
    raw = ask(gw, extra_body={"provider": {"order": ["b", "a"]}})
    assert row_of(gw, raw).provider == "b"
    with pytest.raises(openai.NotFoundError):
        ask(gw, extra_body={"provider": {"only": ["nobody"]}})


def test_routes_without_a_needed_capability_are_skipped(gw):
    apply(gw, {"providers": [], "models": [{"slug": "cap/x", "routes": [
        route_("a", "fake-tool", capabilities=["streaming"]), route_("b", "fake-tool", capabilities=["tools"])]}]})
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert row_of(gw, ask(gw, "cap/x", tools=tools)).provider == "b"
    assert row_of(gw, ask(gw, "cap/x")).provider == "a"


# ---- tenant constraints --------------------------------------------------------------------------

def put_policy(gw, org: str, **rules) -> None:
    with db.write_lock, db.session_scope() as s:
        s.add(AccessPolicy(org_id=gw.org(org).id, updated_at=utcnow(), **rules))
        announce(s, "policy")
    gw.flush()


def test_allowed_models_deny_everything_else(gw):
    put_policy(gw, "default", allowed_models=["duo/chat"])
    assert row_of(gw, ask(gw)).status == 200
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask(gw, "test/fake-gpt")
    assert "not allowed by this org's access policy" in e.value.message


def test_allowed_providers_and_price_caps_filter_routes(gw):
    put_policy(gw, "default", allowed_providers=["a", "b"], max_input_micros_per_mtok=1000 * 1_000_000)  # $1000/Mtok
    assert row_of(gw, ask(gw)).provider == "b"  # route a costs 3000/Mtok in: over the cap
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask(gw, "test/fake-gpt")  # served only by provider `fake`
    assert "provider fake is not in the org's allowed providers" in e.value.message


def test_key_rules_apply_on_top_of_the_org(gw):
    key = gw.new_key()
    with db.write_lock, db.session_scope() as s:
        from gateway.models import ApiKey

        key_id = s.query(ApiKey).order_by(ApiKey.id.desc()).first().id
        s.add(AccessPolicy(org_id=gw.org().id, key_id=key_id, allowed_models=["test/cheap"], updated_at=utcnow()))
        announce(s, "policy")
    gw.flush()
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask(gw, "duo/chat", key=key)
    assert "this key's access policy" in e.value.message
    assert row_of(gw, ask(gw, "duo/chat")).status == 200  # other keys of the org are unaffected


def test_concurrent_requests_count_in_flight(gw, fake_openai):
    apply(gw, {"providers": [], "models": [{"slug": "slow/x", "routes": [route_("a", "slow-1500")]}]})
    route = MEMO.catalog.models["slow/x"].routes[0]
    jobs = [gevent.spawn(ask, gw, "slow/x") for _ in range(3)]
    wait_for(lambda: HEALTH.get(route.id).in_flight == 3, timeout=5)
    gevent.joinall(jobs, raise_error=True)
    assert HEALTH.get(route.id).in_flight == 0
