"""The semantic cache's optional verifier model: off by default; when set, only a borderline refusal
(one plain word swapped, added or removed) is put to it, through the gateway's own pipeline; a
"yes" serves from the cache (`x-gateway-semantic-reason: verified`), anything else (a "no", an
error, a timeout) is a miss with the refusal's reason, never a wrong hit and never a failed request.
The verifier's cost is the cache's: charged on the request it judged, taken from semantic_cache's
saving there, and the per-mechanism parts still sum to benchmark - charge."""

import pytest

from gateway.pipeline.savings import semantic_cache
from gateway.pipeline.savings.semantic_verifier import borderline
from tests.conftest import PRICES, chat_calls, configure_savings
from tests.test_compression import add_catalog
from tests.test_savings_units import assert_sums, saved_by
from tests.test_semantic_cache import QUESTION, ask

SIBLING = "How do I reverse an array in Python?"  # one plain word from QUESTION: borderline


@pytest.fixture
def gw(gateway_factory):
    semantic_cache.settle()
    gw = gateway_factory()
    add_catalog(gw, {"models": [{"slug": f"judge/{name}", "max_output_tokens": 16,
                                 "routes": [{"provider": "fake", "upstream_model": upstream, **PRICES}]}
                                for name, upstream in (("yes", "say-yes"), ("no", "say-no"), ("maybe", "say-maybe"),
                                                       ("hang", "hang"), ("error", "error-500"))]})
    return gw


def verifier(gw, model: str | None, timeout: float = 5.0) -> None:
    configure_savings(gw, semantic_cache={"enabled": True, "verifier_model": model,
                                          "verifier_timeout_seconds": timeout})


def judge_calls(fake) -> list[dict]:
    return [r["body"] for r in fake.requests if r["path"] == "/v1/chat/completions"
            and r["body"]["model"].startswith(("say-", "hang", "error-"))]


def test_off_by_default_a_borderline_candidate_is_a_miss(gw, fake_openai):
    configure_savings(gw, semantic_cache={"enabled": True})
    ask(gw, QUESTION)
    _answer, headers = ask(gw, SIBLING)
    assert headers["x-gateway-cache"] == "miss" and headers["x-gateway-semantic-reason"] == "a word differs"
    assert judge_calls(fake_openai) == []


def test_a_yes_serves_from_the_cache_and_the_verifier_is_the_caches_cost(gw, fake_openai):
    verifier(gw, "judge/yes")
    first, _ = ask(gw, QUESTION)
    answer, headers = ask(gw, SIBLING)
    assert headers["x-gateway-cache"] == "semantic" and headers["x-gateway-semantic-reason"] == "verified"
    assert answer.choices[0].message.content == first.choices[0].message.content
    assert chat_calls(fake_openai) == 2  # the first question and the verifier, no answer upstream
    (call,) = judge_calls(fake_openai)
    prompt = call["messages"][-1]["content"]
    assert QUESTION in prompt and SIBLING in prompt and call["temperature"] == 0
    rows = gw.rows()
    hit = next(r for r in rows if r.cache == "semantic")
    judged = next(r for r in rows if r.endpoint == "semantic_cache.verify")
    assert judged.request_id == hit.request_id + ".verify" and judged.input_tokens > 0
    assert judged.charge_micros == 0  # moved to the request it served
    cost = judged.input_tokens * PRICES["input_per_mtok"] + judged.output_tokens * PRICES["output_per_mtok"]
    assert hit.charge_micros == cost > 0  # USD per Mtok: micro-dollars per token
    assert saved_by(hit) == {"semantic_cache": hit.benchmark_micros - hit.charge_micros}
    assert_sums(rows)


@pytest.mark.parametrize("model", ["judge/no", "judge/maybe", "judge/error"])
def test_anything_but_yes_is_a_miss_with_the_refusals_reason(gw, fake_openai, model):
    verifier(gw, model)
    ask(gw, QUESTION)
    answer, headers = ask(gw, SIBLING)
    assert headers["x-gateway-cache"] == "miss" and headers["x-gateway-semantic-reason"] == "a word differs"
    assert SIBLING in answer.choices[0].message.content  # answered upstream, for this question
    rows = gw.rows()
    miss = rows[-1] if rows[-1].endpoint == "chat.completions" else rows[-2]
    assert miss.cache == "miss" and miss.status == 200
    if model != "judge/error":  # a verdict was paid for: the cache's cost, on this row
        assert saved_by(miss)["semantic_cache"] < 0
    assert_sums(rows)


def test_a_verifier_that_hangs_is_a_miss_at_its_timeout(gw, fake_openai):
    verifier(gw, "judge/hang", timeout=0.5)
    ask(gw, QUESTION)
    answer, headers = ask(gw, SIBLING)
    assert headers["x-gateway-cache"] == "miss" and SIBLING in answer.choices[0].message.content
    judged = next(r for r in gw.rows() if r.endpoint == "semantic_cache.verify")
    assert judged.status == 504


def test_a_near_miss_of_a_guarded_kind_is_never_put_to_the_verifier(gw, fake_openai):
    verifier(gw, "judge/yes")
    ask(gw, "What is 15% of 80?")
    _answer, headers = ask(gw, "What is 25% of 80?")
    assert headers["x-gateway-cache"] == "miss" and judge_calls(fake_openai) == []


@pytest.mark.parametrize("cached, new, reason, expected", [
    (QUESTION, SIBLING, "a word differs", True),
    ("How do I sort a list in Python?", "How do I quickly sort a list in Python?", "a word was added or removed", True),
    ("Should I move the money into savings?", "Should I move the savings into money?", "word order differs", False),
    ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?", "a word was added or removed", False),
    ("How far is 10 km?", "How far is 10 miles?", "a word differs", False),
    ("Round 2.5 up", "Round 2.5 down", "a word differs", False),
    ("What is 15% of 80?", "What is 25% of 80?", "a word differs", False),
    ("How do I sort a list in Python?", "How do I sort an array in Rust?", "a word differs", False),
    (QUESTION, SIBLING, "pasted context differs", False),
])
def test_borderline_is_one_plain_word(cached, new, reason, expected):
    assert borderline(cached, new, reason) is expected
