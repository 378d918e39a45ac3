"""Savings claimed in the provider's units, through the real gateway: tokens a layer removed
counted as the provider counts them, the provider's own (automatic) prompt caching in the
benchmark, Anthropic breakpoints only on prefixes seen before, writes nobody read reported, and on
every row the parts summing to benchmark - charge. Fakes model the providers' caches
(tests/fakes/prompt_caches.py); their token counts (words) differ from the local tokenizer's, as a
real provider's do."""

import anthropic
import orjson
import pytest

from gateway.stores.prefixes import PREFIXES
from tests.conftest import configure_savings
from tests.fakes.anthropic_upstream import prompt_tokens as anthropic_prompt_tokens
from tests.fakes.openai_upstream import prompt_tokens as openai_prompt_tokens
from tests.test_compression import add_catalog
from tests.test_console import login

# $1 per million prompt tokens (a micro-dollar a token): the rows read as token counts.
GPT = {"provider": "fake", "upstream_model": "fake-prefixcache", "input_per_mtok": 1, "output_per_mtok": 2,
       "cached_input_per_mtok": 0.25}
CLAUDE = {"provider": "fakeanthropic", "upstream_model": "claude-prefixcache", "input_per_mtok": 1,
          "output_per_mtok": 5, "cached_input_per_mtok": 0.1}
# Words the local tokenizer splits into several tokens each, as a provider's may not.
ODD = " ".join(f"zq{i}x-kw{i * 7}p" for i in range(1600))


@pytest.fixture
def units(gateway, fake_anthropic):
    add_catalog(gateway, {"models": [{"slug": "units/gpt", "max_output_tokens": 1024, "routes": [GPT]},
                                     {"slug": "units/claude", "max_output_tokens": 1024, "routes": [CLAUDE]}]})
    return gateway


def local_count(messages) -> int:
    from gateway.pipeline import prompt

    return prompt.count({"messages": messages})


def saved_by(row) -> dict[str, int]:
    return {k: int(v) for k, v in (p.split("=", 1) for p in row.saved_by.split(",") if p)}


def assert_sums(rows) -> None:
    for row in rows:
        assert sum(saved_by(row).values()) == row.benchmark_micros - row.charge_micros == row.saved_micros, row.saved_by


def claude(gw, key=None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key or gw.api_key, max_retries=0)


def words(tag: str, n: int) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


# ---- removed tokens, in the provider's tokens ---------------------------------------------------

def test_compressed_tokens_are_counted_as_the_provider_counts_them(units, fake_openai):
    configure_savings(units, compression={"enabled": True, "budget_tokens": 3000, "keep_last_turns": 2})
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "start"}]
    for i in range(8):
        messages += [{"role": "assistant", "content": f"part {i}: " + ODD[:1500]},
                     {"role": "user", "content": f"go on {i}"}]
    raw = units.sdk().chat.completions.with_raw_response.create(model="units/gpt", messages=messages,
                                                                extra_headers={"x-gateway-cache": "bypass"})
    sent = [r for r in fake_openai.requests if r["path"] == "/v1/chat/completions"][-1]["body"]
    assert len(sent["messages"]) < len(messages)  # compressed
    (row,) = units.rows(request_id=raw.headers["x-request-id"])
    truth = openai_prompt_tokens(messages)  # what the provider would have billed for the original
    asked = row.benchmark_micros - 2 * row.output_tokens  # a micro-dollar per prompt token
    assert row.input_tokens == openai_prompt_tokens(sent["messages"])
    # within a few percent (the request's own ratio, not each message's); local tokens would be
    # several times more
    assert abs(asked - truth) <= truth * 0.1, (asked, truth)
    assert local_count(messages) > 3 * truth
    assert row.benchmark_estimated and set(saved_by(row)) == {"compression"}
    assert raw.headers["x-gateway-benchmark-estimated"] == "true"
    listed = units.sdk().get(f"/requests/{row.request_id}", cast_to=object)
    assert listed["benchmark_estimated"] is True
    assert_sums([row])


# ---- the provider's automatic caching is in the benchmark ----------------------------------------

def test_a_rewritten_request_is_measured_against_a_direct_call_with_its_cached_prefix(units, fake_openai):
    """The provider's report is about the compressed prompt; what a direct call of the original would
    have had cached comes from the prefixes seen: the conversation's previous request."""
    configure_savings(units, compression={"enabled": True, "budget_tokens": 3000, "keep_last_turns": 2})
    messages = [{"role": "system", "content": words("rule", 1500)}, {"role": "user", "content": "start"}]
    for i in range(6):
        messages += [{"role": "assistant", "content": " ".join(f"rule{j}" for j in range(i * 300, i * 300 + 300))},
                     {"role": "user", "content": f"go on {i}"}]
    rows, sent = [], []
    for turn in range(2):
        raw = units.sdk().chat.completions.with_raw_response.create(
            model="units/gpt", messages=messages, extra_headers={"x-gateway-cache": "bypass"})
        rows.append(units.rows(request_id=raw.headers["x-request-id"])[0])
        sent.append(messages)
        messages = [*messages, {"role": "assistant", "content": "ok"}, {"role": "user", "content": f"more {turn}"}]
    first, second = rows
    assert set(saved_by(second)) >= {"compression"} and second.benchmark_estimated
    # at list price, each request as the client sent it (the provider's count)
    at_list = [openai_prompt_tokens(m) + 2 * row.output_tokens for m, row in zip(sent, rows, strict=True)]
    # nothing seen before the first (text that tokenizes alike throughout: the request's own ratio holds)
    assert abs(first.benchmark_micros - at_list[0]) <= at_list[0] * 0.05
    assert second.benchmark_micros <= at_list[1] - 1024 * 3 // 4  # a direct call read 1,024+ tokens cached
    assert_sums(rows)


def test_openai_automatic_caching_is_the_benchmarks_not_the_gateways(units, fake_openai):
    messages = [{"role": "system", "content": words("rule", 1500)}, {"role": "user", "content": "hi"}]
    for _ in range(2):
        raw = units.sdk().chat.completions.with_raw_response.create(
            model="units/gpt", messages=messages, extra_headers={"x-gateway-cache": "bypass"})
    (row,) = units.rows(request_id=raw.headers["x-request-id"])
    assert row.cached_tokens == 1024 + (openai_prompt_tokens(messages) - 1024) // 128 * 128
    assert row.benchmark_micros == row.charge_micros and row.saved_by == "" and not row.benchmark_estimated
    assert "x-gateway-benchmark-estimated" not in raw.headers


def test_an_exact_cache_hit_is_measured_against_a_direct_call_that_the_provider_would_have_cached(units):
    messages = [{"role": "system", "content": words("rule", 1500)}, {"role": "user", "content": "hi"}]
    units.sdk().chat.completions.create(model="units/gpt", messages=messages, temperature=0)
    # no report from this route of its own caching yet: the hit's benchmark assumes none
    raw = units.sdk().chat.completions.with_raw_response.create(model="units/gpt", messages=messages, temperature=0)
    (row,) = units.rows(request_id=raw.headers["x-request-id"])
    assert raw.headers["x-gateway-cache"] == "hit" and not row.benchmark_estimated
    # the route reports cached tokens it served by itself (the same prompt, past the exact cache)...
    units.sdk().chat.completions.create(model="units/gpt", messages=messages, temperature=0,
                                        extra_headers={"x-gateway-cache": "bypass"})
    # ...so the next hit is measured against a direct call the provider would have cached
    raw = units.sdk().chat.completions.with_raw_response.create(model="units/gpt", messages=messages, temperature=0)
    assert raw.headers["x-gateway-cache"] == "hit"
    (row,) = units.rows(request_id=raw.headers["x-request-id"])
    prompt = openai_prompt_tokens(messages)
    cached = 1024 + (prompt - 1024) // 128 * 128  # the whole prompt was sent moments ago
    assert row.benchmark_micros == (prompt - cached) + cached // 4 + 2 * row.output_tokens
    assert row.charge_micros == 0 and saved_by(row) == {"exact_cache": row.benchmark_micros}
    assert row.benchmark_estimated


def test_an_upstream_that_never_caches_gets_no_automatic_caching_in_its_benchmark(units, fake_openai):
    """An OpenAI-compatible server without a prompt cache never reports cached tokens: a rewritten
    request's benchmark then assumes none, whatever prefixes were seen."""
    add_catalog(units, {"models": [{"slug": "units/plain", "max_output_tokens": 1024,
                                    "routes": [{**GPT, "upstream_model": "fake-gpt"}]}]})
    configure_savings(units, compression={"enabled": True, "budget_tokens": 3000, "keep_last_turns": 2})
    messages = [{"role": "system", "content": words("rule", 1500)}, {"role": "user", "content": "start"}]
    for i in range(6):
        messages += [{"role": "assistant", "content": " ".join(f"rule{j}" for j in range(i * 300, i * 300 + 300))},
                     {"role": "user", "content": f"go on {i}"}]
    for turn in range(2):
        raw = units.sdk().chat.completions.with_raw_response.create(
            model="units/plain", messages=messages, extra_headers={"x-gateway-cache": "bypass"})
        (row,) = units.rows(request_id=raw.headers["x-request-id"])
        at_list = openai_prompt_tokens(messages) + 2 * row.output_tokens
        assert abs(row.benchmark_micros - at_list) <= at_list * 0.05 and saved_by(row)["compression"] > 0
        messages = [*messages, {"role": "assistant", "content": "ok"}, {"role": "user", "content": f"more {turn}"}]


# ---- Anthropic breakpoints where they are read, and writes nobody read ----------------------------

def test_a_one_off_prompt_gets_no_breakpoint_and_writes_nothing(units, fake_anthropic):
    for i in range(3):  # RAG: the same short system prompt, a long new message each time
        claude(units).messages.create(model="units/claude", max_tokens=50, system="Answer from the excerpts.",
                                      messages=[{"role": "user", "content": words(f"doc{i}-", 1500)}])
        assert "cache_control" not in orjson.dumps(fake_anthropic.requests[-1]["body"]).decode()
    assert all(r.cache_write_tokens == 0 for r in units.rows())


def test_a_conversation_is_marked_once_it_goes_on_and_pays_for_its_writes(units, fake_anthropic, monkeypatch):
    opening = {"role": "user", "content": words("fact", 1500)}
    history = [opening]
    rows = []
    for turn in range(3):
        raw = claude(units).messages.with_raw_response.create(model="units/claude", max_tokens=50,
                                                              messages=history)
        rows.append(units.rows(request_id=raw.headers["x-request-id"])[0])
        body = fake_anthropic.requests[-1]["body"]
        marked = [i for i, m in enumerate(body["messages"]) if "cache_control" in orjson.dumps(m).decode()]
        assert marked == ([] if turn == 0 else [len(history) - 2])  # the end of the earlier turns, once seen
        history = [*history, {"role": "assistant", "content": f"noted {turn}"},
                   {"role": "user", "content": f"and {turn}?"}]
    first, second, third = rows
    assert first.cache_write_tokens == 0 and first.saved_by == ""
    # the second writes (a premium of a quarter of the input price: 0.25 micro-dollars a token)...
    assert second.cache_write_tokens > 0 and second.cached_tokens == 0
    assert saved_by(second) == {"prompt_cache": -round(second.cache_write_tokens * 0.25)}
    # ...the third reads it (0.9 of the price saved) and writes its own longer prefix
    assert third.cached_tokens == second.cache_write_tokens
    assert saved_by(third)["prompt_cache"] == round(third.cached_tokens * 0.9 - third.cache_write_tokens * 0.25)
    assert_sums(rows)
    assert third.input_tokens == anthropic_prompt_tokens(fake_anthropic.requests[-1]["body"])

    # The third's write is never read: once the cache's lifetime has passed, it is reported.
    later = PREFIXES.clock() + PREFIXES.ttl + 1
    monkeypatch.setattr(PREFIXES, "clock", lambda: later)
    units.sdk().chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": "hi"}])
    units.flush()
    summary = units.sdk().get("/usage/summary", cast_to=object)
    premium = (third.cache_write_tokens + 2) // 4  # a quarter of the input price, rounded half up
    assert summary["prompt_cache_unread_writes"] == {
        "writes": 1, "tokens": third.cache_write_tokens, "cost": f"{premium / 1e6:.6f}"}
    assert summary["totals"]["saved"] == f"{sum(r.saved_micros for r in units.rows()) / 1e6:.6f}"
    session, _ = login(units, units.admin_email, units.admin_password)
    page = session.get(units.url + "/admin/savings").text
    assert 'id="unread-cache-writes"' in page and f"({third.cache_write_tokens} tokens)" in page


def test_a_stable_system_prompt_is_marked_from_its_second_sight(units, fake_anthropic):
    system = words("policy", 1500)
    for i in range(3):
        claude(units).messages.create(model="units/claude", max_tokens=50, system=system,
                                      messages=[{"role": "user", "content": f"question {i}"}])
    sent = [r["body"] for r in fake_anthropic.requests if r["path"] == "/v1/messages"]
    assert [isinstance(b["system"], list) for b in sent] == [False, True, True]
    rows = units.rows()
    assert [r.cache_write_tokens > 0 for r in rows] == [False, True, False]
    assert rows[2].cached_tokens == rows[1].cache_write_tokens and saved_by(rows[2])["prompt_cache"] > 0
    assert_sums(rows)


def test_prefixes_seen_by_one_org_are_not_seen_by_another(units, fake_anthropic):
    system = words("policy", 1500)
    units.new_org("other")
    other = units.new_key("other")
    claude(units).messages.create(model="units/claude", max_tokens=50, system=system,
                                  messages=[{"role": "user", "content": "q"}])
    claude(units, other).messages.create(model="units/claude", max_tokens=50, system=system,
                                         messages=[{"role": "user", "content": "q"}])
    assert isinstance(fake_anthropic.requests[-1]["body"]["system"], str)  # first sight for the other org
    claude(units).messages.create(model="units/claude", max_tokens=50, system=system,
                                  messages=[{"role": "user", "content": "q"}])
    assert isinstance(fake_anthropic.requests[-1]["body"]["system"], list)  # the first org's second sight
