"""Request limits checked before any upstream call: the context window and `n`.

A prompt plus the requested output that cannot fit a route's `context_window` is a 400
`context_length_exceeded` (OpenAI shape, param `messages`; Anthropic `invalid_request_error` on
/v1/messages), with no upstream call and nothing charged; a route too small is skipped when another
fits. `n` is bounded as OpenAI bounds it (1..128).
"""

import pytest
import requests

from tests.conftest import start_gateway, stop_gateway

PRICES = {"input_per_mtok": 1000, "output_per_mtok": 2000}
WINDOW = 1000


@pytest.fixture(scope="module")
def gw(faulty_upstream, tmp_path_factory):
    url = faulty_upstream.url
    config = {
        "providers": [
            {"name": "fo", "kind": "openai", "base_url": url + "/v1", "api_key": "sk-limits", "responses_api": True},
            {"name": "fa", "kind": "anthropic", "base_url": url, "api_key": "sk-ant-limits"}],
        "models": [
            {"slug": "win/small-openai", "context_window": WINDOW,
             "routes": [{"provider": "fo", "upstream_model": "ok", **PRICES}]},
            {"slug": "win/small-anthropic", "context_window": WINDOW,
             "routes": [{"provider": "fa", "upstream_model": "ok", **PRICES}]},
            {"slug": "win/two", "routes": [  # the first route is too small for a long prompt, the second is not
                {"provider": "fo", "upstream_model": "ok", "context_window": WINDOW, **PRICES},
                {"provider": "fa", "upstream_model": "ok", "context_window": 1_000_000, **PRICES}]},
            {"slug": "win/none", "routes": [{"provider": "fo", "upstream_model": "ok", **PRICES}]},
        ],
        "routing": {"retries": 0},
    }
    gw, server, app = start_gateway(tmp_path_factory.mktemp("limits"), config)
    yield gw
    stop_gateway(server, app)


def post(gw, path: str, body: dict) -> requests.Response:
    return requests.post(gw.url + path, json=body, timeout=30, headers={
        "Authorization": f"Bearer {gw.api_key}", "anthropic-version": "2023-06-01"})


LONG = "word " * 3000  # about 3,000 tokens: more than WINDOW, a few pages of text
CASES = {  # path, body for a prompt, the prompt's param, the output field
    "chat": ("/v1/chat/completions", lambda m, text: {"model": m, "messages": [{"role": "user", "content": text}]},
             "messages", "max_completion_tokens"),
    "messages": ("/v1/messages", lambda m, text: {"model": m, "max_tokens": 10,
                                                  "messages": [{"role": "user", "content": text}]},
                 "messages", "max_tokens"),
    "responses": ("/v1/responses", lambda m, text: {"model": m, "input": text}, "input", "max_output_tokens"),
}


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("endpoint", CASES)
def test_a_prompt_past_the_window_is_refused_before_any_upstream_call(gw, faulty_upstream, endpoint, kind):
    path, body, param, _ = CASES[endpoint]
    before_calls = len(faulty_upstream.requests)
    r = post(gw, path, body(f"win/small-{kind}", LONG))
    assert r.status_code == 400
    if endpoint == "messages":
        assert r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert "context length" in r.json()["error"]["message"]
    else:
        err = r.json()["error"]
        assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", "context_length_exceeded",
                                                            param)
        assert str(WINDOW) in err["message"]
    assert len(faulty_upstream.requests) == before_calls  # no upstream call
    (row,) = gw.rows(request_id=r.headers["x-request-id"])
    assert (row.status, row.charge_micros) == (400, 0)


@pytest.mark.parametrize("endpoint", CASES)
def test_the_requested_output_counts_against_the_window(gw, endpoint):
    path, body, _, output = CASES[endpoint]
    fits = {**body("win/small-openai", "hello"), output: 100}
    assert post(gw, path, fits).status_code == 200
    too_much = {**body("win/small-openai", "hello"), output: WINDOW}
    assert post(gw, path, too_much).status_code == 400


def test_a_route_too_small_is_skipped_when_another_fits(gw):
    short = post(gw, "/v1/chat/completions", CASES["chat"][1]("win/two", "hello"))
    assert short.status_code == 200 and short.headers["x-gateway-route"] == "fo/ok"  # the first route
    long = post(gw, "/v1/chat/completions", CASES["chat"][1]("win/two", LONG))
    assert long.status_code == 200 and long.headers["x-gateway-route"] == "fa/ok"  # the one that fits


def test_a_huge_prompt_is_refused_without_being_charged(gw, faulty_upstream):
    """The failure once seen: 4.1 million tokens sent to an 8,192-token route, and $4,041 charged."""
    gw.flush()
    before = gw.org().credits_micros
    r = post(gw, "/v1/chat/completions", CASES["chat"][1]("win/small-openai", "lorem ipsum " * 600_000))
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    gw.flush()
    assert gw.org().credits_micros == before


def test_no_window_means_no_limit(gw):
    assert post(gw, "/v1/chat/completions", CASES["chat"][1]("win/none", LONG)).status_code == 200


@pytest.mark.parametrize("n,status", [(0, 400), (1, 200), (128, 200), (129, 400), (1_000_000, 400)])
def test_n_is_bounded_as_openai_bounds_it(gw, faulty_upstream, n, status):
    before_calls = len(faulty_upstream.requests)
    r = post(gw, "/v1/chat/completions", {**CASES["chat"][1]("win/none", "hi"), "n": n})
    assert r.status_code == status
    if status == 400:
        assert r.json()["error"]["param"] == "n"
        assert len(faulty_upstream.requests) == before_calls
