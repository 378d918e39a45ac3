"""The OpenRouter provider through the gateway with the official openai SDK: OpenAI's wire plus
attribution headers, OpenRouter's stream comments and error shapes, and the generation cost lookup."""

import json

import openai
import pytest

from gateway.memo import MEMO
from gateway.pipeline import meter
from gateway.providers import openrouter
from tests.conftest import OPENROUTER_UPSTREAM_KEY, assemble, configure_routing, wait_for
from tests.fakes import LEAK_MARKER
from tests.openapi import validate

MSG = [{"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}} for n in ("a", "b")]


@pytest.fixture
def gw(fake_openrouter, gateway_factory):
    return gateway_factory()


@pytest.fixture
def translating(gw):
    configure_routing(gw, translate=["fakeopenrouter"])
    return gw


def route(slug: str):
    return MEMO.catalog.models[slug].routes[0]


def assert_attributed(request: dict) -> None:
    h = request["headers"]
    assert h["authorization"] == f"Bearer {OPENROUTER_UPSTREAM_KEY}"
    assert h["http-referer"] == openrouter.DEFAULT_REFERER and h["x-title"] == openrouter.DEFAULT_TITLE


def test_non_stream_passes_through_with_attribution(gw, fake_openrouter):
    raw = gw.sdk().chat.completions.with_raw_response.create(model="openrouter-test/fake-gpt", messages=MSG)
    body = json.loads(raw.content)
    validate(body, "CreateChatCompletionResponse")
    assert body["id"].startswith("gen-") and body["choices"][0]["message"]["content"] == "Hello from fake fake-gpt."
    request = fake_openrouter.requests[-1]
    assert request["path"] == "/v1/chat/completions"  # the fake's inner OpenAI, behind /api/v1
    assert request["body"] == {"model": "fake-gpt", "messages": MSG}
    assert_attributed(request)
    (row,) = gw.rows(request_id=raw.headers["x-request-id"])
    assert (row.provider, row.input_tokens, row.output_tokens, row.charge_micros) == ("fakeopenrouter", 5, 4, 13000)


def test_stream_with_processing_comments_is_relayed_and_metered(gw, fake_openrouter):
    r = gw.post("/v1/chat/completions", {"model": "openrouter-test/fake-gpt", "messages": MSG, "stream": True},
                stream=True)
    body = r.content.decode()
    assert body.startswith(": OPENROUTER PROCESSING\n\n")  # relayed as received: SSE clients ignore it
    chunks = list(gw.sdk().chat.completions.create(model="openrouter-test/fake-gpt", messages=MSG, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from fake fake-gpt."
    assert all(c.usage is None for c in chunks)  # the usage chunk the gateway asked for is hidden
    assert fake_openrouter.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    assert_attributed(fake_openrouter.requests[-1])
    rows = wait_for(lambda: len(gw.rows(stream=True)) == 2 and gw.rows(stream=True))
    assert [(r.input_tokens, r.output_tokens, r.status) for r in rows] == [(5, 4, 200), (5, 4, 200)]


def test_streamed_tool_calls_arrive_intact(gw):
    stream = gw.sdk().chat.completions.create(model="openrouter-test/fake-tool-parallel", messages=MSG,
                                              tools=TOOLS, stream=True)
    got = assemble(stream)
    calls, finish = got.calls, got.finish
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["args"])) for c in calls.values()] == [("a", {"city": "Paris"}),
                                                                          ("b", {"city": "London"})]


def test_translated_path_keeps_attribution_and_tools(translating, fake_openrouter):
    completion = translating.sdk().chat.completions.create(model="openrouter-test/fake-tool", messages=MSG,
                                                           tools=TOOLS)
    validate(completion.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")
    assert completion.model == "openrouter-test/fake-tool"  # re-encoded for the client
    assert completion.choices[0].finish_reason == "tool_calls"
    assert json.loads(completion.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert_attributed(fake_openrouter.requests[-1])
    stream = translating.sdk().chat.completions.create(model="openrouter-test/fake-gpt", messages=MSG, stream=True,
                                                       stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from fake fake-gpt."
    assert chunks[-1].usage.total_tokens == 9
    assert_attributed(fake_openrouter.requests[-1])


def test_truncated_stream_ends_in_an_error_event(gw):
    with pytest.raises(openai.APIError) as e:
        for _ in gw.sdk().chat.completions.create(model="openrouter-test/reset", messages=MSG, stream=True):
            pass
    assert "ended the stream" in e.value.message
    (row,) = wait_for(lambda: gw.rows(stream=True))
    assert row.status == 502


@pytest.mark.parametrize("model, status, error", [
    ("openrouter-test/error-400", 400, openai.BadRequestError),
    ("openrouter-test/error-402", 502, openai.APIStatusError),  # our OpenRouter credits, not the client's
    ("openrouter-test/error-429", 429, openai.RateLimitError),
    ("openrouter-test/error-500", 502, openai.APIStatusError),
])
def test_errors_are_mapped_and_not_leaked(gw, model, status, error):
    with pytest.raises(error) as e:
        gw.sdk().chat.completions.create(model=model, messages=MSG)
    assert e.value.status_code == status
    validate(e.value.response.json(), "ErrorResponse")
    assert LEAK_MARKER not in e.value.response.text and OPENROUTER_UPSTREAM_KEY not in e.value.response.text
    assert "credits" not in e.value.response.text


def test_402_is_retryable_so_the_next_route_serves(gw):
    raw = gw.sdk().chat.completions.with_raw_response.create(model="openrouter-test/out-of-credits", messages=MSG)
    assert raw.parse().choices[0].message.content == "Hello from fake fake-gpt."
    (row,) = gw.rows(request_id=raw.headers["x-request-id"])
    assert (row.provider, row.attempts, row.status) == ("fake", 2, 200)


def test_generation_cost_of_a_served_generation(gw, fake_openrouter):
    completion = gw.sdk().chat.completions.create(model="openrouter-test/fake-gpt", messages=MSG)
    # 5 prompt tokens at $1000/Mtok + 4 completion tokens at $2000/Mtok, as the fake's OpenRouter bills them
    assert openrouter.generation_cost(route("openrouter-test/fake-gpt"), completion.id) == 13000
    lookup = fake_openrouter.requests[-1]
    assert lookup["path"] == "/api/v1/generation" and lookup["query"] == {"id": [completion.id]}
    assert_attributed(lookup)


def test_generation_cost_of_a_streamed_generation(gw):
    chunks = list(gw.sdk().chat.completions.create(model="openrouter-test/fake-gpt", messages=MSG, stream=True))
    assert chunks[0].id.startswith("gen-")
    assert openrouter.generation_cost(route("openrouter-test/fake-gpt"), chunks[0].id) == 13000


@pytest.mark.parametrize("translated", [False, True])
def test_the_generation_id_is_kept_for_reconciliation(gw, monkeypatch, translated):
    """Every call, whole or streamed, passed through or translated, leaves the generation id
    that generation_cost takes on the request's context, where the ledger row is built."""
    if translated:
        configure_routing(gw, translate=["fakeopenrouter"])
    seen = {}
    record = meter.record
    monkeypatch.setattr(meter, "record", lambda ctx: (seen.__setitem__(ctx.request_id, ctx.upstream_id),
                                                      record(ctx))[1])
    raw = gw.sdk().chat.completions.with_raw_response.create(model="openrouter-test/fake-gpt", messages=MSG)
    whole = raw.parse()
    stream = gw.sdk().chat.completions.with_raw_response.create(model="openrouter-test/fake-gpt", messages=MSG,
                                                                stream=True)
    chunks = list(stream.parse())
    wait_for(lambda: len(seen) == 2)
    if not translated:  # translated replies carry the gateway's own ids; the upstream's are kept aside
        assert seen[raw.headers["x-request-id"]] == whole.id and seen[stream.headers["x-request-id"]] == chunks[0].id
    assert all(v.startswith("gen-") for v in seen.values())


def test_generation_cost_unknown_is_none(gw):
    assert openrouter.generation_cost(route("openrouter-test/fake-gpt"), "gen-does-not-exist") is None


def test_generation_cost_unreachable_is_none(gw):
    from dataclasses import replace

    r = route("openrouter-test/fake-gpt")
    gone = replace(r, provider=replace(r.provider, base_url="http://127.0.0.1:9/api/v1"))
    assert openrouter.generation_cost(gone, "gen-x") is None
