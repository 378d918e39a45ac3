"""In-flight dedupe: identical concurrent requests share one upstream call; streams are fanned out
live; a failing leader never strands its followers. Clients are the official SDKs, spawned as
greenlets so that their requests overlap (the fake's `slow-`/`drip-` models keep the leader busy)."""

import anthropic
import gevent
import openai
import pytest
from gevent.event import Event

from gateway.errors import UpstreamError
from gateway.pipeline import dispatch as dispatching
from gateway.pipeline.savings import inflight
from tests.conftest import chat_calls, configure_savings, raw_socket_post, read_events, savings_override, wait_for
from tests.test_exact_cache import MSG

SLOW = "test/slow-1000"  # the fake answers after 1 s
DRIP = "test/drip-30"  # 50 content chunks, 30 ms apart


@pytest.fixture
def gw(gateway):
    """A gateway without the exact cache, so that nothing but dedupe can spare an upstream call."""
    configure_savings(gateway, exact_cache={"enabled": False})
    return gateway


def in_flight() -> inflight.Flight | None:
    flights = list(inflight.FLIGHTS.values())
    return flights[0] if len(flights) == 1 else None


def followers_joined(n: int) -> bool:
    flight = in_flight()
    return flight is not None and flight.followers == n


def ask(gw, key=None, headers=None, **kw):
    params = {"model": SLOW, "messages": MSG, "temperature": 0, **kw}
    raw = gw.sdk(key).chat.completions.with_raw_response.create(extra_headers=headers or {}, **params)
    return raw.parse().choices[0].message.content, raw.headers


def test_concurrent_identical_requests_share_one_upstream_call(gw, fake_openai):
    leader = gevent.spawn(ask, gw)
    wait_for(lambda: chat_calls(fake_openai) == 1)  # the leader is upstream, for a second
    followers = [gevent.spawn(ask, gw) for _ in range(4)]
    wait_for(lambda: followers_joined(4))
    gevent.joinall([leader, *followers], raise_error=True)
    assert chat_calls(fake_openai) == 1
    assert {g.value[0] for g in [leader, *followers]} == {"Hello from fake slow-1000."}
    assert [g.value[1]["x-gateway-cache"] for g in [leader, *followers]] == ["miss"] + ["dedupe"] * 4
    ids = {g.value[1]["x-request-id"] for g in [leader, *followers]}
    assert len(ids) == 5  # every follower is its own request
    rows = {r.request_id: r for r in gw.rows()}
    assert set(rows) == ids
    lead = rows[leader.value[1]["x-request-id"]]
    assert (lead.cache, lead.charge_micros, lead.provider) == ("miss", 13000, "fake")
    for g in followers:
        row = rows[g.value[1]["x-request-id"]]
        assert (row.cache, row.charge_micros, row.status) == ("dedupe", 0, 200)
        assert row.saved_micros == row.benchmark_micros == lead.benchmark_micros > 0
        assert row.saved_by == f"inflight_dedupe={row.benchmark_micros}"
        assert g.value[1]["x-gateway-charge"] == "0.000000"


def test_stream_followers_receive_each_chunk_live(gw, fake_openai):
    def stream_once():
        raw = gw.sdk().chat.completions.with_raw_response.create(model=DRIP, messages=MSG, temperature=0,
                                                                 stream=True)
        seen = []  # the upstream's progress when each chunk reached this client
        text = ""
        for chunk in raw.parse():
            upstream = fake_openai.streams[-1]
            seen.append((upstream["completed"], upstream["chunks_sent"]))
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
        return text, seen, raw.headers

    leader = gevent.spawn(stream_once)
    wait_for(lambda: fake_openai.streams and fake_openai.streams[-1]["chunks_sent"] >= 2)
    followers = [gevent.spawn(stream_once) for _ in range(4)]
    wait_for(lambda: followers_joined(4))
    gevent.joinall([leader, *followers], raise_error=True)
    assert chat_calls(fake_openai) == 1 and fake_openai.streams[-1]["completed"]
    expected = " ".join(f"chunk-{i}" for i in range(50))
    for g in [leader, *followers]:
        assert g.value[0] == expected
    for g in followers:
        text, seen, headers = g.value
        assert headers["x-gateway-cache"] == "dedupe"
        assert seen[0][0] is False  # the first chunk came while the upstream was still sending...
        progress = [sent for completed, sent in seen if not completed]
        assert len(set(progress)) >= 5  # ...and the rest one by one as the upstream sent them
    rows = gw.rows()
    assert sorted(r.cache for r in rows) == ["dedupe"] * 4 + ["miss"]
    assert all(r.charge_micros == 0 and r.saved_micros == r.benchmark_micros > 0 and r.output_tokens == 50
               for r in rows if r.cache == "dedupe")


def test_followers_get_their_own_cost_comment_not_the_leaders(gw, fake_openai):
    body = {"model": DRIP, "messages": MSG, "temperature": 0, "stream": True}
    leader = gevent.spawn(gw.post, "/v1/chat/completions", body, stream=True)
    wait_for(lambda: fake_openai.streams)
    follower = gevent.spawn(gw.post, "/v1/chat/completions", body, stream=True)
    wait_for(lambda: followers_joined(1))
    for g in (leader, follower):
        g.join()
    lead, follow = leader.value, follower.value
    lead_events = [e for e in lead.content.decode().split("\n\n") if e]
    follow_events = [e for e in follow.content.decode().split("\n\n") if e]
    assert follow_events[:-1] == lead_events[:-1]  # the same stream, to the byte
    assert follow_events[-1].startswith(": gateway-cost request_id=" + follow.headers["x-request-id"])
    assert "cache=dedupe" in follow_events[-1] and "charge=0.000000" in follow_events[-1]
    assert lead.headers["x-request-id"] not in follow.content.decode()
    assert chat_calls(fake_openai) == 1


def test_anthropic_stream_followers(gw, fake_openai):
    """An Anthropic client (translated to the OpenAI-kind route): followers get Anthropic events."""
    sdk = anthropic.Anthropic(base_url=gw.url, api_key=gw.api_key, max_retries=0)

    def stream_once():
        with sdk.messages.stream(model=DRIP, max_tokens=100, messages=MSG,
                                 extra_body={"temperature": 0}) as stream:
            return stream.get_final_message()

    leader = gevent.spawn(stream_once)
    wait_for(lambda: fake_openai.streams)
    followers = [gevent.spawn(stream_once) for _ in range(2)]
    wait_for(lambda: followers_joined(2))
    gevent.joinall([leader, *followers], raise_error=True)
    assert chat_calls(fake_openai) == 1
    texts = {g.value.content[0].text for g in [leader, *followers]}
    assert texts == {" ".join(f"chunk-{i}" for i in range(50))}
    assert sorted(r.cache for r in gw.rows()) == ["dedupe", "dedupe", "miss"]


@pytest.mark.parametrize("stream", [False, True])
def test_followers_proceed_on_their_own_when_the_leader_fails(gw, fake_openai, monkeypatch, stream):
    release = Event()
    real = dispatching.dispatch
    calls = []

    def leader_fails(ctx):
        calls.append(ctx.request_id)
        if len(calls) == 1:  # the leader: hold it until the followers wait, then fail it
            release.wait()
            raise UpstreamError("The upstream provider returned an error (HTTP 500).", status=500)
        return real(ctx)

    monkeypatch.setattr(dispatching, "dispatch", leader_fails)

    def call():
        if not stream:
            return ask(gw, model="test/fake-gpt")
        raw = gw.sdk().chat.completions.with_raw_response.create(model="test/fake-gpt", messages=MSG,
                                                                 temperature=0, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices), raw.headers

    leader = gevent.spawn(call)
    wait_for(lambda: calls)
    followers = [gevent.spawn(call) for _ in range(3)]
    wait_for(lambda: followers_joined(3))
    release.set()
    gevent.joinall([leader, *followers])
    assert isinstance(leader.exception, openai.InternalServerError)
    for g in followers:
        text, headers = g.get()
        assert text == "Hello from fake fake-gpt." and headers["x-gateway-cache"] == "miss"
    assert chat_calls(fake_openai) == 3 and not inflight.FLIGHTS
    rows = gw.rows()
    assert sorted((r.status, r.cache) for r in rows) == [(200, "miss")] * 3 + [(500, "miss")]
    assert all(r.charge_micros == 13000 for r in rows if r.status == 200)


def test_streaming_followers_get_an_error_when_the_leaders_client_goes_away(gw, fake_openai):
    sock = raw_socket_post(gw, {"model": "test/drip-100", "stream": True, "messages": MSG, "temperature": 0})
    read_events(sock, 3)
    got: list[list[str]] = [[], []]

    def follow(i):
        stream = gw.sdk().chat.completions.create(model="test/drip-100", messages=MSG, temperature=0,
                                                  stream=True)
        for chunk in stream:
            got[i].append(chunk.choices[0].delta.content or "")

    followers = [gevent.spawn(follow, i) for i in range(2)]
    wait_for(lambda: all(got))  # both are streaming
    sock.close()  # the leader's client goes away mid-stream
    gevent.joinall(followers)
    for g in followers:
        assert isinstance(g.exception, openai.APIError)
        assert "ended the stream before it was complete" in str(g.exception)
    assert got[0] == got[1] and 0 < len(got[0]) < 50
    assert chat_calls(fake_openai) == 1 and wait_for(lambda: fake_openai.streams[-1]["closed_early"])
    rows = wait_for(lambda: len(gw.rows()) == 3 and gw.rows())
    leader_row = [r for r in rows if r.cache == "miss"]
    assert [r.status for r in leader_row] == [499]
    followed = sorted((r.cache, r.status, r.charge_micros) for r in rows if r.cache != "miss")
    assert followed == [("dedupe", 502, 0)] * 2


def test_never_shared_across_orgs_or_when_ineligible_or_disabled(gw, fake_openai):
    gw.new_org("other", usd=100)  # room for two calls holding their worst case at once
    other = gw.new_key("other")
    identical_but = [((other,), {}),  # another org
                     ((), {"temperature": 0.7}),  # sampled: each gets its own answer
                     ((), {"headers": {"x-gateway-inflight-dedupe": "off"}}),
                     ((), {"headers": {"x-gateway-cache": "bypass"}})]
    leader = gevent.spawn(ask, gw)
    wait_for(lambda: chat_calls(fake_openai) == 1)
    others = [gevent.spawn(ask, gw, *args, **kw) for args, kw in identical_but]
    wait_for(lambda: chat_calls(fake_openai) == 5)  # all upstream at once, the leader still running
    assert len(inflight.FLIGHTS) == 2 and all(f.followers == 0 for f in inflight.FLIGHTS.values())
    gevent.joinall([leader, *others], raise_error=True)
    assert chat_calls(fake_openai) == 5
    assert {g.value[1]["x-gateway-cache"] for g in others} == {"miss"}
    # an org that turned dedupe off does not follow either
    savings_override(gw, "other", "inflight_dedupe", enabled=False)
    leader = gevent.spawn(ask, gw, other)
    wait_for(lambda: chat_calls(fake_openai) == 6)
    second = gevent.spawn(ask, gw, other)
    gevent.joinall([leader, second], raise_error=True)
    assert chat_calls(fake_openai) == 7 and second.value[1]["x-gateway-cache"] == "miss"


def test_a_failing_dedupe_layer_does_not_fail_the_request(gw, fake_openai, monkeypatch):
    def broken(ctx):
        raise RuntimeError("dedupe is down")

    monkeypatch.setattr(inflight, "flight_key", broken)
    greenlets = [gevent.spawn(ask, gw, model="test/fake-gpt") for _ in range(3)]
    gevent.joinall(greenlets, raise_error=True)
    assert [g.value[0] for g in greenlets] == ["Hello from fake fake-gpt."] * 3
    assert chat_calls(fake_openai) == 3 and not inflight.FLIGHTS


def test_a_follower_waits_at_most_max_wait_seconds(gw, fake_openai):
    configure_savings(gw, exact_cache={"enabled": False}, inflight_dedupe={"max_wait_seconds": 0.2})
    leader = gevent.spawn(ask, gw)
    wait_for(lambda: chat_calls(fake_openai) == 1)
    follower = gevent.spawn(ask, gw)
    wait_for(lambda: followers_joined(1))
    follower.join()  # gave up waiting for the leader (1 s upstream) and went on its own
    assert follower.value[1]["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 2
    leader.join()
    assert leader.value[1]["x-gateway-cache"] == "miss"
